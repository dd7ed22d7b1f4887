"""Train the SupCon teacher: (a) encoder + projection head with the supervised contrastive loss on two
augmented views of each labeled image, (b) a linear classifier with cross-entropy on the frozen encoder.

Writes <out_dir>/<run_name>/supcon/{supcon_encoder.tar, supcon_classifier.tar, config.yaml, log.txt}.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets import build_samples, prepare_data, train_loader
from losses import SupConLoss
from models import LinearClassifier, SupConNet
from utils import (autocast, config_from_args, config_parser, cycle, get_device, make_optimizer, prepare_run,
                   run_cli, run_steps, save_checkpoint, seed_everything)


def supcon_stage(net: SupConNet, loader, steps: int, lr: float, temperature: float, cfg: dict,
                 device: torch.device, logger, name: str) -> torch.optim.Optimizer:
    """SupCon on two views of each labeled image; trains encoder and head."""
    criterion = SupConLoss(temperature=temperature)
    opt = make_optimizer(net.parameters(), lr, device=device)
    batches = cycle(loader)
    net.train()

    def step(_: int) -> dict:
        v1, v2, y = next(batches)
        b = y.shape[0]
        x = torch.cat([v1, v2]).to(device, non_blocking=True)  # [2B, 3, H, W]
        with autocast(device, cfg["amp"]):
            z = net(x)  # [2B, D]
        features = torch.stack(z.float().split(b), dim=1)  # [B, 2, D]
        loss = criterion(features, y.to(device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    run_steps(name, steps, step, logger, cfg["log_every"])
    return opt


def classifier_stage(encoder: nn.Module, classifier: LinearClassifier, loader, steps: int, lr: float, cfg: dict,
                     device: torch.device, logger, name: str) -> torch.optim.Optimizer:
    """Cross-entropy on frozen encoder features (encoder in eval mode, no gradient)."""
    opt = make_optimizer(classifier.parameters(), lr, device=device)
    batches = cycle(loader)
    encoder.eval()
    classifier.train()

    def step(_: int) -> dict:
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.no_grad(), autocast(device, cfg["amp"]):
            feats = encoder(x)
        loss = F.cross_entropy(classifier(feats.float()), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "acc": (classifier(feats.float()).argmax(1) == y).float().mean()}

    run_steps(name, steps, step, logger, cfg["log_every"])
    return opt


def train(cfg: dict) -> dict:
    """Both stages of the SupCon teacher; returns the paths written."""
    device = get_device(cfg["device"])
    gen = seed_everything(cfg["seed"])
    sc = cfg["supcon"]

    # Data (checked before anything is written)
    prepare_data(cfg)
    labeled = build_samples(cfg["data"]["labeled"], cfg["data"], cfg["seed"], "labeled")
    run_dir, logger = prepare_run(cfg, "supcon")
    logger.info(f"SupCon teacher: backbone {cfg['backbone']}, {sc['steps']} + {sc['classifier_steps']} steps "
                f"on {device}; run folder {run_dir}; labeled: {len(labeled)} images")
    pair_loader = train_loader(labeled, cfg, sc["batch_size"], views=2, balance=cfg["data"]["balance"], generator=gen)
    single_loader = train_loader(labeled, cfg, sc["classifier_batch_size"], views=1,
                                 balance=cfg["data"]["balance"], generator=gen)

    # Stage (a): SupCon network
    net = SupConNet(cfg["backbone"], cfg["pretrained"], sc["feat_dim"]).to(device).to(memory_format=torch.channels_last)
    opt = supcon_stage(net, pair_loader, sc["steps"], sc["lr"], sc["temperature"], cfg, device, logger, "supcon")
    paths = {"encoder": run_dir / "supcon_encoder.tar", "classifier": run_dir / "supcon_classifier.tar"}
    save_checkpoint(paths["encoder"], net, cfg, "supcon_encoder", sc["steps"], opt)

    # Stage (b): linear classifier on the frozen encoder
    classifier = LinearClassifier(net.dim).to(device)
    opt = classifier_stage(net.encoder, classifier, single_loader, sc["classifier_steps"], sc["classifier_lr"],
                           cfg, device, logger, "classifier")
    save_checkpoint(paths["classifier"], classifier, cfg, "supcon_classifier", sc["classifier_steps"], opt)
    logger.info(f"saved {paths['encoder']} and {paths['classifier']}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("train_supcon.py", __doc__,
                           "python train_supcon.py --config configs/demo.yaml supcon.steps=200")
    cfg = config_from_args(parser.parse_args(argv))
    train(cfg)
    return 0


if __name__ == "__main__":
    run_cli(main)
