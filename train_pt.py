"""Train the pretrained baseline: an (ImageNet-initialised) backbone with a 2-way head, cross-entropy on
augmented labeled images.

Writes <out_dir>/<run_name>/pt/{pt.tar, config.yaml, log.txt, checkpoints/}.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets import prepare_data, train_batches
from datasets.protocols import protocol_sets, record_splits, role_samples
from models import build_baseline
from utils import (Run, autocast, check_batch, config_from_args, config_parser, distribute, make_optimizer,
                   prepare_run, run_cli, save_checkpoint, seed_everything, setup_device)


def pt_step(run: Run, model: nn.Module, opt: torch.optim.Optimizer, batches, device: torch.device,
            cfg: dict) -> Callable[[int], dict]:
    """A step of cross-entropy on one augmented view of each labeled image (DDP averages the gradient)."""
    def step(i: int) -> dict:
        model.train()
        x, y = (t.to(device, non_blocking=True) for t in run.batch(batches))
        with autocast(device, cfg["amp"], cfg["amp_dtype"]):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        run.update(opt, loss, "loss", i)
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean(), "images": y.shape[0]}
    return step


def train(cfg: dict, resume: bool = False) -> dict:
    device = setup_device(cfg)
    seed_everything(cfg["seed"])
    pc = cfg["pt"]

    # Data (checked before anything is written)
    prepare_data(cfg)
    sets = protocol_sets(cfg)  # every set, test sets included: a missing root fails now, not after training
    labeled = role_samples(sets, "labeled")
    check_batch(len(labeled), pc["batch_size"], "pt.batch_size", "labeled")
    run_dir, logger = prepare_run(cfg, "pt")
    record_splits(sets, run_dir, logger)
    logger.info(f"baseline: backbone {cfg['backbone']}, {pc['steps']} steps on {device}; run folder {run_dir}; "
                f"labeled: {len(labeled)} images")

    # Model, optimizer, run state
    model = distribute(build_baseline(cfg["backbone"], cfg["pretrained"]), device, cfg)
    opt = make_optimizer(model.parameters(), pc["lr"], pc["weight_decay"])
    run = Run(run_dir, cfg, logger, resume)
    run.register(model=model, opt=opt)
    run.restore()

    # Loop
    batches = train_batches(labeled, cfg, pc["batch_size"], views=1, balance=cfg["data"]["balance"],
                            stream="pt", start_step=run.start_of(0), device=device)
    run.stage(0, "pt", pc["steps"], pt_step(run, model, opt, batches, device, cfg))

    # Save
    path = run_dir / "pt.tar"
    save_checkpoint(path, model, cfg, "pt", pc["steps"], opt)
    run.finish()
    logger.info(f"saved {path}")
    return {"weights": path}


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("train_pt.py", __doc__, "python train_pt.py --config configs/demo.yaml pt.steps=200")
    args = parser.parse_args(argv)
    train(config_from_args(args), args.resume)
    return 0


if __name__ == "__main__":
    run_cli(main)
