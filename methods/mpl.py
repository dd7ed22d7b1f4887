"""Vanilla Meta Pseudo Labels (Pham et al., "Meta Pseudo Labels", CVPR 2021; as in its widely used
re-implementation kekmodel/MPL-pytorch): the baseline of the paper's Table 2 ("MPL [24]").

Teacher and student are the baseline's network (backbone + 2-way head). One step: the teacher pseudo-labels
the weak view of unlabeled images, the student learns those hard labels on the strong view with cross-entropy,
and the change of the student's labeled loss (h, same sign setting as SupCon-MPL) weights the teacher's loss on
its own strong-view predictions, with UDA consistency as kekmodel's MPL and the MPL paper. Then the student is
fine-tuned on the labeled data with cross-entropy and saved as mpl.tar.

Like for like with SupCon-MPL (`mpl_options`, the defaults): the teacher starts from labeled training (the
baseline's release, trained first when missing, as SupCon-MPL's teacher starts from its SupCon stage), the
student from `pretrained`, and the student's fine-tune runs at SupCon-MPL's fine-tune batch. kekmodel's pure
form: `mpl_options.teacher_start=pretrained`; the strong view's RandAugment: `aug.unlabeled_strong.randaugment`.
Options off by default: a moving-average baseline for h, an EMA of the student as the released model.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import ModelEmaV3

from datasets.loaders import mpl_streams, train_batches
from datasets.protocols import labels_known, record_splits, role_samples
from engine.checkpoint import load_weights
from engine.dist import distribute, is_main_process, mean_over_ranks, unwrap
from engine.release import release_paths
from engine.run import RunOptions, start_run
from engine.setup import prepare
from engine.update import make_optimizer
from losses import mpl_feedback, teacher_mpl_loss
from methods import pt
from methods.pt import pt_step
from models import build_baseline
from utils import UserError, resolve_path, seed_everything

STAGES = ["mpl", "finetune"]


class VanillaMPL:
    """Teacher and student networks, their optimizers, and the feedback settings (`mpl` and `mpl_options`
    sections); `amp` is the autocast context. The student's EMA copy is kept when `mpl_options.ema` > 0."""

    def __init__(self, teacher: nn.Module, student: nn.Module, mc: dict, options: dict, amp):
        self.teacher, self.student, self.amp = teacher, student, amp
        self.opt_t = make_optimizer(teacher.parameters(), mc["teacher_lr"])
        self.opt_s = make_optimizer(student.parameters(), mc["student_lr"])
        self.T, self.sign, self.o = mc["T"], mc["feedback"], options
        self.baseline = torch.zeros(())  # moving average of h (used when h_baseline > 0)
        self.steps = 0  # MPL steps done (UDA's warm-up); a stage sets it to where it starts
        # timm's EMA of every state_dict entry (integer buffers copied); its copy of the student is .module
        self.ema = ModelEmaV3(unwrap(student), decay=options["ema"]) if options["ema"] > 0 else None

    def state_dict(self) -> dict:
        return {"baseline": self.baseline, "ema": self.ema.module.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.baseline = state["baseline"]
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])


def uda_loss(t_uw: torch.Tensor, t_us: torch.Tensor, T: float, threshold: float) -> torch.Tensor:
    """UDA consistency (Xie et al. 2020): the teacher's strong-view prediction matches its sharpened weak-view
    one (soft targets, no gradient), on the images whose weak-view confidence reaches `threshold`."""
    soft = torch.softmax(t_uw.detach() / T, dim=1)  # [B_u, 2]
    mask = (soft.max(dim=1).values >= threshold).float()
    return (-(soft * F.log_softmax(t_us, dim=1)).sum(dim=1) * mask).mean()


def mpl_step(m: VanillaMPL, x_l: torch.Tensor, y_l: torch.Tensor, x_uw: torch.Tensor, x_us: torch.Tensor,
             y_u: torch.Tensor | None, update: Callable) -> dict[str, torch.Tensor]:
    """One vanilla MPL step (step number m.steps, counted here). x_l: labeled batch [B_l, 3, H, W] with labels
    y_l [B_l]; x_uw, x_us: weak and strong views of the unlabeled batch [B_u, 3, H, W]; y_u: their true labels
    where known, for the logged pseudo-label accuracy only. update(opt, loss, name) applies an update."""
    b_l, b_u = x_l.shape[0], x_uw.shape[0]
    o = m.o
    m.teacher.train()
    m.student.train()

    # 1. Teacher logits of [x_l, x_uw, x_us] (with gradient: the teacher is trained end to end).
    with m.amp:
        t_l, t_uw, t_us = m.teacher(torch.cat([x_l, x_uw, x_us])).float().split([b_l, b_u, b_u])
    t_loss_l = F.cross_entropy(t_l, y_l)

    # 2. Hard pseudo labels from the weak view: argmax softmax(t_uw / T) = argmax t_uw.
    pseudo = torch.softmax(t_uw.detach() / m.T, dim=1).argmax(dim=1)  # [B_u]

    # 3. Student: labeled loss before its update (the same forward), then learns the pseudo labels.
    with m.amp:
        s_l, s_us = m.student(torch.cat([x_l, x_us])).float().split([b_l, b_u])
    s_old = mean_over_ranks(F.cross_entropy(s_l.detach(), y_l))
    s_loss = F.cross_entropy(s_us, pseudo)
    update(m.opt_s, s_loss, "student loss")
    if m.ema is not None:
        m.ema.update(unwrap(m.student))

    # 4. The student's labeled loss after its update; feedback h (optionally minus its moving average).
    with torch.no_grad(), m.amp:
        s_new = mean_over_ranks(F.cross_entropy(m.student(x_l).float(), y_l))
    h = mpl_feedback(s_old, s_new, m.sign)
    if o["h_baseline"] > 0:
        m.baseline = o["h_baseline"] * m.baseline.to(h) + (1 - o["h_baseline"]) * h
        h = h - m.baseline

    # 5. Teacher: supervised CE + h-weighted CE on its own strong-view predictions (+ UDA if asked).
    t_loss = teacher_mpl_loss(t_l, y_l, t_us, h)
    if o["uda"]:
        weight = o["uda_weight"] * min(1.0, (m.steps + 1) / max(o["uda_warmup"], 1))
        t_loss = t_loss + weight * uda_loss(t_uw, t_us, m.T, o["uda_threshold"])
    update(m.opt_t, t_loss, "teacher loss")
    m.steps += 1
    out = {"t_loss": t_loss.detach(), "t_loss_l": t_loss_l.detach(), "s_loss": s_loss.detach(), "h": h,
           "pseudo_fake": pseudo.float().mean()}
    if y_u is not None:
        out["pseudo_acc"] = (pseudo == y_u).float().mean()
    return out


