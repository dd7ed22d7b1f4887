"""Validation during training (config section `val`), and the decision threshold and temperature chosen on
the validation set for the release file.

The validation set is a seeded share of the labeled identity groups (role `val` in splits.csv,
datasets/splits.hold_out); test sets are never used to choose anything. A stage watches it through a
check built here:

    stage.run(step_fn, val=run.val.classifier(model, keep=model))       # loss, ACC, AUC of the logits
    stage.run(step_fn, val=run.val.supcon(net, criterion, keep=net))    # SupCon loss of the features

Every `val.every` steps and at the stage's end the check scores the whole validation set (eval mode, the
evaluation transform, no augmentation) and the loop logs `val_*` scalars. With `val.select: best_val` the
modules in `keep` are set back to their best-on-validation weights when the stage ends (highest AUC for
classifiers, lowest loss for SupCon networks), so the release file holds those. The best weights so far
are part of the resumable checkpoint (Validator.state_dict). With validation off, every method here is a
no-op returning None.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.amp import autocast
from engine.dist import unwrap
# The numpy-only parts of calibration live with the other metrics (also used by evaluate.py and plots).
from evaluation.metrics import choose_threshold, expected_calibration_error, scaled_scores  # noqa: F401
from utils import UserError


class Validator:
    def __init__(self, samples: list | None, cfg: dict, device: torch.device):
        vc = cfg["val"]
        self.samples = samples if vc["enabled"] else None
        self.cfg, self.device, self.every, self.select = cfg, device, vc["every"], vc["select"]
        self.amp = autocast(device, cfg["amp"], cfg["amp_dtype"])
        self.best: dict = {}  # {"stage", "step", "value", "weights": state_dict of `keep`} of the current stage

    @property
    def enabled(self) -> bool:
        return self.samples is not None

    # -------------------------------------------------------------------------------- checks of a stage
    def classifier(self, model: nn.Module, keep: nn.Module | None = None) -> "Check | None":
        """Validation of a detector `model` (images -> logits [B, 2]): val_loss (cross-entropy), val_acc,
        val_auc; `keep`: the module released at the stage's end (best_val restores its best weights)."""
        if not self.enabled:
            return None

        def measure() -> dict[str, float]:
            logits, labels = self.logits(model)
            m = classifier_metrics(logits, labels)
            return {"val_loss": m["loss"], "val_acc": m["acc"], "val_auc": m["auc"] if m["auc"] is not None
                    else float("nan")}
        return Check(self, measure, lambda m: m["val_auc"] if np.isfinite(m["val_auc"]) else -m["val_loss"], keep)

    def supcon(self, net: nn.Module, criterion: nn.Module, keep: nn.Module | None = None) -> "Check | None":
        """Validation of a SupCon network (images -> normalised features): val_loss, the SupCon loss of one
        view of each validation image over evaluation batches (no classifier exists yet in this stage)."""
        if not self.enabled:
            return None

        def measure() -> dict[str, float]:  # features [B, D] -> [B, 1, D]: one view
            return {"val_loss": self._mean_loss(net, lambda z, x, y: criterion(z.float().unsqueeze(1), y))}
        return Check(self, measure, lambda m: -m["val_loss"], keep)

    def loss(self, net: nn.Module, loss_fn: Callable, detector: nn.Module,
             keep: nn.Module | None = None) -> "Check | None":
        """Validation by a method's own loss (DDT's, Tar's): val_loss, loss_fn(net's output, labels) over the
        validation images (a batch mean, weighted by batch size), and val_auc of `detector`; the best is the
        lowest val_loss (as their papers stop and decay on it)."""
        if not self.enabled:
            return None

        def measure() -> dict[str, float]:
            loss = self._mean_loss(net, loss_fn)
            auc = classifier_metrics(*self.logits(detector))["auc"]
            return {"val_loss": loss, "val_auc": float("nan") if auc is None else auc}
        return Check(self, measure, lambda m: -m["val_loss"], keep)

    def _mean_loss(self, net: nn.Module, loss_fn: Callable) -> float:
        """loss_fn(net's output, x, y) over the validation images: batch means weighted by batch size."""
        total, n = 0.0, 0
        with self._quiet(unwrap(net)) as module:
            for x, y in self.batches():
                with self.amp:
                    out = module(x)
                total += float(loss_fn(out, x, y)) * len(y)
                n += len(y)
        return total / max(n, 1)

    # -------------------------------------------------------------------------------- scoring
    def batches(self):
        """(images on the device, labels) of the readable validation images, in a fixed order."""
        from datasets.loaders import eval_loader
        cfg = self.cfg
        loader = eval_loader(self.samples, cfg["img_size"], cfg["backbone"], cfg["input_scale"],
                             cfg["val"]["batch_size"], 0)
        labels = torch.tensor([s.label for s in self.samples])
        start, readable = 0, 0
        for x, ok in loader:
            y = labels[start:start + len(ok)][ok]
            start += len(ok)
            if ok.any():
                readable += int(ok.sum())
                yield x[ok].to(self.device), y.to(self.device)
        if not readable:
            raise UserError(f"none of the {len(self.samples)} validation images can be read: nothing to validate "
                            "on (fix or remove those files, or val.enabled=false)")

    def logits(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, 2] (float32, CPU) and labels [N] of the validation set."""
        out, labels = [], []
        with self._quiet(unwrap(model)) as module:
            for x, y in self.batches():
                with self.amp:
                    out.append(module(x).float().cpu())
                labels.append(y.cpu())
        return torch.cat(out), torch.cat(labels)

    @staticmethod
    @contextlib.contextmanager
    def _quiet(module: nn.Module):
        """Eval mode, no gradient and the global random states untouched (validation must not change what
        training draws next); the module's train/eval flags are restored after."""
        modes = [m.training for m in module.modules()]
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                yield module.eval()
        finally:
            for m, mode in zip(module.modules(), modes):
                m.training = mode

    # -------------------------------------------------------------------------------- calibration
    def calibrate(self, model: nn.Module) -> dict | None:
        """The release file's `calibration`: the decision threshold on P(fake) chosen on the validation set
        (val.threshold) and, with val.temperature, the fitted softmax temperature with the expected
        calibration error before and after. None when validation is off."""
        if not self.enabled:
            return None
        logits, labels = self.logits(model)
        return calibration(logits, labels, self.cfg["val"]["threshold"], self.cfg["val"]["temperature"])

    # -------------------------------------------------------------------------------- state (resume)
    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state.get("best", {})


