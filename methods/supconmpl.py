"""SupCon-MPL: a SupCon teacher pseudo-labels unlabeled images, a student learns from them with SupCon, and
the change in the student's labeled loss (h) feeds back into the teacher's classifier (Meta Pseudo Labels).
Then the student is fine-tuned on the labeled data (SupCon, then its classifier) and saved as the SupCon-MPL
model. If the teacher's checkpoint is missing, the teacher is trained first (methods.supcon)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets.loaders import mpl_streams, train_batches
from datasets.protocols import labels_known, record_splits, role_samples
from engine.checkpoint import load_weights
from engine.dist import distribute, gather, is_main_process, mean_over_ranks, unwrap
from engine.release import release_paths
from engine.run import RunOptions, start_run
from engine.setup import prepare
from engine.update import make_optimizer
from losses import SupConLoss, mpl_feedback, teacher_mpl_loss
from methods import supcon
from models import EncoderClassifier, LinearClassifier, SupConNet
from utils import UserError, resolve_path, seed_everything

STAGES = ["mpl", "finetune", "finetune_classifier"]


class MPLPair:
    """Teacher and student (network = encoder + projection head, plus a linear classifier), their optimizers,
    the SupCon loss and the feedback settings of the `mpl` config section; `amp` is the autocast context.

    The four modules may be DistributedDataParallel wrappers (engine.dist.distribute); the passes that train
    nothing go through the wrapped modules (unwrap) and need no gradient synchronisation. In mpl_step each
    rank has its part of the global batch; SupCon runs over the gathered global batch and s_old / s_new are
    averaged over ranks, so h (and the teacher's update) is the same on every rank and equals the
    single-process one. The student's labeled features after its update are computed once and serve both
    its classifier update and s_new (the reference code ran the encoder again for s_new).
    """

    def __init__(self, teacher: nn.Module, t_cls: nn.Module, student: nn.Module, s_cls: nn.Module, mc: dict, amp):
        self.teacher, self.t_cls, self.student, self.s_cls = teacher, t_cls, student, s_cls
        self.opt_t = make_optimizer(teacher.parameters(), mc["teacher_lr"])
        self.opt_t_cls = make_optimizer(t_cls.parameters(), mc["teacher_lr"])
        self.opt_s = make_optimizer(student.parameters(), mc["student_lr"])
        self.opt_s_cls = make_optimizer(s_cls.parameters(), mc["student_lr"])
        self.supcon = SupConLoss(temperature=mc["temperature"])
        self.T, self.sign, self.amp = mc["T"], mc["feedback"], amp

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_t": self.opt_t, "opt_t_cls": self.opt_t_cls, "opt_s": self.opt_s, "opt_s_cls": self.opt_s_cls}


def plain_update(opt: torch.optim.Optimizer, loss: torch.Tensor, name: str) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def mpl_step(m: MPLPair, x_l: torch.Tensor, x_l2: torch.Tensor, y_l: torch.Tensor, x_uw: torch.Tensor,
             x_us: torch.Tensor, y_u: torch.Tensor | None = None, update: Callable = plain_update
             ) -> dict[str, torch.Tensor]:
    """One SupCon-MPL step (method notes, steps 1-8). x_l, x_l2: two views of the labeled batch [B_l, 3, H, W];
    x_uw, x_us: weak and strong views of the unlabeled batch [B_u, 3, H, W]; y_l: labels [B_l]; y_u: the
    unlabeled images' true labels [B_u] where known, for the logged pseudo-label accuracy only (never used
    for training). update(opt, loss, name) applies one optimizer update (the loop's skips non-finite losses).
    Distributed: the tensors are this rank's part of the global batch (see MPLPair).
    """
    b_l, b_u = x_l.shape[0], x_uw.shape[0]
    amp = m.amp
    teacher, student = unwrap(m.teacher), unwrap(m.student)

    # 1. Teacher encoder frozen (eval, no grad); gradient reaches the teacher classifier only.
    teacher.eval()
    with torch.no_grad(), amp:
        t_feats = teacher.encoder(torch.cat([x_l, x_uw, x_us])).float()  # [B_l + 2 B_u, F]
    t_logits = m.t_cls(t_feats)
    t_l, t_uw, t_us = t_logits.split([b_l, b_u, b_u])
    # 2. The teacher's supervised loss is part of its classifier loss in step 8.

    # 3. Student's labeled loss before its update, in eval mode (running batch-norm statistics, which the
    #    labeled batch does not update), as the authors.
    student.eval()
    with torch.no_grad(), amp:
        s_old = mean_over_ranks(F.cross_entropy(unwrap(m.s_cls)(student.encoder(x_l).float()), y_l))

    # 4. Pseudo labels from the weak view; student network (train mode) learns them with SupCon on (weak, strong).
    pseudo = torch.softmax(t_uw.detach() / m.T, dim=1).argmax(dim=1)  # [B_u]
    student.train()
    z = supcon.supcon_features(m.student, [x_uw, x_us], amp)  # [B_u global, 2, D]
    s_loss = m.supcon(z, gather(pseudo))
    update(m.opt_s, s_loss, "student supcon loss")

    # 5. Student classifier on features of the just-updated, frozen encoder in eval mode; 6. the same
    #    features give s_new (the encoder does not change in between). Then back to train mode.
    student.eval()
    with torch.no_grad(), amp:
        s_feats = student.encoder(x_l).float()  # [B_l, F]
    s_cls_loss = F.cross_entropy(m.s_cls(s_feats), y_l)
    update(m.opt_s_cls, s_cls_loss, "student classifier loss")
    with torch.no_grad():
        s_new = mean_over_ranks(F.cross_entropy(unwrap(m.s_cls)(s_feats), y_l))
    student.train()
    h = mpl_feedback(s_old, s_new, m.sign)

    # 7. Teacher network: SupCon on two views of the labeled batch (global batch).
    m.teacher.train()
    zt = supcon.supcon_features(m.teacher, [x_l, x_l2], amp)  # [B_l global, 2, D]
    t_supcon = m.supcon(zt, gather(y_l))
    update(m.opt_t, t_supcon, "teacher supcon loss")

    # 8. Teacher classifier: supervised CE + h-weighted CE on its own strong-view predictions.
    t_loss = teacher_mpl_loss(t_l, y_l, t_us, h)
    update(m.opt_t_cls, t_loss, "teacher MPL loss")
    out = {"t_loss": t_loss.detach(), "t_supcon": t_supcon.detach(), "s_supcon": s_loss.detach(),
           "s_cls": s_cls_loss.detach(), "h": h, "pseudo_fake": pseudo.float().mean()}
    if y_u is not None:
        out["pseudo_acc"] = (pseudo == y_u).float().mean()
    return out


def teacher_paths(cfg: dict) -> tuple[Path, Path]:
    """The teacher's release files: mpl.teacher_encoder / mpl.teacher_classifier, else the SupCon run's."""
    mc, default = cfg["mpl"], release_paths(cfg, "supcon")
    enc = resolve_path(mc["teacher_encoder"]) if mc["teacher_encoder"] else default["encoder"]
    cls = resolve_path(mc["teacher_classifier"]) if mc["teacher_classifier"] else default["classifier"]
    return enc, cls


def ensure_teacher(cfg: dict, opts: RunOptions) -> tuple[Path, Path]:
    """The teacher's files, trained first (methods.supcon) if the default ones are missing."""
    mc = cfg["mpl"]
    enc_path, cls_path = teacher_paths(cfg)
    if not (enc_path.is_file() and cls_path.is_file()):
        if mc["teacher_encoder"] or mc["teacher_classifier"]:
            raise UserError(f"teacher checkpoint not found: {enc_path if not enc_path.is_file() else cls_path}")
        if is_main_process():
            print(f"SupCon teacher not found at {enc_path.parent}: training it first (train_supcon.py)",
                  file=sys.stderr, flush=True)
        supcon.train(cfg, RunOptions(opts.resume, opts.allow_data_change))  # (never --overwrite the teacher)
    return enc_path, cls_path


def train(cfg: dict, opts: RunOptions = RunOptions()) -> dict:
    mc, sc, balance = cfg["mpl"], cfg["supcon"], cfg["data"]["balance"]
    t = prepare(cfg)  # device, seed, CUDA graphs, autocast, the data sets (checked before anything is trained)
    labeled = role_samples(t.sets, "labeled", {"mpl.batch_labeled": mc["batch_labeled"],
                                               "supcon.batch_size": sc["batch_size"],
                                               "supcon.classifier_batch_size": sc["classifier_batch_size"]})
    unlabeled = role_samples(t.sets, "unlabeled", {"mpl.batch_unlabeled": mc["batch_unlabeled"]})

    # Teacher: from the SupCon stage, trained here first if its default checkpoint is missing
    enc_path, cls_path = ensure_teacher(cfg, opts)
    seed_everything(cfg["seed"])  # the same MPL run whether or not the teacher was trained just now

    # Models: teacher from the SupCon stage, student from `student_pretrained` (default: `pretrained`)
    teacher = SupConNet(cfg["backbone"], "none", sc["feat_dim"])
    load_weights(teacher, enc_path)
    t_cls = LinearClassifier(teacher.dim)
    load_weights(t_cls, cls_path)
    student = SupConNet(cfg["backbone"], mc["student_pretrained"] or cfg["pretrained"], sc["feat_dim"],
                        cfg["weights_dir"])
    s_cls = LinearClassifier(student.dim)
    pair = MPLPair(*(distribute(mod, t.device, cfg) for mod in (teacher, t_cls, student, s_cls)), mc, t.amp)
    opt_ft, opt_ft_cls = make_optimizer(student.parameters(), mc["finetune_lr"]), \
        make_optimizer(s_cls.parameters(), mc["finetune_lr"])
    run = start_run(cfg, "supconmpl", STAGES, t.sets, t.device, opts, t.graphs, teacher=pair.teacher,
                    t_cls=pair.t_cls, student=pair.student, s_cls=pair.s_cls, **pair.optimizers(), opt_ft=opt_ft,
                    opt_ft_cls=opt_ft_cls)
    record_splits(cfg, t.sets, run.dir)
    run.logger.info(f"SupCon-MPL: backbone {cfg['backbone']}, {mc['steps']} MPL steps + {mc['finetune_steps']}/"
                    f"{mc['finetune_classifier_steps']} fine-tune steps on {t.device}; run folder {run.dir}; "
                    f"labeled: {len(labeled)} images, unlabeled: {len(unlabeled)} images")
    for note in [f"teacher from {enc_path} and {cls_path}", *t.notes]:
        run.logger.info(note)

    # Stage 1: MPL steps on the two endless streams (labeled: two views, unlabeled: weak and strong)
    stage = run.stage("mpl", mc["steps"])
    detector = EncoderClassifier(student.encoder, s_cls)  # the student as a detector (validation)
    known = labels_known(unlabeled, run.logger)  # their true labels, for the logged pseudo-label accuracy only
    stage.run(lambda x_l, x_l2, y_l, x_uw, x_us, y_u: mpl_step(pair, x_l, x_l2, y_l, x_uw, x_us, y_u if known else None,
                                                               run.update),
              list(mpl_streams(labeled, unlabeled, cfg, 2, stage.start, t.device)), list(pair.optimizers().values()),
              val=run.val.classifier(detector))  # logged; not a release, so nothing is selected

    # Stages 2-3: fine-tune the student on the labeled data: SupCon, then its classifier on the frozen encoder
    stage = run.stage("finetune", mc["finetune_steps"])
    criterion = SupConLoss(mc["temperature"])
    stage.run(lambda v1, v2, y: supcon.supcon_step(pair.student, opt_ft, criterion, v1, v2, y, run.update, t.amp),
              train_batches(labeled, cfg, sc["batch_size"], 2, balance, "finetune", stage.start, t.device), [opt_ft],
              val=run.val.supcon(student, criterion, keep=student))
    encoder_path = run.save_release("encoder", student, "supconmpl_encoder", mc["steps"] + mc["finetune_steps"], opt_ft)
    stage = run.stage("finetune_classifier", mc["finetune_classifier_steps"])
    stage.run(lambda x, y: supcon.classifier_step(student.encoder, pair.s_cls, opt_ft_cls, x, y, run.update, t.amp),
              train_batches(labeled, cfg, sc["classifier_batch_size"], 1, balance, "finetune-classifier",
                            stage.start, t.device), [opt_ft_cls], val=run.val.classifier(detector, keep=s_cls))
    classifier_path = run.save_release("classifier", s_cls, "supconmpl_classifier", mc["finetune_classifier_steps"],
                                       opt_ft_cls, belongs_to=encoder_path, detector=detector)
    run.finish()
    run.logger.info(f"saved {encoder_path} and {classifier_path}")
    return {"encoder": encoder_path, "classifier": classifier_path}
