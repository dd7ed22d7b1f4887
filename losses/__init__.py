"""Losses: supervised contrastive loss and the Meta Pseudo Labels teacher feedback."""
from losses.supcon import SupConLoss
from losses.mpl import mpl_feedback, teacher_mpl_loss

__all__ = ["SupConLoss", "mpl_feedback", "teacher_mpl_loss"]
