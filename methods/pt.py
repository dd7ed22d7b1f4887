"""The pretrained baseline: an (ImageNet-initialised) backbone with a 2-way head, trained with cross-entropy
on augmented labeled images."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets.loaders import train_batches
from datasets.protocols import record_splits, role_samples
from engine.dist import distribute
from engine.run import RunOptions, start_run
from engine.setup import prepare
from engine.update import make_optimizer
from models import build_baseline


def pt_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, update, amp) -> dict:
    """One step of cross-entropy on one augmented view of each labeled image, x [B, 3, H, W], y [B] (DDP
    averages the gradient). update(opt, loss, name) applies the update (engine/update.py)."""
    model.train()
    with amp:
        logits = model(x)  # [B, 2]
    loss = F.cross_entropy(logits.float(), y)
    update(opt, loss, "loss")
    return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}


def train(cfg: dict, opts: RunOptions = RunOptions()) -> dict:
    pc = cfg["pt"]
    t = prepare(cfg)  # device, seed, CUDA graphs, autocast, the data sets (checked before anything is written)
    labeled = role_samples(t.sets, "labeled", {"pt.batch_size": pc["batch_size"]})

    # Model, optimizer, run
    model = distribute(build_baseline(cfg["backbone"], cfg["pretrained"], cfg["weights_dir"]), t.device, cfg)
    opt = make_optimizer(model.parameters(), pc["lr"], pc["weight_decay"])
    run = start_run(cfg, "pt", ["pt"], t.sets, t.device, opts, t.graphs, model=model, opt=opt)
    record_splits(cfg, t.sets, run.dir)
    run.logger.info(f"baseline: backbone {cfg['backbone']}, {pc['steps']} steps on {t.device}; run folder "
                    f"{run.dir}; labeled: {len(labeled)} images")
    for note in t.notes:
        run.logger.info(note)

    # Loop
    stage = run.stage("pt", pc["steps"])
    batches = train_batches(labeled, cfg, pc["batch_size"], 1, cfg["data"]["balance"], "pt", stage.start, t.device)
    stage.run(lambda x, y: pt_step(model, opt, x, y, run.update, t.amp), batches, [opt],
              val=run.val.classifier(model, keep=model))

    # Save
    path = run.save_release("weights", model, "pt", pc["steps"], opt, detector=model)
    run.finish()
    run.logger.info(f"saved {path}")
    return {"weights": path}
