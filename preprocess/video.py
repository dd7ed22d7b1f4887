"""Videos: finding them under a folder and decoding the sampled frames (OpenCV), for extract_faces and predict.py."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from utils import UserError

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def find_videos(root: Path) -> list[tuple[str, Path]]:
    """(name, path) of every video under root (or root itself)."""
    if root.is_file():
        return [(root.stem, root)]
    if not root.is_dir():
        raise UserError(f"input not found: {root}")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    return [(str(p.relative_to(root).with_suffix("")), p) for p in found]


def frame_indices(total: int, frames: int | None, stride: int | None) -> list[int] | None:
    """Which frames to keep: `frames` evenly spaced ones, or every `stride`-th; None = decide while reading."""
    if stride:
        return list(range(0, total, stride)) if total > 0 else None
    if total <= 0:
        return None
    n = min(frames or total, total)
    return sorted(set(np.linspace(0, total - 1, n).round().astype(int).tolist()))


def read_frames(path: Path, frames: int | None, stride: int | None) -> list[tuple[int, np.ndarray]]:
    """(index, RGB frame) for the sampled frames; [] if the file cannot be decoded. Frames are sampled from
    the count the container's header gives; where the video holds fewer frames than it claims, they are
    sampled again from the frames it really holds (a second pass), with a warning."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        return []
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    out, held = _read_sampled(cap, frame_indices(total, frames, stride))
    cap.release()
    if 0 < held < total:
        print(f"warning: {path}: the header claims {total} frames but the video holds {held}; sampled from "
              f"the {held}", file=sys.stderr)
        cap = cv2.VideoCapture(str(path))
        out, _ = _read_sampled(cap, frame_indices(held, frames, stride))
        cap.release()
    if total <= 0 and frames and len(out) > frames:  # frame count was unknown: sample now
        keep = set(np.linspace(0, len(out) - 1, frames).round().astype(int).tolist())
        out = [f for j, f in enumerate(out) if j in keep]
    return out


def _read_sampled(cap, wanted: list[int] | None) -> tuple[list[tuple[int, np.ndarray]], int]:
    """The frames of `wanted` (all if None), and how many frames the video held."""
    keep = None if wanted is None else set(wanted)
    out, i = [], 0
    while cap.grab():  # decodes; only the kept frames are converted (retrieve)
        if keep is None or i in keep:
            ok, frame = cap.retrieve()
            if ok:
                out.append((i, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
        i += 1
    return out, i
