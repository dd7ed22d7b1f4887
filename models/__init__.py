"""Models: timm backbones, the SupCon network, the linear classifier and the 2-class baseline.

Parameter names follow the authors' checkpoints (see README): the SupCon network is ``encoder.*`` (the
backbone without its classifier; timm's ResNets use torchvision's names) plus ``head.0.*``/``head.2.*``;
the linear classifier is ``fc.*``; the baseline is the backbone itself with a 2-way ``fc``.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.checkpoint import load_checkpoint
from models.weights import imagenet_state_dict
from utils import UserError

TORCHVISION_NETS = ("efficientnet_b4", "efficientnet_b5")  # the authors' EfficientNets: torchvision's models


def _torchvision_efficientnet(name: str, num_classes: int) -> nn.Module:
    """torchvision's EfficientNet as the authors used it: num_classes > 0 replaces the last linear layer
    (keys `features.*`, `classifier.1.*`, as their checkpoints); 0 gives the pooled-feature encoder."""
    import torchvision
    model = getattr(torchvision.models, name)()
    dim = model.classifier[1].in_features
    if num_classes:
        model.classifier[1] = nn.Linear(dim, num_classes)
    else:
        model.classifier = nn.Identity()  # the pooled features, no dropout
    model.num_features, model.num_classes = dim, num_classes
    return model


def _create(name: str, num_classes: int) -> nn.Module:
    if name in TORCHVISION_NETS:
        return _torchvision_efficientnet(name, num_classes)
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    except RuntimeError as err:
        if "Unknown model" in str(err) or "Invalid pretrained tag" in str(err):
            raise UserError(f"unknown backbone '{name}' (any timm model name, e.g. resnet50, efficientnet_b4)") \
                from None
        raise


def _imagenet_backbone(name: str, num_classes: int, weights_dir: str) -> nn.Module:
    """The backbone with the ImageNet weights of `name` (models/weights.py): from a local file, never the
    network; looked up before the model is built, so a missing file stops at once."""
    state, source, path = imagenet_state_dict(name, weights_dir)
    if name in TORCHVISION_NETS:
        model = _create(name, num_classes)
        fitting = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(fitting, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise UserError(f"weights file {path} does not fit {name}")
        return model
    try:
        return timm.create_model(source.tag, pretrained=True, num_classes=num_classes,
                                 pretrained_cfg_overlay=dict(state_dict=state))
    except RuntimeError as err:
        raise UserError(f"weights file {path} does not fit {name}: {str(err).splitlines()[0][:200]}") from None


def _load_local(model: nn.Module, path: str) -> None:
    """Backbone weights from a local state-dict file; the classifier layer is left as initialised."""
    state = load_checkpoint(path)["model_state_dict"]
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise UserError(f"pretrained file {path} has no weights that fit this backbone")
    model.load_state_dict(fitting, strict=False)


def build_backbone(name: str, pretrained: str | None = "none", num_classes: int = 0,
                   weights_dir: str = "weights") -> nn.Module:
    """A backbone; num_classes=0 gives the pooled-feature encoder (`.num_features` wide).

    pretrained: 'imagenet' (the authors' ImageNet weights for their backbones, timm's for other names;
    from a local file: models/weights.py), 'none' (random initialisation), or a path to a weights file.
    """
    if pretrained == "imagenet":
        return _imagenet_backbone(name, num_classes, weights_dir)
    model = _create(name, num_classes)
    if pretrained in (None, "none", False):
        return model
    if Path(str(pretrained)).is_file():
        _load_local(model, str(pretrained))
        return model
    raise UserError(f"pretrained must be 'imagenet', 'none' or an existing file, got '{pretrained}'")


class SupConNet(nn.Module):
    """Encoder + MLP projection head; forward returns L2-normalised `feat_dim`-d features [B, feat_dim]."""

    def __init__(self, backbone: str = "resnet50", pretrained: str | None = "none", feat_dim: int = 128,
                 weights_dir: str = "weights"):
        super().__init__()
        self.encoder = build_backbone(backbone, pretrained, num_classes=0, weights_dir=weights_dir)
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


def build_baseline(backbone: str = "resnet50", pretrained: str | None = "none",
                   weights_dir: str = "weights") -> nn.Module:
    """The pretrained baseline: the backbone with a 2-way classifier (torchvision-style `fc` for ResNets)."""
    return build_backbone(backbone, pretrained, num_classes=2, weights_dir=weights_dir)


class EncoderClassifier(nn.Module):
    """Encoder + linear classifier as one module returning logits (for evaluation and prediction)."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module):
        super().__init__()
        self.encoder, self.classifier = encoder, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))
