"""Starting a training run in its folder: lock the folder, check that the run may start (or resume), and
only then write; then the pieces a training script uses (Run).

Order of start_run: (1) lock <run>/.lock for the process's lifetime (a second run into the folder stops
with one line); (2) checks: an unfinished run is never replaced without --resume; --resume refuses another
config or other data; (3) writes: a new run clears the finished run it replaces (checkpoints, logs,
release files, results), then config.yaml; a resumed run loads its newest checkpoint.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from config import config_changes
from engine.amp import needs_loss_scaler
from engine.batches import BadImages, feed
from engine.checkpoint import Checkpointer, RNGState
from engine.dist import barrier, is_main_process
from engine.logger import RunLogger
from engine.loop import Loop, Stage
from engine.release import RELEASE, run_folder, save_release, sha256
from engine.update import Updater
from engine.validate import Validator
from utils import UserError, atomic_write_text

# What a run writes into its folder besides checkpoints and release files (a replaced run's are removed).
RUN_FILES = ("log.txt", "train_log.jsonl", "bad_images.txt", "splits.csv", "results.json", "predictions.csv",
             "results_unreadable.txt", "roc.png", "training_curves.png", "embedding.png", "reliability.png",
             "robustness.json", "robustness.md", "robustness.png")


class RunLock:
    """An advisory lock on a folder (<folder>/.lock, fcntl.flock): exclusive while a run trains into it,
    shared while one evaluates it. The kernel drops the lock when its process ends, however it ends, so
    the lock of a dead process never blocks anyone."""

    def __init__(self, folder: Path):
        self.folder, self.file, self.exclusive = folder, None, False

    def acquire(self, exclusive: bool, what: str) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / ".lock", "a+")
        try:
            fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "an evaluation"
            f.close()
            raise UserError(f"run folder {self.folder} is in use ({holder}): wait until it ends, or choose "
                            "another --run-name") from None
        if exclusive:
            f.seek(0)
            f.truncate()
            f.write(f"{what}, process {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
        self.file, self.exclusive = f, exclusive
        return self

    def release(self) -> None:
        if self.file is not None:
            if self.exclusive:
                self.file.truncate(0)  # nobody holds it now
            self.file.close()
            self.file = None


def data_fingerprint(sets: dict) -> dict[str, dict]:
    """Per training set (labeled, unlabeled): its image count and a hash of its (path, label) list."""
    out = {}
    for name, (role, _, samples) in sets.items():
        if role != "test":
            h = hashlib.sha1("\n".join(f"{s.path}\t{s.label}" for s in samples).encode(errors="surrogateescape"))
            out[name] = {"images": len(samples), "sha1": h.hexdigest()}
    return out


def _data_changes(old: dict, new: dict) -> list[str]:
    changes = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a != b:
            changes.append(f"{name}: {a['images'] if a else 0} -> {b['images'] if b else 0} images"
                           + (" (same count, other images)" if a and b and a["images"] == b["images"] else ""))
    return changes


@dataclass
class Run:
    """What a training script uses: stages, updates, batches, release files; finish() when done."""
    dir: Path
    cfg: dict
    logger: RunLogger
    loop: Loop
    update: Updater
    bad: BadImages
    checkpointer: Checkpointer
    run_id: str
    lock: RunLock | None
    val: Validator

    def stage(self, name: str, steps: int) -> Stage:
        return self.loop.stage(name, steps)

    def feed(self, batches, device: torch.device):
        """next_batch() over `batches` (see engine.batches.feed)."""
        return feed(batches, self.bad, device)

    def save_release(self, role: str, module: torch.nn.Module, kind: str, step: int,
                     optimizer: torch.optim.Optimizer | None = None, belongs_to: Path | None = None,
                     detector: torch.nn.Module | None = None) -> Path:
        """Write the release file of `role` (RELEASE); `belongs_to`: the file it must be used with (its hash
        is recorded, so that evaluation can refuse a mixture of two runs); `detector`: the finished model
        (images -> logits), whose decision threshold (and temperature) the validation set chooses
        (engine/validate.py; recorded as `calibration` when validation is on)."""
        path = self.dir / RELEASE[self.dir.name][role]
        extra = {"run_id": self.run_id}
        if belongs_to is not None and is_main_process():
            extra["belongs_to"] = {"file": belongs_to.name, "sha256": sha256(belongs_to)}
        if detector is not None and self.val.enabled and is_main_process():
            extra["calibration"] = cal = self.val.calibrate(detector)
            self.logger.info(f"validation threshold ({cal['rule']}): P(fake) >= {cal['threshold']:.4f} is fake"
                             + (f"; temperature {cal['temperature']:.3f}, ECE {cal['ece']:.4f} -> "
                                f"{cal['ece_scaled']:.4f}" if cal["temperature"] else ""))
        save_release(path, module, self.cfg, kind, step, optimizer, **extra)
        return path

    def finish(self) -> None:
        """Mark the run complete, close the logs and unlock the folder."""
        self.checkpointer.finish()
        self.logger.close()
        if self.lock is not None:
            self.lock.release()


def start_run(cfg: dict, method: str, stages: list[str], sets: dict, device: torch.device, resume: bool = False,
              allow_data_change: bool = False, **objects) -> Run:
    """Lock, check, then write (see the module docstring); `objects`: the run's modules and optimizers."""
    run_dir = run_folder(cfg, method)
    main = is_main_process()
    lock = RunLock(run_dir).acquire(True, f"training: {Path(sys.argv[0]).name or method}") if main else None
    logger = RunLogger(run_dir)
    optimizers = {k: o for k, o in objects.items() if isinstance(o, torch.optim.Optimizer)}
    updater = Updater(optimizers, needs_loss_scaler(device, cfg["amp"], cfg["amp_dtype"]),
                      cfg["max_nonfinite_steps"], logger.info)
    bad = BadImages(run_dir, cfg["data"]["max_bad_images"], logger)
    val = Validator(sets.get("val", (None, None, None))[2], cfg, device)
    if val.enabled:  # its best weights so far resume with the run
        objects["val"] = val
    ckpt = Checkpointer(run_dir / "checkpoints", cfg["keep_checkpoints"], stages, **objects, updater=updater,
                        bad_images=bad, rng=RNGState())
    updater.last_checkpoint = ckpt.latest
    fingerprint = data_fingerprint(sets)

    # Checks: nothing is written before they pass.
    latest = ckpt.latest()
    state = None
    if not resume and latest is not None and not ckpt.finished:
        raise UserError(f"{run_dir} holds an unfinished run (latest checkpoint {latest.name}): pass --resume to "
                        f"continue it, --run-name NAME to start another, or delete {ckpt.folder} to start over")
    if resume and latest is not None:
        state = ckpt.read(latest)
        changed = config_changes(state.get("config", {}), cfg)
        if changed:
            raise UserError(f"--resume: the config differs from the one checkpoint {latest} was written with "
                            f"({', '.join(changed[:5])}); resume with the same settings or start a new run "
                            "with --run-name")
        data = _data_changes(state.get("data", fingerprint), fingerprint)
        if data and not allow_data_change:
            raise UserError(f"--resume: the data differ from the checkpoint's ({'; '.join(data[:3])}), so the "
                            "run would not continue as it began; restore the data, or pass --allow-data-change")
    barrier()  # every rank has looked before rank 0 changes anything

    # Writes.
    if main:
        _remove_stale_temporaries(run_dir)
    if state is None:
        run_id = uuid.uuid4().hex[:16]
        if main:
            if latest is not None or any((run_dir / f).exists() for f in (*RELEASE[method].values(), *RUN_FILES)):
                _clear(run_dir, ckpt, method)
                logger.info(f"starting a new run in {run_dir}: the finished run there is replaced")
            elif resume:
                logger.info(f"--resume: no checkpoint in {ckpt.folder}; starting from the beginning")
        resumed = None
    else:
        run_id = state.get("run_id") or uuid.uuid4().hex[:16]
        resumed = ckpt.restore(state)
        logger.info(f"resuming from {latest} (stage {resumed[0]}, step {resumed[1]})")
    if main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    meta = {"run_id": run_id, "config": cfg, "data": fingerprint}
    loop = Loop(cfg, logger, ckpt, updater, lambda: meta, resumed)
    return Run(run_dir, cfg, logger, loop, updater, bad, ckpt, run_id, lock, val)


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of saves that were killed (kill -9, a full disk): with the folder locked, nobody else
    writes there."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob("*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)


def _clear(run_dir: Path, ckpt: Checkpointer, method: str) -> None:
    """Remove what the finished run in `run_dir` wrote (only files this project writes there)."""
    import shutil
    ckpt.clear()
    for name in (*RELEASE[method].values(), *RUN_FILES):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tb", ignore_errors=True)
    shutil.rmtree(run_dir / "cam", ignore_errors=True)  # evaluate.py --cam