def teacher_start(cfg: dict, opts: RunOptions) -> Path | None:
    """The baseline's release the teacher starts from (trained first with methods.pt if the default one is
    missing), or None for mpl_options.teacher_start=pretrained."""
    o = cfg["mpl_options"]
    if o["teacher_start"] == "pretrained":
        return None
    path = resolve_path(o["teacher_weights"]) if o["teacher_weights"] else release_paths(cfg, "pt")["weights"]
    if not path.is_file():
        if o["teacher_weights"]:
            raise UserError(f"mpl_options.teacher_weights not found: {path}")
        if is_main_process():
            print(f"the MPL teacher starts from the baseline, not found at {path}: training it first (train_pt.py)",
                  file=sys.stderr, flush=True)
        pt.train(cfg, RunOptions(opts.resume, opts.allow_data_change))
    return path


def train(cfg: dict, opts: RunOptions = RunOptions()) -> dict:
    mc, balance = cfg["mpl"], cfg["data"]["balance"]
    ft_batch = cfg["mpl_options"]["finetune_batch"] or cfg["supcon"]["batch_size"]
    # device, seed, autocast, the data sets (checked before anything is written); eager steps (the feedback's
    # moving average and the EMA are host-side state)
    t = prepare(cfg, graphed=False)
    labeled = role_samples(t.sets, "labeled", {"mpl.batch_labeled": mc["batch_labeled"],
                                               "mpl_options.finetune_batch": ft_batch})
    unlabeled = role_samples(t.sets, "unlabeled", {"mpl.batch_unlabeled": mc["batch_unlabeled"]})
    start = teacher_start(cfg, opts)
    seed_everything(cfg["seed"])  # the same MPL run whether or not the baseline was trained just now

    # Models: the baseline's network; the teacher from the baseline's release (or `pretrained`), the student
    # from `pretrained` (mpl.student_pretrained)
    teacher = build_baseline(cfg["backbone"], "none" if start else cfg["pretrained"], cfg["weights_dir"])
    if start:
        load_weights(teacher, start)
    student = build_baseline(cfg["backbone"], mc["student_pretrained"] or cfg["pretrained"], cfg["weights_dir"])
    m = VanillaMPL(distribute(teacher, t.device, cfg), distribute(student, t.device, cfg), mc, cfg["mpl_options"],
                   t.amp)
    opt_ft = make_optimizer(m.student.parameters(), mc["finetune_lr"])
    run = start_run(cfg, "mpl", STAGES, t.sets, t.device, opts, t.graphs, teacher=m.teacher,
                    student=m.student, opt_t=m.opt_t, opt_s=m.opt_s, opt_ft=opt_ft, mpl=m)
    record_splits(cfg, t.sets, run.dir)
    run.logger.info(f"MPL: backbone {cfg['backbone']}, {mc['steps']} MPL steps + {mc['finetune_steps']} fine-tune "
                    f"steps (batch {ft_batch}) on {t.device}; run folder {run.dir}; labeled: {len(labeled)}, "
                    f"unlabeled: {len(unlabeled)}; teacher from {start or cfg['pretrained']}; UDA "
                    f"{'on' if cfg['mpl_options']['uda'] else 'off'}")
    for note in t.notes:
        run.logger.info(note)

    # Stage 1: MPL steps on the two endless streams (labeled: one view, unlabeled: weak and strong)
    stage = run.stage("mpl", mc["steps"])
    m.steps = stage.start
    known = labels_known(unlabeled, run.logger)  # their true labels, for the logged pseudo-label accuracy only
    stage.run(lambda x_l, y_l, x_uw, x_us, y_u: mpl_step(m, x_l, y_l, x_uw, x_us, y_u if known else None, run.update),
              list(mpl_streams(labeled, unlabeled, cfg, 1, stage.start, t.device)),
              val=run.val.classifier(m.student))  # logged; not a release, so nothing is selected

    # Stage 2: fine-tune the student (its EMA, if kept) on the labeled data with cross-entropy; save it
    stage = run.stage("finetune", mc["finetune_steps"])
    if m.ema is not None and stage.start == 0:
        unwrap(m.student).load_state_dict(m.ema.module.state_dict())  # the averaged weights are fine-tuned
    singles = train_batches(labeled, cfg, ft_batch, 1, balance, "finetune", stage.start, t.device)
    stage.run(lambda x, y: pt_step(m.student, opt_ft, x, y, run.update, t.amp), singles,
              val=run.val.classifier(m.student, keep=m.student))
    path = run.save_release("weights", m.student, "mpl", mc["steps"] + mc["finetune_steps"], opt_ft,
                            detector=m.student)
    run.finish()
    run.logger.info(f"saved {path}")
    return {"weights": path}
