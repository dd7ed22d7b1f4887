"""Train SupCon-MPL: a SupCon teacher pseudo-labels unlabeled images, a student learns from them with
SupCon, and the change in the student's labeled loss (h) feeds back into the teacher's classifier
(Meta Pseudo Labels). Then the student is fine-tuned on the labeled data (SupCon, then its classifier)
and saved as the SupCon-MPL model. If the teacher's checkpoint is missing, the teacher is trained first.

Writes <out_dir>/<run_name>/supconmpl/{mpl_supcon_encoder.tar, mpl_supcon_classifier.tar, config.yaml, log.txt}.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import train_supcon
from datasets import build_samples, prepare_data, train_loader
from losses import SupConLoss, mpl_feedback, teacher_mpl_loss
from models import LinearClassifier, SupConNet
from utils import (UserError, autocast, config_from_args, config_parser, cycle, get_device, load_weights, make_optimizer,
                   prepare_run, resolve_path, run_cli, run_folder, run_steps, save_checkpoint, seed_everything)


class MPLPair:
    """Teacher and student (network = encoder + projection head, plus a linear classifier) and their optimizers."""

    def __init__(self, teacher: SupConNet, t_cls: LinearClassifier, student: SupConNet, s_cls: LinearClassifier,
                 cfg: dict, device: torch.device):
        mc = cfg["mpl"]
        self.teacher, self.t_cls, self.student, self.s_cls = teacher, t_cls, student, s_cls
        self.opt_t = make_optimizer(teacher.parameters(), mc["teacher_lr"], device=device)
        self.opt_t_cls = make_optimizer(t_cls.parameters(), mc["teacher_lr"], device=device)
        self.opt_s = make_optimizer(student.parameters(), mc["student_lr"], device=device)
        self.opt_s_cls = make_optimizer(s_cls.parameters(), mc["student_lr"], device=device)
        self.supcon = SupConLoss(temperature=mc["temperature"])
        self.T, self.sign = mc["T"], mc["feedback"]
        self.device, self.amp = device, cfg["amp"]


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def mpl_step(m: MPLPair, x_l: torch.Tensor, x_l2: torch.Tensor, y_l: torch.Tensor, x_uw: torch.Tensor,
             x_us: torch.Tensor) -> dict[str, torch.Tensor]:
    """One SupCon-MPL step (method notes, steps 1-8). x_l, x_l2: two views of the labeled batch [B_l, 3, H, W];
    x_uw, x_us: weak and strong views of the unlabeled batch [B_u, 3, H, W]; y_l: labels [B_l]."""
    b_l, b_u = x_l.shape[0], x_uw.shape[0]
    amp = autocast(m.device, m.amp)

    # 1. Teacher encoder frozen (eval, no grad); gradient reaches the teacher classifier only.
    m.teacher.eval()
    with torch.no_grad(), amp:
        t_feats = m.teacher.encoder(torch.cat([x_l, x_uw, x_us])).float()  # [B_l + 2 B_u, F]
    t_logits = m.t_cls(t_feats)
    t_l, t_uw, t_us = t_logits.split([b_l, b_u, b_u])
    # 2. The teacher's supervised loss is part of its classifier loss in step 8.

    # 3. Student's labeled loss before its update.
    m.student.train()
    with torch.no_grad(), amp:
        s_old = F.cross_entropy(m.s_cls(m.student.encoder(x_l).float()), y_l)

    # 4. Pseudo labels from the weak view; student network learns them with SupCon on (weak, strong).
    pseudo = torch.softmax(t_uw.detach() / m.T, dim=1).argmax(dim=1)  # [B_u]
    with amp:
        z = m.student(torch.cat([x_uw, x_us])).float()  # [2 B_u, D]
    s_loss = m.supcon(torch.stack(z.split(b_u), dim=1), pseudo)  # features [B_u, 2, D]
    _update(m.opt_s, s_loss)

    # 5. Student classifier on features of the just-updated, frozen encoder; 6. the same features give s_new.
    with torch.no_grad(), amp:
        s_feats = m.student.encoder(x_l).float()  # [B_l, F]
    s_cls_loss = F.cross_entropy(m.s_cls(s_feats), y_l)
    _update(m.opt_s_cls, s_cls_loss)
    with torch.no_grad():
        s_new = F.cross_entropy(m.s_cls(s_feats), y_l)
    h = mpl_feedback(s_old, s_new, m.sign)

    # 7. Teacher network: SupCon on two views of the labeled batch.
    m.teacher.train()
    with amp:
        zt = m.teacher(torch.cat([x_l, x_l2])).float()  # [2 B_l, D]
    t_supcon = m.supcon(torch.stack(zt.split(b_l), dim=1), y_l)  # features [B_l, 2, D]
    _update(m.opt_t, t_supcon)

    # 8. Teacher classifier: supervised CE + h-weighted CE on its own strong-view predictions.
    t_loss = teacher_mpl_loss(t_l, y_l, t_us, h)
    _update(m.opt_t_cls, t_loss)
    return {"t_loss": t_loss.detach(), "t_supcon": t_supcon.detach(), "s_supcon": s_loss.detach(),
            "s_cls": s_cls_loss.detach(), "h": h, "pseudo_fake": pseudo.float().mean()}


def teacher_paths(cfg: dict) -> tuple[Path, Path]:
    mc, teacher_dir = cfg["mpl"], run_folder(cfg, "supcon")
    enc = resolve_path(mc["teacher_encoder"]) if mc["teacher_encoder"] else teacher_dir / "supcon_encoder.tar"
    cls = resolve_path(mc["teacher_classifier"]) if mc["teacher_classifier"] else teacher_dir / "supcon_classifier.tar"
    return enc, cls


def train(cfg: dict) -> dict:
    mc = cfg["mpl"]
    device = get_device(cfg["device"])

    # Data (checked before anything is trained): labeled (two views) and a separate unlabeled source
    prepare_data(cfg)
    labeled = build_samples(cfg["data"]["labeled"], cfg["data"], cfg["seed"], "labeled")
    unlabeled = build_samples(cfg["data"]["unlabeled"], cfg["data"], cfg["seed"], "unlabeled")

    # Teacher: from the SupCon stage, trained here first if its default checkpoint is missing
    enc_path, cls_path = teacher_paths(cfg)
    if not (enc_path.is_file() and cls_path.is_file()):
        if mc["teacher_encoder"] or mc["teacher_classifier"]:
            raise UserError(f"teacher checkpoint not found: {enc_path if not enc_path.is_file() else cls_path}")
        print(f"SupCon teacher not found at {enc_path.parent}: training it first (train_supcon.py)",
              file=sys.stderr, flush=True)
        train_supcon.train(cfg)

    gen = seed_everything(cfg["seed"])  # the same MPL run whether or not the teacher was trained just now
    run_dir, logger = prepare_run(cfg, "supconmpl")
    logger.info(f"SupCon-MPL: backbone {cfg['backbone']}, {mc['steps']} MPL steps + {mc['finetune_steps']}/"
                f"{mc['finetune_classifier_steps']} fine-tune steps on {device}; run folder {run_dir}; "
                f"labeled: {len(labeled)} images, unlabeled: {len(unlabeled)} images")
    balance = cfg["data"]["balance"]
    lab_batches = cycle(train_loader(labeled, cfg, mc["batch_labeled"], views=2, balance=balance, generator=gen))
    unl_batches = cycle(train_loader(unlabeled, cfg, mc["batch_unlabeled"], views=2, balance=False, generator=gen))

    # Models: teacher from the SupCon stage, student from `student_pretrained` (default: `pretrained`)
    feat_dim = cfg["supcon"]["feat_dim"]
    teacher = SupConNet(cfg["backbone"], "none", feat_dim)
    load_weights(teacher, enc_path)
    t_cls = LinearClassifier(teacher.dim)
    load_weights(t_cls, cls_path)
    student = SupConNet(cfg["backbone"], mc["student_pretrained"] or cfg["pretrained"], feat_dim)
    s_cls = LinearClassifier(student.dim)
    to = lambda mod: mod.to(device).to(memory_format=torch.channels_last)  # noqa: E731
    pair = MPLPair(to(teacher), t_cls.to(device), to(student), s_cls.to(device), cfg, device)
    logger.info(f"teacher loaded from {enc_path} and {cls_path}")

    # MPL loop
    def step(_: int) -> dict:
        x_l, x_l2, y_l = next(lab_batches)
        x_uw, x_us, _y_u = next(unl_batches)
        dev = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return mpl_step(pair, dev(x_l), dev(x_l2), dev(y_l), dev(x_uw), dev(x_us))

    run_steps("mpl", mc["steps"], step, logger, cfg["log_every"])

    # Fine-tune the student on the labeled data: SupCon, then its classifier on the frozen encoder
    pairs = train_loader(labeled, cfg, cfg["supcon"]["batch_size"], views=2, balance=balance, generator=gen)
    singles = train_loader(labeled, cfg, cfg["supcon"]["classifier_batch_size"], views=1, balance=balance,
                           generator=gen)
    opt = train_supcon.supcon_stage(student, pairs, mc["finetune_steps"], mc["finetune_lr"], mc["temperature"], cfg,
                                    device, logger, "finetune")
    paths = {"encoder": run_dir / "mpl_supcon_encoder.tar", "classifier": run_dir / "mpl_supcon_classifier.tar"}
    save_checkpoint(paths["encoder"], student, cfg, "supconmpl_encoder", mc["steps"] + mc["finetune_steps"], opt)
    opt = train_supcon.classifier_stage(student.encoder, s_cls, singles, mc["finetune_classifier_steps"],
                                        mc["finetune_lr"], cfg, device, logger, "finetune_classifier")
    save_checkpoint(paths["classifier"], s_cls, cfg, "supconmpl_classifier", mc["finetune_classifier_steps"], opt)
    logger.info(f"saved {paths['encoder']} and {paths['classifier']}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("train_supconmpl.py", __doc__,
                           "python train_supconmpl.py --config configs/demo.yaml mpl.steps=100")
    cfg = config_from_args(parser.parse_args(argv))
    train(cfg)
    return 0


if __name__ == "__main__":
    run_cli(main)
