"""ImageNet weights without a network: which weights a backbone gets, and where they are found.

`pretrained: imagenet` means the weights the authors used: torchvision's IMAGENET1K_V1 ResNets (timm's
`tv_in1k` tags hold them under the same keys; the authors' `resnet101` option also built a ResNet50 with
them, see README) and torchvision's EfficientNet-B4/B5 IMAGENET1K_V1 (with torchvision's model); any other
timm name gets timm's default weights for it (or the tag it names: `resnet50.a1_in1k`).

Weights are never downloaded during training. They are looked up, in order, in
  1. <weights_dir>/<tag>.pth (written by `python -m models.fetch_weights NAME`, or copied there),
  2. the torch hub cache (~/.cache/torch/hub/checkpoints, $TORCH_HOME), where torchvision and timm keep
     downloads from their URLs,
  3. the Hugging Face hub cache (~/.cache/huggingface/hub, $HF_HOME), where timm keeps hub downloads;
and if none holds them the command stops before anything is trained, saying how to supply them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from utils import UserError, resolve_path

# The authors' backbones and the weights they used (torchvision IMAGENET1K_V1).
AUTHORS = {"resnet50": "resnet50.tv_in1k", "resnet101": "resnet101.tv_in1k",
           "resnet18": "resnet18.tv_in1k",  # DDT's encoder (torchvision's ImageNet ResNet-18)
           "efficientnet_b4": "efficientnet_b4.tv_in1k", "efficientnet_b5": "efficientnet_b5.tv_in1k"}
TORCHVISION = {"efficientnet_b4.tv_in1k": "EfficientNet_B4_Weights.IMAGENET1K_V1",
               "efficientnet_b5.tv_in1k": "EfficientNet_B5_Weights.IMAGENET1K_V1"}


@dataclass(frozen=True)
class WeightsSource:
    tag: str                 # e.g. resnet50.tv_in1k
    url: str | None          # where torchvision / timm would download them from
    hf_hub_id: str | None    # where timm would find them on the Hugging Face hub


def weights_source(backbone: str) -> WeightsSource:
    """The ImageNet weights `pretrained: imagenet` gives `backbone`."""
    tag = AUTHORS.get(backbone, backbone)
    if tag in TORCHVISION:
        import torchvision
        return WeightsSource(tag, torchvision.models.get_weight(TORCHVISION[tag]).url, None)
    import timm
    cfg = timm.models.get_pretrained_cfg(tag)
    if cfg is None:
        raise UserError(f"timm has no ImageNet weights for '{backbone}': set pretrained: none, or a weights file")
    if "." not in tag:
        tag = cfg.hf_hub_id.split("/")[-1] if cfg.hf_hub_id else tag  # the default tag, e.g. test_resnet.r160_in1k
    return WeightsSource(tag, cfg.url or None, cfg.hf_hub_id or None)


def find_weights(source: WeightsSource, weights_dir: str | os.PathLike) -> Path | None:
    """The first local file holding the weights (see the module docstring), or None. No network."""
    candidates = [resolve_path(weights_dir) / f"{source.tag}.{ext}" for ext in ("pth", "safetensors")]
    if source.url:
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(source.url))
    if source.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        for name in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(source.hf_hub_id, name)
            if isinstance(cached, str):
                candidates.append(Path(cached))
    return next((p for p in candidates if p.is_file()), None)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.bin (safe load) or .safetensors file (a 'state_dict' entry is unwrapped)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"cannot read weights file {path}: {str(err).splitlines()[0][:200]}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def imagenet_state_dict(backbone: str, weights_dir: str | os.PathLike) -> tuple[dict, WeightsSource, Path]:
    """The ImageNet state dict of `backbone` from a local file; a one-line UserError if there is none."""
    source = weights_source(backbone)
    path = find_weights(source, weights_dir)
    if path is None:
        raise UserError(f"ImageNet weights for {backbone} ({source.tag}) are not on this machine (looked in "
                        f"{resolve_path(weights_dir)}/, the torch and Hugging Face caches): run `python -m "
                        f"models.fetch_weights {backbone}` where there is internet and copy {weights_dir}/ here, "
                        "or set pretrained: none (random initialisation) or pretrained: <weights file>")
    return read_state_dict(path), source, path
