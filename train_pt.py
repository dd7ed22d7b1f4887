"""Train the pretrained baseline: an (ImageNet-initialised) backbone with a 2-way head, cross-entropy on
augmented labeled images.

Writes <out_dir>/<run_name>/pt/{pt.tar, config.yaml, log.txt}.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from datasets import build_samples, prepare_data, train_loader
from models import build_baseline
from utils import (autocast, config_from_args, config_parser, cycle, get_device, make_optimizer, prepare_run,
                   run_cli, run_steps, save_checkpoint, seed_everything)


def train(cfg: dict) -> dict:
    device = get_device(cfg["device"])
    gen = seed_everything(cfg["seed"])
    pc = cfg["pt"]

    # Data (checked before anything is written)
    prepare_data(cfg)
    labeled = build_samples(cfg["data"]["labeled"], cfg["data"], cfg["seed"], "labeled")
    run_dir, logger = prepare_run(cfg, "pt")
    logger.info(f"baseline: backbone {cfg['backbone']}, {pc['steps']} steps on {device}; run folder {run_dir}; "
                f"labeled: {len(labeled)} images")
    batches = cycle(train_loader(labeled, cfg, pc["batch_size"], views=1, balance=cfg["data"]["balance"],
                                 generator=gen))

    # Model, optimizer
    model = build_baseline(cfg["backbone"], cfg["pretrained"]).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), pc["lr"], pc["weight_decay"], device)
    model.train()

    def step(_: int) -> dict:
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, cfg["amp"]):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}

    run_steps("pt", pc["steps"], step, logger, cfg["log_every"])
    path = run_dir / "pt.tar"
    save_checkpoint(path, model, cfg, "pt", pc["steps"], opt)
    logger.info(f"saved {path}")
    return {"weights": path}


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("train_pt.py", __doc__, "python train_pt.py --config configs/demo.yaml pt.steps=200")
    cfg = config_from_args(parser.parse_args(argv))
    train(cfg)
    return 0


if __name__ == "__main__":
    run_cli(main)
