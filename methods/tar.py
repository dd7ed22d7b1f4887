"""Tar (Lee, Tariq, Kim, Woo, "TAR: Generalized Forensic Framework to Detect Deepfakes using Weakly Supervised
Learning", IFIP SEC 2021), a row of the paper's Table 2: a residual autoencoder whose latent's first half should
be active on fakes and its second half on reals, trained with that activation loss and 0.1 x the L1 error of
its reconstruction (losses/tar.py); an image's P(fake) = a_fake / (a_fake + a_real). The decoder sees the label's
half of the latent (the paper's selection block; `tar.mask_latent: false`: the whole latent, as the released
code). Inputs in [0, 1] without mean/std (`tar.input_scale: unit`). Optionally a sequential transfer over target
sources with K labeled images of each (`fewshot`). Neither stage uses unlabeled data.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from datasets.loaders import train_batches
from datasets.protocols import record_splits, role_samples
from engine.dist import distribute, unwrap
from engine.run import RunOptions, start_run
from engine.setup import prepare
from losses.tar import TARLoss, tar_logits
from methods.transfer import fewshot_stages, transfer
from models.tar import ResAE, TarDetector, selection


def tar_step(net: nn.Module, opt: torch.optim.Optimizer, criterion: TARLoss, x: torch.Tensor, y: torch.Tensor,
             update, amp, mask: bool = True) -> dict:
    """One Tar step on a labeled batch x [B, 3, H, W] (pixels in [0, 1]), y [B] (0 real, 1 fake): 1. latent
    [B, 128, H/16, W/16] and the reconstruction of (the label's half of) it [B, 3, H, W], 2. the activation and
    reconstruction losses, 3. the update."""
    net.train()
    with amp:
        latent, recon = net(x, selection(y, 128) if mask else None)
    loss = criterion(latent.float(), recon.float(), x, y)
    update(opt, loss, "Tar loss")
    return {"loss": loss.detach(), "acc": (tar_logits(latent.float()).argmax(1) == y).float().mean()}


def run_config(cfg: dict) -> dict:
    """The config a Tar run trains with and records: the protocol's, with Tar's input scaling (its transforms, its
    release file)."""
    return {**cfg, "input_scale": cfg["tar"]["input_scale"]}


def train(cfg: dict, opts: RunOptions = RunOptions()) -> dict:
    tc = cfg["tar"]
    cfg = run_config(cfg)
    t = prepare(cfg)  # device, seed, CUDA graphs, autocast, the data sets (checked before anything is written)
    labeled = role_samples(t.sets, "labeled", {"tar.batch_size": tc["batch_size"]})

    # Model, loss, optimizer (the paper's Adam: lr 1e-3, eps 1e-7), run
    net = distribute(ResAE(), t.device, cfg)
    detector = TarDetector(unwrap(net))
    criterion = TARLoss(tc["recon_weight"])
    opt = torch.optim.Adam(net.parameters(), lr=tc["lr"], eps=1e-7)
    run = start_run(cfg, "tar", ["tar", *fewshot_stages(cfg)], t.sets, t.device, opts, t.graphs, model=net, opt=opt)
    record_splits(cfg, t.sets, run.dir)
    shown = "the label's half of the latent" if tc["mask_latent"] else "the whole latent"
    run.logger.info(f"Tar: residual autoencoder, {tc['steps']} steps on {t.device}, inputs {tc['input_scale']}, the "
                    f"decoder sees {shown}; run folder {run.dir}; labeled: {len(labeled)} images")
    for note in t.notes:
        run.logger.info(note)

    stage = run.stage("tar", tc["steps"])
    batches = train_batches(labeled, cfg, tc["batch_size"], 1, cfg["data"]["balance"], "tar", stage.start, t.device)
    stage.run(lambda x, y: tar_step(net, opt, criterion, x, y, run.update, t.amp, tc["mask_latent"]), batches, [opt],
              val=run.val.loss(net, lambda out, x, y: criterion(out[0].float(), out[1].float(), x, y) / len(y),
                               detector, keep=net))

    transfer(run, cfg, t.sets, net, lambda o: lambda x, y: tar_step(net, o, criterion, x, y, run.update, t.amp,
                                                                    tc["mask_latent"]), t.device, "Tar")
    path = run.save_release("weights", detector, "tar", tc["steps"], opt, detector=detector)
    run.finish()
    run.logger.info(f"saved {path}")
    return {"weights": path}
