"""Starting a training run in its folder: lock the folder, check that the run may start (or resume), and
only then write; then the pieces a training script uses (Run).

Order of start_run: (1) lock <run>/.lock for the process's lifetime (a second run into the folder stops
with one line); (2) checks: a finished or unfinished run is never replaced: without --resume the command
stops with one line saying how to go on (--resume, --run-name, or --overwrite, which moves the old run
aside and deletes nothing); --resume of a finished run trains nothing and says so (RunFinished); --resume
refuses another config or other data; (3) writes: --overwrite moves the old folder to
<method>.old-<time>; a new run writes config.yaml and data.json; a resumed run loads its newest checkpoint.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from engine.config import config_changes
from engine.amp import needs_loss_scaler
from engine.options import RunFinished, RunOptions
from engine.batches import BadImages
from engine.checkpoint import Checkpointer, RNGState
from engine.dist import barrier, is_main_process
from engine.logger import RunLogger
from engine.loop import Loop, Stage
from engine.release import RELEASE, run_folder, save_release, sha256
from engine.update import Updater
from engine.validate import Validator
from utils import UserError, atomic_write_text

# What a run writes into its folder besides checkpoints and release files.
RUN_FILES = ("log.txt", "train_log.jsonl", "bad_images.txt", "splits.csv", "data.json", "results.json",
             "predictions.csv",
             "results_unreadable.txt", "roc.png", "training_curves.png", "embedding.png", "reliability.png",
             "robustness.json", "robustness.md", "robustness.png")


class RunLock:
    """An advisory lock on a folder (<folder>/.lock, fcntl.flock): exclusive while a run trains into it,
    shared while one evaluates it. The kernel drops the lock when its process ends, however it ends, so
    the lock of a dead process never blocks anyone."""

    def __init__(self, folder: Path):
        self.folder, self.file, self.exclusive = folder, None, False

    def acquire(self, exclusive: bool, what: str, hint: str = "wait until it ends, or choose another --run-name",
                kind: str = "run folder") -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / ".lock", "a+")
        try:
            fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "an evaluation"
            f.close()
            raise UserError(f"{kind} {self.folder} is in use ({holder}): {hint}") from None
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


def start_run(cfg: dict, method: str, stages: list[str], sets: dict, device: torch.device,
              opts: RunOptions = RunOptions(), graphs: bool = False, **objects) -> Run:
    """Lock, check, then write (see the module docstring); `objects`: the run's modules and optimizers;
    `graphs`: whether its steps may be replayed as CUDA graphs (engine.setup)."""
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
    try:
        state = _check_folder(run_dir, method, ckpt, opts, cfg, fingerprint)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    barrier()  # every rank has looked before rank 0 changes anything

    # Writes.
    if main and opts.overwrite and _occupied(run_dir, method, ckpt):
        lock = _move_aside(run_dir, lock)
    if main:
        _remove_stale_temporaries(run_dir)
    if state is None:
        run_id = uuid.uuid4().hex[:16]
        if main:
            _remove_leftovers(run_dir, logger)
            if opts.resume:
                logger.info(f"--resume: no checkpoint in {ckpt.folder}; starting from the beginning")
        resumed = None
    else:
        run_id = state.get("run_id") or uuid.uuid4().hex[:16]
        resumed = ckpt.restore(state)
        logger.info(f"resuming from {ckpt.latest()} (stage {resumed[0]}, step {resumed[1]})")
    if main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        atomic_write_text(run_dir / "data.json", json.dumps({"run_id": run_id, "data": fingerprint}, indent=1) + "\n")
    meta = {"run_id": run_id, "config": cfg, "data": fingerprint}
    loop = Loop(cfg, logger, ckpt, updater, lambda: meta, resumed, bad, device, graphs)
    return Run(run_dir, cfg, logger, loop, updater, bad, ckpt, run_id, lock, val)


def _occupied(run_dir: Path, method: str, ckpt: Checkpointer) -> bool:
    """Whether the folder holds a run (finished, unfinished, or release files of one)."""
    return ckpt.finished or ckpt.latest() is not None or any((run_dir / f).exists() for f in RELEASE[method].values())


def _check_folder(run_dir: Path, method: str, ckpt: Checkpointer, opts: RunOptions, cfg: dict,
                  fingerprint: dict) -> dict | None:
    """The checks before a run writes anything: the checkpoint a resumed run continues from (None: a new run),
    or a one-line UserError (RunFinished for --resume of a finished run)."""
    latest = ckpt.latest()
    how = (f"start another with --run-name NAME, or pass --overwrite to move it aside to {run_dir.name}.old-<time> "
           "(nothing is deleted)")
    if opts.overwrite:
        return None
    finished = ckpt.finished or (latest is None and any((run_dir / f).exists() for f in RELEASE[method].values()))
    if finished and opts.resume:
        if latest is not None:
            _check_resume(ckpt.read(latest), latest, cfg, fingerprint, opts)  # the run these settings would resume
        raise RunFinished(f"{run_dir} holds a finished run: --resume has nothing to train")
    if finished:
        raise UserError(f"{run_dir} holds a finished run: evaluate it (python evaluate.py --method {method} with "
                        f"the same arguments), {how}")
    if latest is None:
        return None
    if not opts.resume:
        raise UserError(f"{run_dir} holds an unfinished run (latest checkpoint {latest.name}): pass --resume to "
                        f"continue it, or {how}")
    state = ckpt.read(latest)
    _check_resume(state, latest, cfg, fingerprint, opts)
    return state


def _check_resume(state: dict, latest: Path, cfg: dict, fingerprint: dict, opts: RunOptions) -> None:
    """--resume continues a run only with the config and data it began with."""
    changed = config_changes(state.get("config", {}), cfg)
    if changed:
        raise UserError(f"--resume: the config differs from the one checkpoint {latest} was written with "
                        f"({', '.join(changed[:5])}); resume with the same settings or start a new run "
                        "with --run-name")
    data = _data_changes(state.get("data", fingerprint), fingerprint)
    if data and not opts.allow_data_change:
        raise UserError(f"--resume: the data differ from the checkpoint's ({'; '.join(data[:3])}), so the "
                        "run would not continue as it began; restore the data, or pass --allow-data-change")


def aside_path(run_dir: Path) -> Path:
    """Where a run folder that is replaced goes: <method>.old-<time> beside it (never an existing name)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = run_dir.with_name(f"{run_dir.name}.old-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
    return aside


def move_aside(run_dir: Path, why: str) -> Path:
    """Rename a run folder nobody is using to aside_path (UserError if a process holds its lock)."""
    lock = RunLock(run_dir).acquire(True, why)
    aside = aside_path(run_dir)
    try:
        os.rename(run_dir, aside)
    finally:
        lock.release()
    return aside


def _move_aside(run_dir: Path, lock: RunLock | None) -> RunLock:
    """--overwrite: rename the folder to <method>.old-<time> (its lock goes with it), lock a new, empty one."""
    aside = aside_path(run_dir)
    os.rename(run_dir, aside)
    new = RunLock(run_dir).acquire(True, f"training: {Path(sys.argv[0]).name or run_dir.name}")
    if lock is not None:
        lock.release()
    print(f"--overwrite: the run that was in {run_dir} is now in {aside}", file=sys.stderr, flush=True)
    return new


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of saves that were killed (kill -9, a full disk): with the folder locked, nobody else
    writes there."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob("*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)


def _remove_leftovers(run_dir: Path, logger: RunLogger) -> None:
    """Logs of an earlier start in this folder that ended before its first checkpoint (a data error, a crash):
    no run, but its log rows would mix with the new run's."""
    import shutil
    stale = [name for name in RUN_FILES if (run_dir / name).exists()] + [d for d in ("tb",) if (run_dir / d).is_dir()]
    for name in stale:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if stale:
        logger.info(f"removed what an earlier start that stopped before its first checkpoint left in {run_dir} "
                    f"({', '.join(stale)})")
