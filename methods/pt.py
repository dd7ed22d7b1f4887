"""The pretrained baseline: an (ImageNet-initialised) backbone with a 2-way head, trained with cross-entropy
on augmented labeled images."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets.loaders import train_batches
from datasets.protocols import prepare_data, record_splits, role_samples, training_sets
from engine.amp import autocast
from engine.dist import distribute, setup_device
from engine.graphs import StepGraph, graphed_step, use_cuda_graphs
from engine.run import RunOptions, start_run
from engine.update import make_optimizer
from models import build_baseline
from utils import seed_everything


def pt_step(model: nn.Module, opt: torch.optim.Optimizer, next_batch: Callable, update: Callable,
            amp, graphs: bool = False) -> Callable[[int], dict]:
    """A step of cross-entropy on one augmented view of each labeled image (DDP averages the gradient);
    graphs: replayed as a CUDA graph (engine/graphs.py)."""
    def core(x: torch.Tensor, y: torch.Tensor) -> dict:  # [B, 3, H, W], [B]
        model.train()
        with amp:
            logits = model(x)  # [B, 2]
        loss = F.cross_entropy(logits.float(), y)
        update(opt, loss, "loss")
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}
    return graphed_step(next_batch, StepGraph(core, [opt], graphs), lambda batch: batch[-1].shape[0])


def train(cfg: dict, opts: RunOptions = RunOptions()) -> dict:
    device = setup_device(cfg)
    seed_everything(cfg["seed"])
    pc = cfg["pt"]
    graphs, graphs_note = use_cuda_graphs(cfg, device)
    amp = autocast(device, cfg["amp"], cfg["amp_dtype"], cache=not graphs)

    # Data (checked before anything is written; test sets too, so that a missing root fails now)
    prepare_data(cfg, training=True)
    sets = training_sets(cfg)
    labeled = role_samples(sets, "labeled", {"pt.batch_size": pc["batch_size"]})

    # Model, optimizer, run
    model = distribute(build_baseline(cfg["backbone"], cfg["pretrained"], cfg["weights_dir"]), device, cfg)
    opt = make_optimizer(model.parameters(), pc["lr"], pc["weight_decay"])
    run = start_run(cfg, "pt", ["pt"], sets, device, opts, model=model, opt=opt)
    record_splits(cfg, sets, run.dir)
    run.logger.info(f"baseline: backbone {cfg['backbone']}, {pc['steps']} steps on {device}; run folder {run.dir}; "
                    f"labeled: {len(labeled)} images")
    run.logger.info(graphs_note)

    # Loop
    stage = run.stage("pt", pc["steps"])
    batches = train_batches(labeled, cfg, pc["batch_size"], 1, cfg["data"]["balance"], "pt", stage.start, device)
    stage.run(pt_step(model, opt, run.feed(batches, device), run.update, amp, graphs),
              val=run.val.classifier(model, keep=model))

    # Save
    path = run.save_release("weights", model, "pt", pc["steps"], opt, detector=model)
    run.finish()
    run.logger.info(f"saved {path}")
    return {"weights": path}
