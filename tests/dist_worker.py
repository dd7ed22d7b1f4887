"""Run by tests/test_distributed.py, alone (one process) and under `torchrun --nproc_per_node 2` (gloo, CPU).

Every process writes what it saw to <out>/rank<R>.pt; the test compares the ranks with each other and with
the single process. The models are BN-free (batch-norm statistics of a rank's part of the batch would
differ from those of the whole batch, by design), so N processes must reproduce one process exactly up to
float rounding. Inputs are drawn for the global batch from a fixed seed; each rank takes its slice.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config import DEFAULTS
from datasets.loaders import train_batches
from datasets.index import Sample
from engine.amp import autocast
from engine.dist import distribute, gather, setup_device, unwrap, world_size
from losses import SupConLoss
from methods.supconmpl import MPLPair, mpl_step
from models import LinearClassifier

B_L, B_U, STEPS = 4, 8, 3


class TinyEncoder(nn.Module):
    num_features = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x)).mean(dim=(2, 3))  # [B, 8]


class TinyNet(nn.Module):
    """SupConNet's interface (encoder, head, normalised features) without batch norm."""

    def __init__(self):
        super().__init__()
        self.encoder = TinyEncoder()
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))

    @property
    def dim(self) -> int:
        return 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(x)), dim=1)


def my_slice(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    n = t.shape[0] // world
    return t[rank * n:(rank + 1) * n]


def main(out: str, pack: str | None) -> None:
    cfg = {**DEFAULTS, "device": "cpu", "amp": False, "compile": False}
    cfg["mpl"] = {**DEFAULTS["mpl"], "teacher_lr": 1e-2, "student_lr": 1e-2}
    device = setup_device(cfg)
    rank = torch.distributed.get_rank() if world_size() > 1 else 0
    world = world_size()
    record: dict = {"world": world}

    # 1. SupCon over gathered features: value, feature gradient, and (through DDP) parameter gradient.
    g = torch.Generator().manual_seed(1)
    x_all, y_all = torch.randn(8, 5, generator=g), torch.randint(0, 2, (4,), generator=g)  # 4 samples x 2 views
    proj = nn.Linear(5, 3)
    proj.load_state_dict({"weight": torch.randn(3, 5, generator=g), "bias": torch.randn(3, generator=g)})
    proj = distribute(proj, device, cfg)
    x = torch.cat([my_slice(v, rank, world) for v in x_all.view(2, 4, 5)])  # this rank's samples, view-major
    z = F.normalize(proj(x), dim=1)
    b = z.shape[0] // 2
    feats = torch.stack(z.split(b), dim=1)  # [b, 2, 3]
    feats.retain_grad()
    loss = SupConLoss(0.1)(gather(feats), gather(my_slice(y_all, rank, world)))
    loss.backward()
    record["supcon"] = {"loss": loss.detach(), "feat_grad": feats.grad.clone(), "weight_grad": unwrap(proj).weight.grad.clone()}

    # 2. A short MPL run: h, the teacher classifier after each step, and every parameter at the end.
    torch.manual_seed(0)
    modules = (TinyNet(), LinearClassifier(8), TinyNet(), LinearClassifier(8))
    pair = MPLPair(*(distribute(m, device, cfg) for m in modules), cfg["mpl"], autocast(device, False))
    steps = []
    for step in range(STEPS):
        gs = torch.Generator().manual_seed(100 + step)
        x_l, x_l2 = torch.randn(2, B_L, 3, 6, 6, generator=gs)
        y_l = torch.randint(0, 2, (B_L,), generator=gs)
        x_uw, x_us = torch.randn(2, B_U, 3, 6, 6, generator=gs)
        res = mpl_step(pair, *(my_slice(t, rank, world) for t in (x_l, x_l2, y_l, x_uw, x_us)))
        steps.append({"h": res["h"].clone(), "t_supcon": res["t_supcon"], "s_supcon": res["s_supcon"],
                      "params": {name: {k: v.detach().clone() for k, v in unwrap(mod).state_dict().items()}
                                 for name, mod in (("teacher", pair.teacher), ("t_cls", pair.t_cls),
                                                   ("student", pair.student), ("s_cls", pair.s_cls))}})
    record["mpl"] = steps

    # 3. Packed batches: this rank's part of the first global batch (images and labels).
    if pack:
        import json
        base = json.loads(open(f"{pack}/meta.json").read())["base"]  # index.csv names images below it
        samples = [Sample(os.path.join(base, line.rsplit(",", 2)[0]), i % 2, "x", None) for i, line in
                   enumerate(open(f"{pack}/index.csv").read().splitlines()[1:])]
        pcfg = {**cfg, "img_size": 16, "backbone": "test_resnet", "data": {**cfg["data"], "packed": pack}}
        v1, v2, labels, _ = next(iter(train_batches(samples, pcfg, 8, 2, True, "dist", 5, device)))
        record["packed"] = {"v1": v1, "v2": v2, "labels": labels}

    torch.save(record, f"{out}/rank{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
