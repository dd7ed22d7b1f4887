"""Deep Distribution Transfer (DDT; Aneja & Niessner, "Generalized Zero and Few-Shot Transfer for Facial Forgery
Detection", 2020), a row of the paper's Table 2: an ImageNet ResNet up to layer3 maps an image to a Gaussian
N(|mu|, diag sigma^2); training pulls it towards its class's fixed mode (losses/ddt.py); an image is called the
class whose mode is nearer. Source training on the labeled data (Adam 1e-3, the learning rate decayed on a plateau
of the validation loss, early stopping on it when a validation set is on), then optionally a few-shot transfer
to target sources (`fewshot`: the whole encoder fine-tuned on K labeled images of each class, Adam 1e-5).
Neither stage uses unlabeled data.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from datasets.loaders import train_batches
from datasets.protocols import record_splits, role_samples
from engine.dist import distribute, unwrap
from engine.run import RunOptions, start_run
from engine.setup import prepare
from engine.update import make_optimizer
from losses.ddt import DDTLoss, ddt_logits
from methods.transfer import Plateau, fewshot_stages, transfer
from models.ddt import DDTDetector, DDTNet


def spatial_mixup(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """With probability p per image, its left half joined to the right half of another image of its class
    (the paper's spatial mixup). x [B, 3, H, W], y [B]."""
    partner = torch.arange(len(y), device=y.device)
    for label in (0, 1):
        ids = torch.nonzero(y == label).flatten()
        partner[ids] = ids[torch.randperm(len(ids), device=y.device)]
    mixed = x.clone()
    pick = torch.rand(len(y), device=y.device) < p
    half = x.shape[3] // 2
    mixed[pick, :, :, half:] = x[partner[pick], :, :, half:]
    return mixed


def ddt_step(net: nn.Module, opt: torch.optim.Optimizer, criterion: DDTLoss, x: torch.Tensor, y: torch.Tensor,
             update, amp, mixup: float = 0.0) -> dict:
    """One DDT step on a labeled batch x [B, 3, H, W], y [B] (0 real, 1 fake): 1. (spatial mixup), 2. mu, log
    sigma^2 [B, d], 3. the distance of each image to its class's mode, weighted per batch, 4. the update."""
    net.train()
    if mixup > 0:
        x = spatial_mixup(x, y, mixup)
    with amp:
        mu, logvar = net(x)  # [B, d] each
    mu, logvar = mu.float(), logvar.float()
    loss = criterion(mu, logvar, y)
    update(opt, loss, "DDT loss")
    return {"loss": loss.detach(), "acc": (ddt_logits(mu, logvar).argmax(1) == y).float().mean()}


def run_config(cfg: dict) -> dict:
    """The config a DDT run trains with and records: the protocol's, with DDT's encoder as the backbone (its input
    normalisation, its release file)."""
    return {**cfg, "backbone": cfg["ddt"]["backbone"]}


def train(cfg: dict, opts: RunOptions = RunOptions()) -> dict:
    dc = cfg["ddt"]
    cfg = run_config(cfg)
    # device, seed, autocast, the data sets; eager steps (the plateau changes the learning rate, which a CUDA graph
    # would hold fixed)
    t = prepare(cfg, graphed=False)
    labeled = role_samples(t.sets, "labeled", {"ddt.batch_size": dc["batch_size"]})

    # Model, loss, optimizer (its plateau decay and early stopping are resumable state), run
    net = distribute(DDTNet(dc["backbone"], cfg["pretrained"], dc["dim"], cfg["weights_dir"]), t.device, cfg)
    detector = DDTDetector(unwrap(net))
    criterion = DDTLoss(dc["real_weight"])
    opt = make_optimizer(net.parameters(), dc["lr"])
    validated = t.sets.get("val") is not None
    plateau = Plateau(opt, dc["plateau_factor"], dc["plateau_patience"], dc["early_stop"] if validated else 0,
                      window=1 if validated else cfg["val"]["every"])
    run = start_run(cfg, "ddt", ["ddt", *fewshot_stages(cfg)], t.sets, t.device, opts, t.graphs, model=net,
                    opt=opt, plateau=plateau)
    record_splits(cfg, t.sets, run.dir)
    run.logger.info(f"DDT: {dc['backbone']} up to layer3, d = {dc['dim']}, {dc['steps']} steps on {t.device}; run "
                    f"folder {run.dir}; labeled: {len(labeled)} images")
    for note in t.notes:
        run.logger.info(note)

    # Source training
    stage = run.stage("ddt", dc["steps"])
    batches = train_batches(labeled, cfg, dc["batch_size"], 1, cfg["data"]["balance"], "ddt", stage.start, t.device)
    stage.run(lambda x, y: ddt_step(net, opt, criterion, x, y, run.update, t.amp, dc["mixup"]), batches, stop=plateau,
              val=run.val.loss(net, lambda out, x, y: criterion(out[0].float(), out[1].float(), y), detector,
                               keep=net))

    # Few-shot transfer (fewshot.sources), then the release
    transfer(run, cfg, t.sets, net, lambda o: lambda x, y: ddt_step(net, o, criterion, x, y, run.update, t.amp,
                                                                    dc["mixup"]), t.device, "DDT")
    path = run.save_release("weights", detector, "ddt", dc["steps"], opt, detector=detector)
    run.finish()
    run.logger.info(f"saved {path}")
    return {"weights": path}
