"""Checkpoints: atomic writes, safe loads, and the resumable checkpoint of a run (Checkpointer).

Anything with a state_dict (modules, optimizers, the Updater, the RNG states, the bad-image list) is
registered by name once; `save(stage, step)` writes all of it atomically, keeping the last `keep` files,
and `restore()` loads the newest back (DINO's restart_from_checkpoint). Loads use weights_only=True, so a
checkpoint file cannot run code.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.dist import is_main_process, unwrap
from utils import UserError


LOW_SPACE = 64 << 20  # bytes free below which a failed write is taken for a full disk


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename over `path`: a crash mid-write leaves the previous
    file intact and no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: ranks may write at once
    try:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as err:  # torch's writer reports a failed write (a full disk, a quota) this way
                if "writ" not in str(err).lower():
                    raise
                free = shutil.disk_usage(path.parent).free
                if free < LOW_SPACE:
                    raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
                raise UserError(f"cannot write {path}: {str(err).splitlines()[0][:200]} ({free >> 20} MB free "
                                "on its disk)") from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno == errno.ENOSPC and not err.filename:
            err.filename = str(path)  # a full disk names the file it could not write
        raise
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, key: str = "model_state_dict") -> dict:
    """Load a checkpoint (ours or the authors' .tar) safely; returns the whole dict with `key`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    if p.stat().st_size == 0:
        raise UserError(f"cannot read checkpoint {p}: the file is empty (0 bytes; an interrupted copy?)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or holds objects other than tensors
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise UserError(f"cannot read checkpoint {p}: {first[:200]}") from None
    if isinstance(state, dict) and key == "model_state_dict" and key not in state and state and all(
            isinstance(v, torch.Tensor) for v in state.values()):
        state = {key: state}  # a bare state dict
    if not isinstance(state, dict) or key not in state:
        raise UserError(f"checkpoint {p} has no '{key}'")
    if key == "model_state_dict" and not (isinstance(state[key], dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state[key].items())):
        raise UserError(f"checkpoint {p}: its model_state_dict is not a mapping of names to tensors (a file of "
                        "another project?)")
    if key == "model_state_dict":
        # Checkpoints saved from nn.DataParallel/DDP prefix every key with 'module.'.
        state[key] = {k.removeprefix("module."): v for k, v in state[key].items()}
    return state


def load_weights(module: torch.nn.Module, path: str | os.PathLike, state: dict | None = None) -> dict:
    """Load a checkpoint's weights into module (strict); a mismatch is one UserError line naming the file.
    `state`: the file's contents if the caller has already loaded them (load_checkpoint)."""
    state = state if state is not None else load_checkpoint(path)
    incoming, own = state["model_state_dict"], unwrap(module).state_dict()
    missing = [k for k in own if k not in incoming]
    unexpected = [k for k in incoming if k not in own]
    wrong = [k for k in own if k in incoming and tuple(incoming[k].shape) != tuple(own[k].shape)]
    problems = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("keys of another shape", wrong)) if keys]
    if problems:
        raise UserError(f"checkpoint {path} does not fit {type(unwrap(module)).__name__} (another architecture "
                        f"or head size?): " + "; ".join(problems))
    broken = [k for k, v in incoming.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise UserError(f"checkpoint {path}: {len(broken)} of its {len(incoming)} tensors hold NaN or inf values "
                        f"(e.g. {broken[0]}): the training diverged or the file is damaged")
    unwrap(module).load_state_dict(incoming)
    return state


class RNGState:
    """The Python, NumPy and torch (CPU and CUDA) random states, as a stateful object."""

    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        return {"python": random.getstate(), "torch": torch.get_rng_state(),
                "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        torch.set_rng_state(state["torch"])
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Full checkpoints of a run in `folder`: ckpt-<stage index>-<step>.tar, the last `keep` kept.

    `stages` are the run's stage names in order; `objects` everything with a state_dict (DDP-wrapped modules
    are unwrapped). `meta` (run id, config, data fingerprint) is stored beside the states.
    """

    def __init__(self, folder: Path, keep: int, stages: list[str], **objects: Any):
        self.folder, self.keep, self.stages, self.objects = folder, keep, stages, objects

    def checkpoints(self) -> list[Path]:
        return sorted(self.folder.glob("ckpt-*.tar")) if self.folder.is_dir() else []

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    @property
    def finished(self) -> bool:
        return (self.folder / "FINISHED").exists()

    def save(self, stage: str, step: int, meta: dict) -> Path | None:
        if not is_main_process():
            return None
        state = {"stage": stage, "step": step, **meta,
                 "state": {name: _target(obj).state_dict() for name, obj in self.objects.items()}}
        path = self.folder / f"ckpt-{self.stages.index(stage):02d}-{step:08d}.tar"
        atomic_torch_save(state, path)
        for old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def read(self, path: Path) -> dict:
        state = load_checkpoint(path, key="state")
        missing = [name for name in self.objects if name not in state["state"]]
        if missing or state.get("stage") not in self.stages:
            raise UserError(f"checkpoint {path} has no state for '{(missing or [state.get('stage')])[0]}' "
                            "(written by another script or an older version?)")
        return state

    def restore(self, state: dict) -> tuple[str, int]:
        """Load every registered object from a checkpoint read by `read`; returns (stage, step)."""
        for name, obj in self.objects.items():
            _target(obj).load_state_dict(state["state"][name])
        return state["stage"], state["step"]

    def clear(self) -> None:
        """Remove the checkpoints and the FINISHED mark (a new run replaces a finished one)."""
        for path in self.checkpoints():
            path.unlink(missing_ok=True)
        (self.folder / "FINISHED").unlink(missing_ok=True)

    def finish(self) -> None:
        """Mark the run complete: a later run without --resume may then start over in this folder."""
        if is_main_process():
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "FINISHED").touch()


def _target(obj: Any) -> Any:
    return unwrap(obj) if isinstance(obj, torch.nn.Module) else obj
