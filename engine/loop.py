"""The stage loop: each stage of a run is a number of steps of a method's step function, run with a progress
bar, logging, periodic checkpoints, signal handling, and the machinery a step should not see: fetching its
batches (onto the device, unreadable images counted) and, where possible, replaying it as a CUDA graph.
Stages are named; a resumed run skips what it finished.

    stage = loop.stage("supcon", steps)                      # where it starts: 0, a checkpoint's step, or done
    batches = train_batches(..., start_step=stage.start)    # the data position is the step
    stage.run(lambda v1, v2, y: supcon_step(net, opt, criterion, v1, v2, y, run.update, amp),
              batches, optimizers=[opt], val=run.val.supcon(net, criterion, keep=net))
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

import torch

from engine.batches import BadImages, feed
from engine.checkpoint import Checkpointer
from engine.dist import world_size
from engine.graphs import stepper
from engine.logger import RunLogger, host_memory_mb
from engine.update import Updater

DONE = 1 << 40  # the start step of a finished stage


class Loop:
    """Runs the stages of a run in order (see the module docstring). `resumed`: (stage, step) of the
    checkpoint a resumed run continues from, else None. `meta()` gives what checkpoints store beside
    the states (run id, config, data fingerprint); `bad` counts unreadable images; `graphs`: whether steps
    that allow it are replayed as CUDA graphs (engine.graphs.use_cuda_graphs)."""

    def __init__(self, cfg: dict, logger: RunLogger, checkpointer: Checkpointer, updater: Updater,
                 meta: Callable[[], dict], resumed: tuple[str, int] | None, bad: BadImages,
                 device: torch.device, graphs: bool):
        self.cfg, self.logger, self.checkpointer, self.updater, self.meta = cfg, logger, checkpointer, updater, meta
        self.resumed, self.bad, self.device, self.graphs = resumed, bad, device, graphs
        self.signal: int | None = None
        self.clock: dict[str, tuple[float, int]] = {}  # stage -> (time, step) where this process began it

    def stage(self, name: str, steps: int) -> "Stage":
        return Stage(self, name, steps, min(self._start_of(name), steps))

    def _start_of(self, name: str) -> int:
        """The step stage `name` starts at: 0, its checkpointed step, or DONE if it is finished."""
        if self.resumed is None:
            return 0
        order = self.checkpointer.stages
        here, there = order.index(name), order.index(self.resumed[0])
        return DONE if here < there else (self.resumed[1] if here == there else 0)

    def save(self, stage: str, step: int) -> None:
        self.updater.check(step)
        self.checkpointer.save(stage, step, self.meta())

    def log(self, stage: str, step: int, steps: int, out: dict,
            since: tuple[float, int, int]) -> tuple[float, int, int]:
        """One log line, JSON row and TensorBoard scalars; returns the new (clock, step, images) origin."""
        clock, first, images = since
        self.updater.check(step)
        values = {k: float(v) for k, v in out.items()}  # host sync only when logging
        elapsed = max(time.time() - clock, 1e-9)
        rates = {"steps_per_s": (step - first) / elapsed, "images_per_s": images / elapsed}
        lrs = {f"lr_{k}": o.param_groups[0]["lr"] for k, o in self.updater.optimizers.items()}
        self.logger.scalars(stage, step, {**values, **rates, **lrs, **host_memory_mb()})
        self.logger.info(f"{stage} step {step}/{steps} " + " ".join(f"{k}={v:.4f}" for k, v in values.items()) +
                         f" ({rates['images_per_s']:.0f} img/s; {self.progress(stage, step, steps)})")
        return time.time(), step, 0

    def progress(self, stage: str, step: int, steps: int) -> str:
        """Where the run is, for a reader of its log off a terminal: the stage's place among the run's stages,
        the time this process has spent on it and the time its remaining steps should take at that pace."""
        order = self.checkpointer.stages
        place = f"stage {order.index(stage) + 1}/{len(order)}" if stage in order else f"stage {stage}"
        began, first = self.clock.get(stage, (time.time(), step))
        elapsed = time.time() - began
        eta = elapsed / (step - first) * (steps - step) if step > first else None
        return f"{place}, {_clock(elapsed)} elapsed" + (f", ETA {_clock(eta)}" if eta is not None else "")

    def validate(self, stage: str, step: int, steps: int, val) -> dict[str, float]:
        """A validation pass (logged as val_* scalars); at the stage's end, best_val's choice of weights.
        Returns the metrics."""
        metrics = val(stage, step)
        self.logger.scalars(stage, step, metrics)
        self.logger.info(f"{stage} step {step}/{steps} validation " +
                         " ".join(f"{k.removeprefix('val_')}={v:.4f}" for k, v in metrics.items()))
        if step == steps:
            note = val.end(stage)
            if note:
                self.logger.info(note)
        return metrics


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Stage:
    """One stage of a Loop: `start` is the first step to run; `run(step_fn)` runs steps [start, steps)."""

    def __init__(self, loop: Loop, name: str, steps: int, start: int):
        self.loop, self.name, self.steps, self.start = loop, name, steps, start

    def run(self, step: Callable[..., dict[str, torch.Tensor]], batches: Iterator | list[Iterator],
            optimizers: list[torch.optim.Optimizer] | None = None, val=None,
            stop: Callable[[dict[str, float]], bool] | None = None) -> None:
        """Steps [start, steps) of step(*batch) -> {name: logged tensor}, each on the next batch of `batches`
        (the tensors of several streams concatenated, in order). `optimizers`: the ones the step updates, which
        makes it replayable as a CUDA graph (None: a step that must run eagerly). `val`: a validation check
        (engine.validate.Check) run every val.every steps and at the end. `stop(metrics)`: after each
        validation pass (or, without `val`, after each step, with its logged values), True ends the stage
        there (early stopping): it is saved as finished, so a resumed run goes on with the next stage."""
        from tqdm import tqdm
        loop, name, steps = self.loop, self.name, self.steps
        if self.start >= steps and steps > 0:
            return
        loop.clock[name] = (time.time(), self.start)
        streams = [feed(b, loop.bad, loop.device) for b in (batches if isinstance(batches, list) else [batches])]
        step_fn = stepper(step, lambda: tuple(t for s in streams for t in s()), optimizers, loop.graphs)
        every, log_every = loop.cfg["checkpoint_every"], loop.cfg["log_every"]
        # Not a terminal (CI, nohup, a log file): no bar, only the periodic log lines.
        bar = tqdm(range(self.start, steps), desc=name, initial=self.start, total=steps, dynamic_ncols=True,
                   disable=not loop.logger.main or steps == 0 or not sys.stderr.isatty(), mininterval=1.0,
                   file=sys.stderr)
        with _signals_to(loop):
            since = (time.time(), self.start, 0)
            for step in bar:
                loop.updater.step = step
                out = step_fn(step)
                since = (since[0], since[1], since[2] + int(out.pop("images", 0)) * world_size())
                done = step + 1
                # what `stop` watches: the validation metrics, or without validation every step's values (a host
                # sync per step, only then)
                watched = {k: float(v) for k, v in out.items()} if stop is not None and val is None else None
                if done % log_every == 0 or done == steps:
                    since = loop.log(name, done, steps, out, since)
                    bar.set_postfix({k: f"{float(v):.3f}" for k, v in out.items()}, refresh=False)
                if val is not None and (done % val.every == 0 or done == steps):
                    watched = loop.validate(name, done, steps, val)
                if stop is not None and watched is not None and done < steps and stop(watched):
                    loop.logger.info(f"{name}: stopped early at step {done} of {steps} (no improvement)")
                    note = val.end(name) if val is not None else None
                    if note:
                        loop.logger.info(note)
                    loop.save(name, steps)  # a finished stage: --resume goes on with the next one
                    return
                if done % every == 0 or done == steps or loop.signal is not None:
                    loop.save(name, done)
                if loop.signal is not None:
                    loop.logger.info(f"received signal {loop.signal}: checkpoint saved at {name} step {done}; "
                                     "continue with --resume")
                    raise SystemExit(128 + int(loop.signal))
        if steps == 0:
            loop.save(name, 0)


@contextlib.contextmanager
def _signals_to(loop: Loop):
    """SIGINT/SIGTERM set loop.signal (the stage saves and exits after the current step)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from there
        yield
        return

    def handler(signum, _frame):
        loop.signal = signum

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
