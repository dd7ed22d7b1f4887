"""What a dataset kind is (SourceKind), and the helpers its builders share."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from datasets.index import Sample, Scan
from utils import UserError


@dataclass(frozen=True)
class SourceKind:
    keys: frozenset[str]                       # spec keys besides kind and the common ones (root included)
    layout: str                                # the folder layout, shown when a folder is missing
    build: Callable[[Path, dict, Scan], list[Sample]]  # (root, spec with resolved paths, scan) -> samples
    identities: Callable[[str], tuple[str, ...]] = lambda video: (video,)
    links: Callable[[dict], dict[str, str]] | None = None  # spec -> {video: video it shares an identity with}
    path_keys: tuple[str, ...] = ()            # spec keys besides root that name folders ({key} allowed)
    optional_path_keys: tuple[str, ...] = ()   # ... and such keys a spec may leave out
    # (samples, resolved spec, role) -> the samples of that role under an official split, or None (no such split)
    official_split: Callable[[list[Sample], dict, str | None], list[Sample] | None] | None = None


def require_dir(path: Path, what: str, layout: str | None = None) -> None:
    if not path.is_dir():
        raise UserError(f"{what} folder not found: {path}" + (f" (expected layout: {layout})" if layout else ""))


def video_folders(base: Path, scan: Scan, what: str) -> list[tuple[str, list[str]]]:
    """(video name, its image paths) for every folder base/<video>/ (images searched recursively)."""
    scan.watch(base)
    with os.scandir(base) as it:
        videos = sorted(e.name for e in it if e.is_dir(follow_symlinks=True))
    out = [(v, scan.images(base / v)) for v in videos]
    if not any(files for _, files in out):
        raise UserError(f"no images in {base} ({what})")
    return out
