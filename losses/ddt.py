"""The loss of Deep Distribution Transfer (DDT; Aneja & Niessner, "Generalized Zero and Few-Shot Transfer for
Facial Forgery Detection", arXiv 2006.11863, 2020)."""
from __future__ import annotations

import torch
import torch.nn as nn


def modes(dim: int, device=None) -> torch.Tensor:
    """The two classes' fixed modes [2, d]: real = (1, ..., 1, 0, ..., 0) (first d/2 ones), fake the mirror."""
    half = torch.arange(dim, device=device) < dim // 2
    return torch.stack([half, ~half]).float()


def wasserstein(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """W(x, c) [B, 2]: the 2-Wasserstein distance between N(|mu|, diag sigma^2) and N(m_c, I) for c = real, fake,
    sqrt(||abs(mu) - m_c||^2 + ||sigma - 1||^2), sigma = exp(logvar / 2). mu, logvar: [B, d]."""
    m = modes(mu.shape[1], mu.device)                                    # [2, d]
    spread = ((torch.exp(0.5 * logvar) - 1) ** 2).sum(dim=1, keepdim=True)  # [B, 1]
    centre = ((mu.abs()[:, None, :] - m[None]) ** 2).sum(dim=2)           # [B, 2]
    return torch.sqrt(centre + spread + 1e-12)


class DDTLoss(nn.Module):
    """DDTLoss(weight)(mu, logvar, labels): each image's distance to its own class's mode, weighted and
    normalised per batch as the paper's code:

        (w * sum_{real i} W(x_i, real) + sum_{fake j} W(x_j, fake)) / (n_fake + w * n_real)

    mu, logvar: [B, d]; labels [B] (0 real, 1 fake); w = `weight` (1 in the paper). A scalar."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        own = wasserstein(mu, logvar).gather(1, labels.view(-1, 1).long())[:, 0]  # [B]
        w = torch.where(labels == 0, self.weight, 1.0).to(own.dtype)
        return (w * own).sum() / w.sum()


def ddt_logits(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """[B, 2] logits -W(x, real), -W(x, fake): their argmax is the paper's decision (the nearer mode), and their
    softmax gives the score used for AUC, P(fake) = sigmoid(W(x, real) - W(x, fake))."""
    return -wasserstein(mu, logvar)
