"""The loss of Tar (Lee, Tariq, Kim, Woo, "TAR: Generalized Forensic Framework to Detect Deepfakes using Weakly
Supervised Learning", IFIP SEC 2021): latent activations per class half, plus reconstruction."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def half_activations(latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_fake, a_real) [B]: the mean absolute activation of the latent's fake half (channels 0 .. C/2 - 1) and of
    its real half, each over its channels and the latent's H' x W' (the paper's / 14400 at a 15 x 15 latent)."""
    c = latent.shape[1] // 2
    a = latent.abs().mean(dim=(2, 3))            # [B, C]: per channel, the mean over H' x W' (the paper's / 225)
    return a[:, :c].mean(dim=1), a[:, c:].mean(dim=1)


class TARLoss(nn.Module):
    """TARLoss(recon_weight)(latent, reconstruction, image, labels): the sum over the batch's images of the
    activation loss, plus recon_weight (0.1) x the mean absolute error of the reconstruction.

    latent [B, C, H', W'] (C = 128: the first half stands for "fake", the second for "real"), reconstruction and
    image [B, 3, H, W], labels [B] (0 real, 1 fake). The activation loss of a real image pushes its fake half
    to 0 and its real half towards 1:

        sum_{c < C/2} mean_hw |h_c|  +  sum_{c >= C/2} | 1 - sum_hw |h_c| / (H' W' C/2) |

    and of a fake image the mirror. The normalisers follow the latent's H' x W' (the paper's 225 and 14,400 are
    those of its 240 px inputs). A scalar."""

    def __init__(self, recon_weight: float = 0.1):
        super().__init__()
        self.recon_weight = recon_weight

    def forward(self, latent: torch.Tensor, reconstruction: torch.Tensor, image: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        c = latent.shape[1] // 2
        per_channel = latent.abs().mean(dim=(2, 3))                        # [B, C] (mean over H' x W')
        fake_half, real_half = per_channel[:, :c], per_channel[:, c:]
        # the half to silence: summed channel means; the half to wake: |1 - its summed means / (C/2)| per channel
        real_img = fake_half.sum(1) + (1 - real_half / c).abs().sum(1)
        fake_img = real_half.sum(1) + (1 - fake_half / c).abs().sum(1)
        activation = torch.where(labels == 0, real_img, fake_img).sum()
        return activation + self.recon_weight * F.l1_loss(reconstruction, image)


def tar_logits(latent: torch.Tensor) -> torch.Tensor:
    """[B, 2] logits log a_real, log a_fake: their softmax is Tar's score P(fake) = a_fake / (a_fake + a_real),
    their argmax its decision (the more active half)."""
    a_fake, a_real = half_activations(latent)
    return torch.log(torch.stack([a_real, a_fake], dim=1) + 1e-12)
