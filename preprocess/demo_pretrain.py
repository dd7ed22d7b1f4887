"""The demo's stand-in for ImageNet weights.

The paper's networks start from ImageNet weights: features that already respond to texture, sharpness and
compression. The demo's tiny backbone has none to start from, and from random initialisation the
supervised contrastive loss sits on its collapsed value (every embedding alike) for hundreds of steps
before the labels pull the classes apart. This module gives the demo what ImageNet gives the paper: a
backbone pretrained on a generic task, on real pixels only, without any fake image or real/fake label.

Pretext: crops of the real sample photographs (the train part of each, as the demo's train videos) are
left clean or degraded in one of four generic ways (Gaussian blur, down-and-up resampling, added noise,
strong JPEG), and the network learns which. Nothing here is a manipulated face region. The encoder's
weights are written to <demo>/pretrained-<backbone>.pth; configs/demo.yaml sets them as `pretrained`
for all three methods alike (the baseline, the SupCon teacher and the SupCon-MPL student).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

PRETEXT = ("clean", "blur", "resample", "noise", "jpeg")


def _degrade(img: np.ndarray, kind: int, rng: np.random.Generator, compress) -> np.ndarray:
    if kind == 1:
        return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 1.6))
    if kind == 2:
        side = img.shape[0]
        small = cv2.resize(img, (max(4, int(side * rng.uniform(0.3, 0.6))),) * 2, interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    if kind == 3:
        return np.clip(img + rng.normal(0, rng.uniform(8, 16), img.shape), 0, 255)
    if kind == 4:
        return compress(img, int(rng.integers(15, 35))).astype(np.float32)
    return img


def pretext_data(photos: list, size: int, seed: int, capture) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB crops [N, 3, size, size] and their pretext classes [N]. `capture` holds the demo's
    video_track, crop, add_sensor_noise and compress functions (the real frames' capture pipeline)."""
    rng = np.random.default_rng([seed, 7])
    images, classes = [], []
    for photo in photos:
        for _ in range(20):
            for window in capture["video_track"](rng, photo.shape, "train", 8, size):
                kind = int(rng.integers(len(PRETEXT)))
                img = _degrade(capture["crop"](photo, window, size).astype(np.float32), kind, rng, capture["compress"])
                img = capture["compress"](capture["add_sensor_noise"](img, rng.uniform(4, 8), rng),
                                          int(rng.integers(85, 97)))
                images.append(img[:, :, ::-1].transpose(2, 0, 1))  # BGR [H, W, 3] -> RGB [3, H, W]
                classes.append(kind)
    return np.ascontiguousarray(np.stack(images)), np.array(classes)


def pretrain(out: Path, photos: list, capture: dict, backbone: str = "test_resnet", size: int = 64, seed: int = 0,
             steps: int = 300, quiet: bool = False) -> Path:
    """Train `backbone` on the pretext (Adam 2e-3, batch 64, flips) and write its encoder weights to `out`."""
    import torch
    import torch.nn.functional as F

    from models import build_backbone
    start = time.time()
    images, classes = pretext_data(photos, size, seed, capture)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).float() / 255 - mean) / std  # [N, 3, size, size]
    y = torch.from_numpy(classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model = build_backbone(backbone, "none", num_classes=len(PRETEXT))
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(steps):
            idx = torch.randint(0, len(y), (64,), generator=gen)
            flip = torch.rand(64, generator=gen) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), x[idx].flip(-1), x[idx])
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    torch.save({"model_state_dict": encoder, "pretext": PRETEXT, "steps": steps, "backbone": backbone}, out)
    if not quiet:
        print(f"demo stand-in for ImageNet weights ({backbone}, {steps} steps on {len(y)} real crops) in "
              f"{time.time() - start:.1f}s", file=sys.stderr)
    return out
