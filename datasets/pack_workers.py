"""What the processes that decode images for a pack run (datasets/packed.py): no torch here, so that a worker
starts in a fraction of a second."""
from __future__ import annotations

import cv2
import numpy as np

from datasets.images import BadImageError, decode_bgr


def load(args: tuple[str, int]) -> tuple[str, np.ndarray | None]:
    """(path, uint8 RGB [3, S, S]) or (path, None) for an unreadable image. Runs in worker processes.
    Resized before the BGR -> RGB swap, on the smaller image: a channel permutation commutes with the
    per-channel resize, so the pixels equal read_image's resized."""
    path, size = args
    try:
        img = decode_bgr(path)  # [H, W, 3] BGR
    except BadImageError:
        return path, None
    h, w = img.shape[:2]
    if (h, w) != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR)
    return path, np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))


def init_loader() -> None:
    """Pack workers: one OpenCV thread each (the processes are the parallelism; OpenCV's own pool in every
    worker would oversubscribe the cores)."""
    cv2.setNumThreads(1)
