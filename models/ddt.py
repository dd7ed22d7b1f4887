"""The DDT network (Aneja & Niessner 2020, Deep Distribution Transfer): an ImageNet ResNet up to and including
layer3, global average pooling, and two linear heads giving mu and log sigma^2 in R^d (d = 16)."""
from __future__ import annotations

import torch
import torch.nn as nn

from losses.ddt import ddt_logits
from models import build_backbone
from utils import UserError


class DDTNet(nn.Module):
    """forward(x [B, 3, H, W]) -> (mu [B, d], logvar [B, d]); `logits` gives the detector's [B, 2]."""

    def __init__(self, backbone: str = "resnet18", pretrained: str | None = "none", dim: int = 16,
                 weights_dir: str = "weights"):
        super().__init__()
        net = build_backbone(backbone, pretrained, num_classes=0, weights_dir=weights_dir)
        if not all(hasattr(net, k) for k in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3")):
            raise UserError(f"DDT needs a ResNet (its layer3), got backbone '{backbone}' (ddt.backbone: resnet18)")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act1, net.maxpool)
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        with torch.no_grad():
            channels = self.layer3(self.layer2(self.layer1(self.stem(torch.zeros(1, 3, 64, 64))))).shape[1]
        self.mu, self.logvar = nn.Linear(channels, dim), nn.Linear(channels, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.layer3(self.layer2(self.layer1(self.stem(x)))).mean(dim=(2, 3))  # [B, C] (layer3, pooled)
        return self.mu(f), self.logvar(f)


class DDTDetector(nn.Module):
    """A DDTNet as a detector: logits [B, 2] = -W(x, real), -W(x, fake) (losses.ddt.ddt_logits)."""

    def __init__(self, net: DDTNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ddt_logits(*self.net(x))
