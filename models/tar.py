"""Tar's residual autoencoder (Lee, Tariq, Kim, Woo 2021): three residual encoder stages (16, 32, 64 channels,
stride 2 each), a 128-channel latent (stride 2 more: H/16 x W/16), and a mirrored decoder ending in tanh. The
latent's first 64 channels stand for "fake", the last 64 for "real" (losses/tar.py)."""
from __future__ import annotations

import torch
import torch.nn as nn

from losses.tar import tar_logits


class Every(nn.Module):
    """x[:, :, ::stride, ::stride]."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride]


class Block(nn.Module):
    """A basic residual block, conv-BN-ReLU-conv-BN, with a 1x1 projection shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        # the 1x1 projection of a strided block: every stride-th pixel, then a 1x1 convolution (the same function as
        # a strided 1x1 convolution, whose backward crashes on CPU for channels_last 8-channel inputs, torch 2.14)
        self.short = nn.Identity() if cin == cout and stride == 1 else nn.Sequential(
            Every(stride), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(Block(cin, cout, stride), Block(cout, cout), Block(cout, cout))


class ResAE(nn.Module):
    """forward(x [B, 3, H, W], keep [B, 128] or None) -> (latent [B, 128, H/16, W/16], reconstruction [B, 3, H, W]);
    `keep` zeroes latent channels before the decoder (the paper's selection block: the label's half)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(inplace=True), stage(8, 16, 2), stage(16, 32, 2),
                                     stage(32, 64, 2), nn.Conv2d(64, 128, 3, 2, 1), nn.BatchNorm2d(128),
                                     nn.LeakyReLU(1e-7))
        ups = []
        for cin, cout in ((128, 64), (64, 32), (32, 16), (16, 8)):
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), stage(cin, cout, 1)]
        self.decoder = nn.Sequential(*ups, nn.Conv2d(8, 3, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encoder(x)
        shown = latent if keep is None else latent * keep[:, :, None, None]
        return latent, self.decoder(shown)


def selection(labels: torch.Tensor, channels: int = 128) -> torch.Tensor:
    """[B, channels] masks keeping the label's half of the latent: fake (1) the first half, real (0) the second."""
    first = torch.arange(channels, device=labels.device) < channels // 2
    return torch.where(labels[:, None] == 1, first, ~first).float()


class TarDetector(nn.Module):
    """A ResAE as a detector: logits [B, 2] = log a_real, log a_fake of its latent (losses.tar.tar_logits)."""

    def __init__(self, net: ResAE):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tar_logits(self.net.encoder(x))
