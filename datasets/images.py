"""Image files: decoding to uint8 RGB tensors, and the error for files that cannot be decoded."""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class BadImageError(OSError):
    """An image file that cannot be decoded (empty, truncated, not an image)."""


def read_image(path: str) -> torch.Tensor:
    """An image file as a uint8 RGB tensor [3, H, W] (grayscale and alpha converted)."""
    img = cv2.cvtColor(decode_bgr(path), cv2.COLOR_BGR2RGB)
    import torch  # here: the pack's decode workers (datasets/pack_workers.py) need no torch
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()  # [H, W, 3] -> [3, H, W]


def decode_bgr(path: str) -> np.ndarray:
    """An image file as OpenCV decodes it: uint8 BGR [H, W, 3] (grayscale, alpha and 16 bits converted)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise BadImageError(f"cannot read image {path}: {err.strerror}") from None
    # A truncated JPEG still decodes (grey bottom rows): require an end-of-image marker after the last
    # start-of-scan marker. Bytes after the end marker (appended by some cameras) are allowed.
    if path.lower().endswith((".jpg", ".jpeg")) and not _jpeg_complete(data.tobytes()):
        raise BadImageError(f"truncated JPEG {path}")
    # IMREAD_COLOR converts grayscale, RGBA (alpha dropped) and 16-bit images to 8-bit BGR.
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise BadImageError(f"cannot decode image {path}")
    return img


def _jpeg_complete(data: bytes) -> bool:
    scan = data.rfind(b"\xff\xda")  # the last start-of-scan marker
    return data.find(b"\xff\xd9", max(scan, 0)) != -1
