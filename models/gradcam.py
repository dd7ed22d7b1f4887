"""Grad-CAM: where in the face crop a detector looks (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization", ICCV 2017).

For a detector (images -> logits [B, 2]: the baseline's network, or a SupCon encoder followed by its linear
classifier), the map of class c at the feature map A [B, K, h, w] of the backbone's last convolutional stage
is ReLU(sum_k alpha_k A_k) with alpha_k = the spatial mean of d logit_c / d A_k, upsampled (bilinear) to the
input size. The class is the detector's own decision (fake or real), so the map shows the evidence for what
it predicted. The stage is found by running the model once: the last module whose output is a feature map
with more than one cell (ResNet: layer4; EfficientNet: bn2). At 64 px a ResNet's last stage has 2 x 2 cells,
so the maps are coarse.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def last_feature_stage(model: nn.Module, img_size: int) -> str:
    """The name of the last module of `model` whose output is [B, K, h, w] with h * w > 1."""
    found: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: found.append(name)
                                     if torch.is_tensor(out) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1
                                     else None)
             for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    if not found:
        raise ValueError(f"{type(model).__name__} has no convolutional feature map at {img_size} px")
    return found[-1]


class GradCAM:
    """cam(x) -> (maps [B, H, W] in [0, 1] (each scaled by its own maximum; all zero when no evidence),
    P(fake) [B], predicted class [B]) for a batch x [B, 3, H, W] of normalised images."""

    def __init__(self, model: nn.Module, img_size: int, stage: str | None = None):
        self.model = model.eval()
        self.stage = stage or last_feature_stage(model, img_size)
        self.module = dict(model.named_modules())[self.stage]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        saved: dict[str, torch.Tensor] = {}
        hook = self.module.register_forward_hook(lambda mod, inp, out: saved.__setitem__("a", out))
        try:
            with torch.enable_grad():
                logits = self.model(x.requires_grad_(True)).float()  # [B, 2]
                pred = logits.argmax(1)  # [B]
                chosen = logits.gather(1, pred[:, None]).sum()  # each image's logit of its own decision
                grads, = torch.autograd.grad(chosen, saved["a"])  # [B, K, h, w]
        finally:
            hook.remove()
        a = saved["a"].detach().float()
        weights = grads.float().mean(dim=(2, 3), keepdim=True)  # alpha: [B, K, 1, 1]
        cam = F.relu((weights * a).sum(1, keepdim=True))  # [B, 1, h, w]
        cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]  # [B, H, W]
        peak = cam.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
        return (cam / peak).cpu(), torch.softmax(logits.detach(), 1)[:, 1].cpu(), pred.cpu()


def overlay(crop: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB uint8 crop [h, w, 3] with the map [H, W] (resized to the crop) as a colour heat map over it."""
    import cv2
    heat = cv2.resize(cam.astype(np.float32), (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET)[:, :, ::-1]
    return np.uint8(np.clip((1 - alpha) * crop + alpha * colour, 0, 255))


def save_cam_png(crop: np.ndarray, cam: np.ndarray, path, title: str) -> None:
    """The crop beside crop + heat map, with `title` (the score and the decision) above: one PNG."""
    from evaluation.plots import _pyplot
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(5, 2.8))
    for ax, image in zip(axes, (crop, overlay(crop, cam))):
        ax.imshow(image)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
