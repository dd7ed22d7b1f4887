"""Test-time perturbations for robustness sweeps (evaluate.py --perturb): the degradations real media carry,
applied to the decoded image at its own resolution (before the evaluation resize), to real and fake images
alike, deterministically per image (the noise is seeded by the file's path).

  jpeg:Q      re-encode as JPEG at quality Q (1..100)
  blur:S      Gaussian blur of standard deviation S pixels (0: none)
  noise:S     additive Gaussian noise of standard deviation S in [0, 1] intensity units (0: none)
  resize:F    down-scale by F (INTER_AREA) and back up to the original size (bilinear) (1: none)

Levels that mean "none" (blur:0, noise:0, resize:1) return the image unchanged, so they reproduce the clean
metrics exactly.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from utils import UserError

# kind -> (valid range of a level, level that means "unchanged" or None)
KINDS = {"jpeg": ((1, 100), None), "blur": ((0, 50), 0.0), "noise": ((0, 1), 0.0), "resize": ((0.01, 1), 1.0)}


@dataclass(frozen=True)
class Perturbation:
    kind: str
    level: float

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.level:g}"

    def __call__(self, img: torch.Tensor, key: str) -> torch.Tensor:
        """uint8 RGB [3, H, W] -> the perturbed image, same shape and dtype. `key` (the file's path) seeds
        the random parts."""
        if self.level == KINDS[self.kind][1]:
            return img
        hwc = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
        out = getattr(self, "_" + self.kind)(hwc, key)
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous()

    def _jpeg(self, img: np.ndarray, key: str) -> np.ndarray:
        _, data = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(self.level)])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]

    def _blur(self, img: np.ndarray, key: str) -> np.ndarray:
        k = 2 * int(np.ceil(3 * self.level)) + 1  # +-3 sigma
        return cv2.GaussianBlur(img, (k, k), sigmaX=self.level, sigmaY=self.level, borderType=cv2.BORDER_REFLECT_101)

    def _noise(self, img: np.ndarray, key: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(f"{key}|{self.name}".encode("utf-8", "surrogateescape")))
        noisy = img.astype(np.float32) + rng.normal(0.0, 255.0 * self.level, img.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    def _resize(self, img: np.ndarray, key: str) -> np.ndarray:
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(1, round(w * self.level)), max(1, round(h * self.level))),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def parse_perturbations(specs: list[str]) -> list[Perturbation]:
    """["jpeg:90,70", "blur:1"] -> [jpeg:90, jpeg:70, blur:1]; a bad spec is a one-line UserError."""
    out = []
    for spec in specs:
        kind, sep, levels = spec.partition(":")
        if kind not in KINDS or not sep or not levels:
            raise UserError(f"--perturb {spec!r}: expected KIND:LEVEL[,LEVEL...] with KIND one of "
                            f"{', '.join(KINDS)} (e.g. jpeg:90,70,50)")
        (lo, hi), _ = KINDS[kind]
        for text in levels.split(","):
            try:
                level = float(text)
            except ValueError:
                raise UserError(f"--perturb {spec!r}: level {text!r} is not a number") from None
            if not lo <= level <= hi or (kind == "jpeg" and level != int(level)):
                raise UserError(f"--perturb {spec!r}: {kind} level {text} outside [{lo}, {hi}]"
                                + (" (an integer quality)" if kind == "jpeg" else ""))
            if Perturbation(kind, level) not in out:
                out.append(Perturbation(kind, level))
    return out