class Check:
    """What one stage validates: `measure()` -> metrics, `value(metrics)` -> higher is better, `keep`."""

    def __init__(self, validator: Validator, measure: Callable[[], dict], value: Callable[[dict], float],
                 keep: nn.Module | None):
        self.v, self.measure, self.value, self.keep = validator, measure, value, keep
        self.every = validator.every

    def __call__(self, stage: str, step: int) -> dict[str, float]:
        metrics = self.measure()
        if self.v.select == "best_val" and self.keep is not None:
            best, value = self.v.best, self.value(metrics)
            if best.get("stage") != stage or value > best["value"]:
                weights = {k: t.detach().cpu().clone() for k, t in unwrap(self.keep).state_dict().items()}
                self.v.best = {"stage": stage, "step": step, "value": value, "weights": weights}
        return metrics

    def end(self, stage: str) -> str | None:
        """With best_val: load the stage's best weights into `keep`; returns a log line."""
        best = self.v.best
        if self.v.select != "best_val" or self.keep is None or best.get("stage") != stage:
            return None
        unwrap(self.keep).load_state_dict(copy.deepcopy(best["weights"]))
        return f"{stage}: best_val keeps the weights of step {best['step']} (validation score {best['value']:.4f})"


# ------------------------------------------------------------------------------------ metrics and calibration
def classifier_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Cross-entropy, ACC at 0.5 and AUC of 2-way logits [N, 2] against labels [N]."""
    from evaluation.metrics import binary_metrics
    loss = float(F.cross_entropy(logits, labels)) if len(labels) else float("nan")
    m = binary_metrics(labels.numpy(), torch.softmax(logits, 1)[:, 1].numpy())
    return {"loss": loss, "acc": m["acc"], "auc": m["auc"]}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature T minimising the negative log-likelihood of labels under softmax(logits / T)
    (Guo et al., 2017): a search over log T on a fine grid, then a local refinement."""
    def nll(t: float) -> float:
        return float(F.cross_entropy(logits / t, labels))
    grid = np.exp(np.linspace(np.log(0.01), np.log(100.0), 401))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.012, 0.012, 25))
    return float(min(fine, key=nll))


def calibration(logits: torch.Tensor, labels: torch.Tensor, rule: str, temperature: bool) -> dict:
    y = labels.numpy()
    scores = torch.softmax(logits.double(), 1)[:, 1].numpy()
    out = {"threshold": choose_threshold(y, scores, rule), "rule": rule, "n": int(len(y)),
           "real": int((y == 0).sum()), "fake": int((y == 1).sum()), "temperature": None,
           "ece": expected_calibration_error(y, scores), "ece_scaled": None}
    if temperature and len(y):
        t = fit_temperature(logits.double(), labels)
        out.update(temperature=t, ece_scaled=expected_calibration_error(y, scaled_scores(scores, t)))
    return out
