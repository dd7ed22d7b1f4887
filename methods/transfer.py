"""What Tar's and DDT's recipes share beyond a plain step: learning-rate decay and early stopping on a watched
loss (Plateau, a stateful object: it resumes with the run), and the few-shot transfer stages to target sources
with K labeled images of each class (`fewshot`: the targets are training roles, so the overlap check keeps them
out of every test set)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from engine.update import make_optimizer


class Plateau:
    """Called with a stage's watched values after each validation pass (or each step): steps a
    ReduceLROnPlateau (`factor`, `patience`) on their mean over `window` calls, and returns True once
    `stop_after` windows in a row brought no lower loss (0: never)."""

    def __init__(self, opt: torch.optim.Optimizer | None, factor: float, patience: int, stop_after: int,
                 window: int = 1, key: str = "loss"):
        self.sched = ReduceLROnPlateau(opt, factor=factor, patience=patience) if opt is not None else None
        self.stop_after, self.window, self.key = stop_after, window, key
        self.best, self.bad, self.sum, self.n = math.inf, 0, 0.0, 0

    def __call__(self, metrics: dict[str, float]) -> bool:
        self.sum += metrics.get(f"val_{self.key}", metrics.get(self.key, math.nan))
        self.n += 1
        if self.n < self.window:
            return False
        loss, self.sum, self.n = self.sum / self.n, 0.0, 0
        if self.sched is not None:
            self.sched.step(loss)
        if loss < self.best:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        return self.stop_after > 0 and self.bad >= self.stop_after

    def state_dict(self) -> dict:
        return {"sched": self.sched.state_dict() if self.sched else None, "best": self.best, "bad": self.bad,
                "sum": self.sum, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if self.sched is not None and state["sched"] is not None:
            self.sched.load_state_dict(state["sched"])
        self.best, self.bad, self.sum, self.n = state["best"], state["bad"], state["sum"], state["n"]


def fewshot_stages(cfg: dict) -> list[str]:
    """The transfer stages of a run, one per `fewshot.sources` entry."""
    return [f"fewshot{i}" for i in range(len(cfg["fewshot"]["sources"]))]


def transfer(run, cfg: dict, sets: dict, module: torch.nn.Module, make_step: Callable, device, log: str) -> None:
    """Fine-tune `module` on each few-shot target in turn (sets "fewshot<i>": K real and K fake images), Adam at
    fewshot.lr for fewshot.steps steps, each target's stage ending early when its training loss has not gone
    down for fewshot.patience steps (DDT's rule). make_step(opt) -> the stage's step function of (x, y)."""
    from datasets.loaders import train_batches
    fc = cfg["fewshot"]
    for name in fewshot_stages(cfg):
        samples = sets[name][2]
        opt = make_optimizer(module.parameters(), fc["lr"])
        stage = run.stage(name, fc["steps"])
        run.logger.info(f"{log}: transfer to {cfg['fewshot']['sources'][int(name[7:])]} with {len(samples)} labeled "
                        f"images ({name})")
        batches = train_batches(samples, cfg, len(samples), 1, True, name, stage.start, device)
        stage.run(make_step(opt), batches, stop=Plateau(None, 1.0, 0, fc["patience"]) if fc["patience"] else None)
