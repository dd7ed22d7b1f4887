"""Train SupCon-MPL: a SupCon teacher pseudo-labels unlabeled images, a student learns from them with
SupCon, and the change in the student's labeled loss (h) feeds back into the teacher's classifier
(Meta Pseudo Labels). Then the student is fine-tuned on the labeled data (SupCon, then its classifier)
and saved as the SupCon-MPL model. If the teacher's checkpoint is missing, the teacher is trained first.

Writes <out_dir>/<run_name>/supconmpl/{mpl_supcon_encoder.tar, mpl_supcon_classifier.tar, config.yaml, log.txt}.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

import train_supcon
from datasets import prepare_data, train_batches
from datasets.protocols import protocol_sets, record_splits, role_samples
from losses import SupConLoss, mpl_feedback, teacher_mpl_loss
from models import LinearClassifier, SupConNet
from utils import (Run, UserError, autocast, check_batch, is_main_process, config_from_args, config_parser, distribute, gather,
                   load_weights, make_optimizer, mean_over_ranks, prepare_run, resolve_path, run_cli, run_folder,
                   save_checkpoint, seed_everything, setup_device, unwrap)


class MPLPair:
    """Teacher and student (network = encoder + projection head, plus a linear classifier) and their optimizers.

    The four modules may be DistributedDataParallel wrappers (utils.distribute); the passes that train
    nothing go through the wrapped modules (unwrap) and need no gradient synchronisation.
    """

    def __init__(self, teacher: nn.Module, t_cls: nn.Module, student: nn.Module, s_cls: nn.Module,
                 cfg: dict, device: torch.device):
        mc = cfg["mpl"]
        self.teacher, self.t_cls, self.student, self.s_cls = teacher, t_cls, student, s_cls
        self.opt_t = make_optimizer(teacher.parameters(), mc["teacher_lr"])
        self.opt_t_cls = make_optimizer(t_cls.parameters(), mc["teacher_lr"])
        self.opt_s = make_optimizer(student.parameters(), mc["student_lr"])
        self.opt_s_cls = make_optimizer(s_cls.parameters(), mc["student_lr"])
        self.supcon = SupConLoss(temperature=mc["temperature"])
        self.T, self.sign = mc["T"], mc["feedback"]
        self.device, self.cfg = device, cfg


def plain_update(opt: torch.optim.Optimizer, loss: torch.Tensor, name: str) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def mpl_step(m: MPLPair, x_l: torch.Tensor, x_l2: torch.Tensor, y_l: torch.Tensor, x_uw: torch.Tensor,
             x_us: torch.Tensor, update: Callable = plain_update) -> dict[str, torch.Tensor]:
    """One SupCon-MPL step (method notes, steps 1-8). x_l, x_l2: two views of the labeled batch [B_l, 3, H, W];
    x_uw, x_us: weak and strong views of the unlabeled batch [B_u, 3, H, W]; y_l: labels [B_l].
    update(opt, loss, name) applies one optimizer update (the training loop's skips non-finite losses).

    Distributed: the tensors are this rank's part of the global batch; SupCon runs over the gathered
    global batch and s_old / s_new are averaged over ranks, so h (and the teacher's update) is the same on
    every rank and equals the single-process one. The student's labeled features after its update are
    computed once and serve both its classifier update and s_new (the reference code ran the encoder
    again for s_new).
    """
    b_l, b_u = x_l.shape[0], x_uw.shape[0]
    amp = autocast(m.device, m.cfg["amp"], m.cfg["amp_dtype"])
    teacher, student = unwrap(m.teacher), unwrap(m.student)

    # 1. Teacher encoder frozen (eval, no grad); gradient reaches the teacher classifier only.
    teacher.eval()
    with torch.no_grad(), amp:
        t_feats = teacher.encoder(torch.cat([x_l, x_uw, x_us])).float()  # [B_l + 2 B_u, F]
    t_logits = m.t_cls(t_feats)
    t_l, t_uw, t_us = t_logits.split([b_l, b_u, b_u])
    # 2. The teacher's supervised loss is part of its classifier loss in step 8.

    # 3. Student's labeled loss before its update.
    student.train()
    with torch.no_grad(), amp:
        s_old = mean_over_ranks(F.cross_entropy(unwrap(m.s_cls)(student.encoder(x_l).float()), y_l))

    # 4. Pseudo labels from the weak view; student network learns them with SupCon on (weak, strong).
    pseudo = torch.softmax(t_uw.detach() / m.T, dim=1).argmax(dim=1)  # [B_u]
    z = train_supcon.supcon_features(m.student, [x_uw, x_us], m.device, m.cfg)  # [B_u global, 2, D]
    s_loss = m.supcon(z, gather(pseudo))
    update(m.opt_s, s_loss, "student supcon loss")

    # 5. Student classifier on features of the just-updated, frozen encoder; 6. the same features give s_new.
    with torch.no_grad(), amp:
        s_feats = student.encoder(x_l).float()  # [B_l, F]
    s_cls_loss = F.cross_entropy(m.s_cls(s_feats), y_l)
    update(m.opt_s_cls, s_cls_loss, "student classifier loss")
    with torch.no_grad():
        s_new = mean_over_ranks(F.cross_entropy(unwrap(m.s_cls)(s_feats), y_l))
    h = mpl_feedback(s_old, s_new, m.sign)

    # 7. Teacher network: SupCon on two views of the labeled batch (global batch).
    m.teacher.train()
    zt = train_supcon.supcon_features(m.teacher, [x_l, x_l2], m.device, m.cfg)  # [B_l global, 2, D]
    t_supcon = m.supcon(zt, gather(y_l))
    update(m.opt_t, t_supcon, "teacher supcon loss")

    # 8. Teacher classifier: supervised CE + h-weighted CE on its own strong-view predictions.
    t_loss = teacher_mpl_loss(t_l, y_l, t_us, h)
    update(m.opt_t_cls, t_loss, "teacher MPL loss")
    return {"t_loss": t_loss.detach(), "t_supcon": t_supcon.detach(), "s_supcon": s_loss.detach(),
            "s_cls": s_cls_loss.detach(), "h": h, "pseudo_fake": pseudo.float().mean(), "pseudo": pseudo}


def mpl_step_fn(run: Run, pair: MPLPair, lab, unl, device: torch.device) -> Callable[[int], dict]:
    """The training loop's MPL step: the next labeled and unlabeled batches (two views each), mpl_step,
    and what it logs."""
    def step(i: int) -> dict:
        x_l, x_l2, y_l = (t.to(device, non_blocking=True) for t in run.batch(lab))
        x_uw, x_us, y_u = (t.to(device, non_blocking=True) for t in run.batch(unl))  # y_u: logging only
        out = mpl_step(pair, x_l, x_l2, y_l, x_uw, x_us, lambda opt, loss, name: run.update(opt, loss, name, i))
        # Agreement of the pseudo labels with the unlabeled set's true labels (never used for training).
        out["pseudo_acc"] = (out.pop("pseudo") == y_u).float().mean()
        out["images"] = 2 * (x_l.shape[0] + x_uw.shape[0])
        return out
    return step


def teacher_paths(cfg: dict) -> tuple[Path, Path]:
    mc, teacher_dir = cfg["mpl"], run_folder(cfg, "supcon")
    enc = resolve_path(mc["teacher_encoder"]) if mc["teacher_encoder"] else teacher_dir / "supcon_encoder.tar"
    cls = resolve_path(mc["teacher_classifier"]) if mc["teacher_classifier"] else teacher_dir / "supcon_classifier.tar"
    return enc, cls


def train(cfg: dict, resume: bool = False) -> dict:
    mc, sc, balance = cfg["mpl"], cfg["supcon"], cfg["data"]["balance"]
    device = setup_device(cfg)

    # Data (checked before anything is trained): labeled (two views) and a separate unlabeled source
    prepare_data(cfg)
    sets = protocol_sets(cfg)  # every set, test sets included: a missing root fails now, not after training
    labeled = role_samples(sets, "labeled")
    unlabeled = role_samples(sets, "unlabeled")
    check_batch(len(labeled), mc["batch_labeled"], "mpl.batch_labeled", "labeled")
    check_batch(len(unlabeled), mc["batch_unlabeled"], "mpl.batch_unlabeled", "unlabeled")
    check_batch(len(labeled), sc["batch_size"], "supcon.batch_size", "labeled")
    check_batch(len(labeled), sc["classifier_batch_size"], "supcon.classifier_batch_size", "labeled")

    # Teacher: from the SupCon stage, trained here first if its default checkpoint is missing
    enc_path, cls_path = teacher_paths(cfg)
    if not (enc_path.is_file() and cls_path.is_file()):
        if mc["teacher_encoder"] or mc["teacher_classifier"]:
            raise UserError(f"teacher checkpoint not found: {enc_path if not enc_path.is_file() else cls_path}")
        if is_main_process():
            print(f"SupCon teacher not found at {enc_path.parent}: training it first (train_supcon.py)",
                  file=sys.stderr, flush=True)
        train_supcon.train(cfg, resume)

    seed_everything(cfg["seed"])  # the same MPL run whether or not the teacher was trained just now
    run_dir, logger = prepare_run(cfg, "supconmpl")
    record_splits(sets, run_dir, logger)
    logger.info(f"SupCon-MPL: backbone {cfg['backbone']}, {mc['steps']} MPL steps + {mc['finetune_steps']}/"
                f"{mc['finetune_classifier_steps']} fine-tune steps on {device}; run folder {run_dir}; "
                f"labeled: {len(labeled)} images, unlabeled: {len(unlabeled)} images")

    # Models: teacher from the SupCon stage, student from `student_pretrained` (default: `pretrained`)
    teacher = SupConNet(cfg["backbone"], "none", sc["feat_dim"])
    load_weights(teacher, enc_path)
    t_cls = LinearClassifier(teacher.dim)
    load_weights(t_cls, cls_path)
    student = SupConNet(cfg["backbone"], mc["student_pretrained"] or cfg["pretrained"], sc["feat_dim"])
    s_cls = LinearClassifier(student.dim)
    pair = MPLPair(*(distribute(mod, device, cfg) for mod in (teacher, t_cls, student, s_cls)), cfg, device)
    opt_ft = make_optimizer(student.parameters(), mc["finetune_lr"])
    opt_ft_cls = make_optimizer(s_cls.parameters(), mc["finetune_lr"])
    run = Run(run_dir, cfg, logger, resume)
    run.register(teacher=pair.teacher, t_cls=pair.t_cls, student=pair.student, s_cls=pair.s_cls, opt_t=pair.opt_t,
                 opt_t_cls=pair.opt_t_cls, opt_s=pair.opt_s, opt_s_cls=pair.opt_s_cls, opt_ft=opt_ft,
                 opt_ft_cls=opt_ft_cls)
    run.restore()
    logger.info(f"teacher from {enc_path} and {cls_path}")

    # Stage 0: MPL steps, labeled and unlabeled iterators each endless
    lab = train_batches(labeled, cfg, mc["batch_labeled"], 2, balance, "mpl-labeled", run.start_of(0), device)
    unl = train_batches(unlabeled, cfg, mc["batch_unlabeled"], 2, False, "mpl-unlabeled", run.start_of(0), device)

    run.stage(0, "mpl", mc["steps"], mpl_step_fn(run, pair, lab, unl, device))

    # Stages 1-2: fine-tune the student on the labeled data: SupCon, then its classifier on the frozen encoder
    pairs = train_batches(labeled, cfg, sc["batch_size"], 2, balance, "finetune", run.start_of(1), device)
    run.stage(1, "finetune", mc["finetune_steps"], train_supcon.supcon_step(
        run, pair.student, opt_ft, pairs, SupConLoss(mc["temperature"]), device, cfg))
    paths = {"encoder": run_dir / "mpl_supcon_encoder.tar", "classifier": run_dir / "mpl_supcon_classifier.tar"}
    save_checkpoint(paths["encoder"], student, cfg, "supconmpl_encoder", mc["steps"] + mc["finetune_steps"], opt_ft)
    singles = train_batches(labeled, cfg, sc["classifier_batch_size"], 1, balance, "finetune-classifier",
                            run.start_of(2), device)
    run.stage(2, "finetune_classifier", mc["finetune_classifier_steps"], train_supcon.classifier_step(
        run, student.encoder, pair.s_cls, opt_ft_cls, singles, device, cfg))
    save_checkpoint(paths["classifier"], s_cls, cfg, "supconmpl_classifier", mc["finetune_classifier_steps"],
                    opt_ft_cls)
    run.finish()
    logger.info(f"saved {paths['encoder']} and {paths['classifier']}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("train_supconmpl.py", __doc__,
                           "python train_supconmpl.py --config configs/demo.yaml mpl.steps=100")
    args = parser.parse_args(argv)
    train(config_from_args(args), args.resume)
    return 0


if __name__ == "__main__":
    run_cli(main)
