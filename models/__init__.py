"""Models: timm backbones, the SupCon network, the linear classifier and the 2-class baseline.

Parameter names follow the authors' checkpoints (see README): the SupCon network is ``encoder.*`` (the
backbone without its classifier; timm's ResNets use torchvision's names) plus ``head.0.*``/``head.2.*``;
the linear classifier is ``fc.*``; the baseline is the backbone itself with a 2-way ``fc``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.checkpoint import load_checkpoint
from utils import UserError


def _create(name: str, num_classes: int) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise UserError(f"unknown backbone '{name}' (any timm model name, e.g. resnet50, efficientnet_b4)") from None
        raise


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """A quick connection probe, so that an offline machine does not wait through the hub's retries."""
    import socket
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_imagenet(model: nn.Module, name: str) -> None:
    """ImageNet weights from the hub when online; offline, one line and random initialisation."""
    if not _hub_reachable():
        print(f"warning: offline, ImageNet weights for {name} cannot be downloaded; continuing from random "
              "initialisation (set pretrained to a local weights file to use them offline)", file=sys.stderr)
        return
    try:
        ref = timm.create_model(name, pretrained=True, num_classes=model_num_classes(model))
    except Exception as err:  # no weights for this name, hub error
        print(f"warning: ImageNet weights for {name} unavailable ({type(err).__name__}); "
              "continuing from random initialisation", file=sys.stderr)
        return
    model.load_state_dict(ref.state_dict(), strict=False)


def model_num_classes(model: nn.Module) -> int:
    return getattr(model, "num_classes", 0)


def _load_local(model: nn.Module, path: str) -> None:
    """Backbone weights from a local state-dict file; the classifier layer is left as initialised."""
    state = load_checkpoint(path)["model_state_dict"]
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise UserError(f"pretrained file {path} has no weights that fit this backbone")
    model.load_state_dict(fitting, strict=False)


def build_backbone(name: str, pretrained: str | None = "none", num_classes: int = 0) -> nn.Module:
    """A timm model; num_classes=0 gives the pooled-feature encoder (`.num_features` wide).

    pretrained: 'imagenet' (hub, only when online), 'none', or a path to a local weights file.
    """
    model = _create(name, num_classes)
    if pretrained in (None, "none", False):
        return model
    if pretrained == "imagenet":
        _load_imagenet(model, name)
    elif Path(str(pretrained)).is_file():
        _load_local(model, str(pretrained))
    else:
        raise UserError(f"pretrained must be 'imagenet', 'none' or an existing file, got '{pretrained}'")
    return model


class SupConNet(nn.Module):
    """Encoder + MLP projection head; forward returns L2-normalised `feat_dim`-d features [B, feat_dim]."""

    def __init__(self, backbone: str = "resnet50", pretrained: str | None = "none", feat_dim: int = 128):
        super().__init__()
        self.encoder = build_backbone(backbone, pretrained, num_classes=0)
        dim = self.encoder.num_features
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, feat_dim))

    @property
    def dim(self) -> int:
        return self.encoder.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(x)), dim=1)


class LinearClassifier(nn.Module):
    """Linear 2-way classifier on encoder features: logits [B, 2] (0 = real, 1 = fake)."""

    def __init__(self, dim: int, num_classes: int = 2):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def build_baseline(backbone: str = "resnet50", pretrained: str | None = "none") -> nn.Module:
    """The pretrained baseline: the backbone with a 2-way classifier (torchvision-style `fc` for ResNets)."""
    return build_backbone(backbone, pretrained, num_classes=2)


class EncoderClassifier(nn.Module):
    """Encoder + linear classifier as one module returning logits (for evaluation and prediction)."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module):
        super().__init__()
        self.encoder, self.classifier = encoder, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))
