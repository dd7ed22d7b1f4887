"""Meta Pseudo Labels teacher feedback (Pham et al., "Meta Pseudo Labels", CVPR 2021), first-order form."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mpl_feedback(s_loss_old: torch.Tensor, s_loss_new: torch.Tensor, sign: str = "new_minus_old") -> torch.Tensor:
    """The scalar h that weights the teacher's pseudo-label loss; no gradient flows through it.

    s_loss_old / s_loss_new: the student's labeled CE before / after its update on the pseudo labels.
    'new_minus_old' (default) is the sign of the SupCon-MPL authors and of the popular MPL re-implementation;
    'old_minus_new' follows the MPL paper's derivation (h > 0 when the student improved).
    """
    diff = (s_loss_new - s_loss_old).detach()
    if sign == "new_minus_old":
        return diff
    if sign == "old_minus_new":
        return -diff
    raise ValueError(f"sign must be 'new_minus_old' or 'old_minus_new', got {sign!r}")


def teacher_mpl_loss(t_logits_l: torch.Tensor, labels: torch.Tensor, t_logits_us: torch.Tensor,
                     h: torch.Tensor) -> torch.Tensor:
    """t_loss = CE(t_logits_l, labels) + h * CE(t_logits_us, argmax(t_logits_us)).

    t_logits_l: [B_l, C] teacher logits of the labeled batch; labels: [B_l];
    t_logits_us: [B_u, C] teacher logits of the strongly augmented unlabeled batch; h: scalar feedback.
    """
    hard_pseudo = t_logits_us.detach().argmax(dim=1)  # [B_u]
    return F.cross_entropy(t_logits_l, labels) + h * F.cross_entropy(t_logits_us, hard_pseudo)
