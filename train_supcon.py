"""Train the SupCon teacher: (a) encoder + projection head with the supervised contrastive loss on two
augmented views of each labeled image, (b) a linear classifier with cross-entropy on the frozen encoder.

Writes <out_dir>/<run_name>/supcon/{supcon_encoder.tar, supcon_classifier.tar, config.yaml, log.txt, checkpoints/}.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets import prepare_data, train_batches
from datasets.protocols import protocol_sets, record_splits, role_samples
from losses import SupConLoss
from models import LinearClassifier, SupConNet
from utils import (Run, autocast, barrier, check_batch, config_from_args, config_parser, distribute, gather,
                   make_optimizer, prepare_run, run_cli, save_checkpoint, seed_everything, setup_device, unwrap)


def supcon_features(net: nn.Module, views: list[torch.Tensor], device: torch.device, cfg: dict) -> torch.Tensor:
    """The network's features of V views of a batch, stacked per sample and gathered over ranks:
    [B_global, V, D] (this rank's rows keep their gradient)."""
    b = views[0].shape[0]
    x = torch.cat(views).to(device, non_blocking=True)  # [V*B, 3, H, W], view-major
    with autocast(device, cfg["amp"], cfg["amp_dtype"]):
        z = net(x)  # [V*B, D]
    return gather(torch.stack(z.float().split(b), dim=1))  # [B, V, D] -> [B_global, V, D]


def supcon_step(run: Run, net: nn.Module, opt: torch.optim.Optimizer, batches, criterion: SupConLoss,
                device: torch.device, cfg: dict) -> Callable[[int], dict]:
    """A step of SupCon on two views of each labeled image, over the global batch; trains encoder and head."""
    def step(i: int) -> dict:
        net.train()
        v1, v2, y = run.batch(batches)
        features = supcon_features(net, [v1, v2], device, cfg)  # [B_global, 2, D]
        loss = criterion(features, gather(y.to(device, non_blocking=True)))
        run.update(opt, loss, "supcon loss", i)
        return {"loss": loss.detach(), "images": 2 * y.shape[0]}
    return step


def classifier_step(run: Run, encoder: nn.Module, classifier: nn.Module, opt: torch.optim.Optimizer,
                    batches, device: torch.device, cfg: dict) -> Callable[[int], dict]:
    """A step of cross-entropy on frozen encoder features (encoder in eval mode, no gradient)."""
    def step(i: int) -> dict:
        encoder.eval()
        classifier.train()
        x, y = (t.to(device, non_blocking=True) for t in run.batch(batches))
        with torch.no_grad(), autocast(device, cfg["amp"], cfg["amp_dtype"]):
            feats = encoder(x)
        logits = classifier(feats.float())
        loss = F.cross_entropy(logits, y)
        run.update(opt, loss, "classifier loss", i)
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean(), "images": y.shape[0]}
    return step


def train(cfg: dict, resume: bool = False) -> dict:
    """Both stages of the SupCon teacher; returns the paths written."""
    device = setup_device(cfg)
    seed_everything(cfg["seed"])
    sc, balance = cfg["supcon"], cfg["data"]["balance"]

    # Data (checked before anything is written)
    prepare_data(cfg)
    sets = protocol_sets(cfg)  # every set, test sets included: a missing root fails now, not after training
    labeled = role_samples(sets, "labeled")
    check_batch(len(labeled), sc["batch_size"], "supcon.batch_size", "labeled")
    check_batch(len(labeled), sc["classifier_batch_size"], "supcon.classifier_batch_size", "labeled")
    run_dir, logger = prepare_run(cfg, "supcon")
    record_splits(sets, run_dir, logger)
    logger.info(f"SupCon teacher: backbone {cfg['backbone']}, {sc['steps']} + {sc['classifier_steps']} steps "
                f"on {device}; run folder {run_dir}; labeled: {len(labeled)} images")

    # Models, optimizers, run state
    net = distribute(SupConNet(cfg["backbone"], cfg["pretrained"], sc["feat_dim"]), device, cfg)
    classifier = distribute(LinearClassifier(unwrap(net).dim), device, cfg)
    opt_net = make_optimizer(net.parameters(), sc["lr"])
    opt_cls = make_optimizer(classifier.parameters(), sc["classifier_lr"])
    run = Run(run_dir, cfg, logger, resume)
    run.register(net=net, classifier=classifier, opt_net=opt_net, opt_cls=opt_cls)
    run.restore()
    paths = {"encoder": run_dir / "supcon_encoder.tar", "classifier": run_dir / "supcon_classifier.tar"}

    # Stage (a): SupCon network
    pairs = train_batches(labeled, cfg, sc["batch_size"], 2, balance, "supcon", run.start_of(0), device)
    run.stage(0, "supcon", sc["steps"], supcon_step(run, net, opt_net, pairs, SupConLoss(sc["temperature"]),
                                                    device, cfg))
    save_checkpoint(paths["encoder"], net, cfg, "supcon_encoder", sc["steps"], opt_net)

    # Stage (b): linear classifier on the frozen encoder
    singles = train_batches(labeled, cfg, sc["classifier_batch_size"], 1, balance, "classifier",
                            run.start_of(1), device)
    run.stage(1, "classifier", sc["classifier_steps"],
              classifier_step(run, unwrap(net).encoder, classifier, opt_cls, singles, device, cfg))
    save_checkpoint(paths["classifier"], classifier, cfg, "supcon_classifier", sc["classifier_steps"], opt_cls)
    run.finish()
    barrier()  # every rank may read the saved files next (train_supconmpl.py)
    logger.info(f"saved {paths['encoder']} and {paths['classifier']}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("train_supcon.py", __doc__,
                           "python train_supcon.py --config configs/demo.yaml supcon.steps=200")
    args = parser.parse_args(argv)
    train(config_from_args(args), args.resume)
    return 0


if __name__ == "__main__":
    run_cli(main)
