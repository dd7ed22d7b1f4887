"""Optimizer updates: Adam as in the paper (fused), backward + step with non-finite losses skipped, and the
fp16 loss scalers. The Updater's state (skips so far, loss scales) resumes through its state_dict."""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from engine.dist import all_ranks_true
from utils import TrainingStopped, UserError


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, as in the paper, with the fused implementation (one kernel for all parameters, on CUDA and
    CPU), which also lets Updater skip a non-finite update without a host sync."""
    if lr <= 0:
        raise UserError(f"learning rate must be positive, got {lr}")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


class Updater:
    """`update(opt, loss, name)`: backward + optimizer step, unless the loss is non-finite (on any rank):
    then the update is skipped, logged, and the run stops after `max_nonfinite` such losses.

    With a fused optimizer (make_optimizer's) the skip happens on the device, through the optimizer's
    found_inf flag as under a loss scaler, with no host sync: skipped updates are counted on the device
    and reported by `check` (the loop calls it when it logs or saves). Other optimizers check at once.
    fp16 autocast (`fp16=True`): the loss is scaled by a GradScaler per optimizer (which skips overflows).
    `step` is the current step index (set by the loop) for messages; `last_checkpoint()` names the last
    good checkpoint when the run stops.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], fp16: bool, max_nonfinite: int,
                 log: Callable[[str], None], last_checkpoint: Callable[[], object] = lambda: None):
        self.optimizers, self.fp16, self.max_nonfinite = optimizers, fp16, max_nonfinite
        self.log, self.last_checkpoint = log, last_checkpoint
        self.step = 0
        self.nonfinite = 0
        self.pending: dict[str, torch.Tensor] = {}  # updates skipped on the device, not yet reported
        self.scalers: dict[torch.optim.Optimizer, torch.amp.GradScaler | None] = {}
        self.scaler_states: dict[str, dict] = {}

    def __call__(self, opt: torch.optim.Optimizer, loss: torch.Tensor, name: str) -> bool:
        """Returns False when the update is known at once to be skipped (host check), else True."""
        opt.zero_grad(set_to_none=True)
        finite = all_ranks_true(torch.isfinite(loss.detach()))
        scaler = self._scaler(opt)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        elif opt.defaults.get("fused"):
            loss.backward()
            opt.found_inf = (~finite).float()
            try:
                opt.step()
            finally:
                del opt.found_inf
        else:
            return self._host_update(opt, loss, bool(finite), name)
        # Counted in place on one tensor per name, so that a CUDA-graphed step (engine/graphs.py) that
        # replays this addition keeps counting into the tensor check() reads.
        count = self.pending.get(name)
        if count is None:
            count = self.pending[name] = torch.zeros((), dtype=torch.int64, device=loss.device)
        count.add_((~finite).to(torch.int64))
        return True

    def _host_update(self, opt: torch.optim.Optimizer, loss: torch.Tensor, finite: bool, name: str) -> bool:
        if not finite:
            self.nonfinite += 1
            self.log(f"non-finite {name} ({float(loss.detach())}) at step {self.step + 1}: update skipped "
                     f"({self.nonfinite}/{self.max_nonfinite})")
            self._stop_if_too_many(f"{name} at step {self.step + 1}")
            return False
        loss.backward()
        opt.step()
        return True

    def check(self, step: int) -> None:
        """Report the updates skipped on the device since the last check (one host sync)."""
        for name, count in self.pending.items():
            n = int(count)
            if n:
                count.zero_()
                self.nonfinite += n
                self.log(f"non-finite {name}: {n} update(s) skipped up to step {step} "
                         f"({self.nonfinite}/{self.max_nonfinite})")
                self._stop_if_too_many(f"{name} up to step {step}")

    def _stop_if_too_many(self, last: str) -> None:
        if self.nonfinite > self.max_nonfinite:
            raise TrainingStopped(f"stopping: {self.nonfinite} non-finite losses (last: {last}); "
                                  f"last good checkpoint: {self.last_checkpoint() or 'none'}")

    def _scaler(self, opt: torch.optim.Optimizer) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 autocast on CUDA (one per optimizer), else None."""
        if opt in self.scalers:
            return self.scalers[opt]
        param = next((p for g in opt.param_groups for p in g["params"]), None)
        on_cuda = param is not None and param.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if self.fp16 and on_cuda else None
        names = [k for k, o in self.optimizers.items() if o is opt]
        if scaler is not None and names and names[0] in self.scaler_states:
            scaler.load_state_dict(self.scaler_states[names[0]])  # resumed run: the scale it had reached
        self.scalers[opt] = scaler
        return scaler

    def state_dict(self) -> dict:
        return {"nonfinite": self.nonfinite,
                "scalers": {k: self.scalers[o].state_dict() for k, o in self.optimizers.items()
                            if self.scalers.get(o) is not None}}

    def load_state_dict(self, state: dict) -> None:
        self.nonfinite = state.get("nonfinite", 0)
        self.scaler_states = state.get("scalers", {})
