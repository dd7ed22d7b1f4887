"""How face crops were cut, so that a detector sees new faces cut as its training faces were: extract_faces
records it in each video's boxes.csv (`crop`: margin:M, scale:S or align:D); predict.py reads it back from the
training data of the weights it runs (their config's labeled sources)."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Crop:
    margin: float = 0.2           # the box grown by margin x its size on each side (extract_faces's default)
    scale: float | None = None    # or: a square of scale x the box's longer side
    align: float | None = None    # or: eyes level at this inter-ocular distance / crop size

    def describe(self) -> str:
        return f"align:{self.align:g}" if self.align else f"scale:{self.scale:g}" if self.scale else \
            f"margin:{self.margin:g}"


def parse(text: str) -> Crop | None:
    """A boxes.csv `crop` value as a Crop (None for a value of no known form)."""
    kind, _, value = text.partition(":")
    try:
        number = float(value)
    except ValueError:
        return None
    return {"margin": Crop(margin=number), "scale": Crop(scale=number), "align": Crop(align=number)}.get(kind)


def find_boxes(root: Path, depth: int = 5) -> Path | None:
    """The first boxes.csv below `root` (at most `depth` folders down: FF++ train_set/<method>/<video>/)."""
    if not root.is_dir():
        return None
    base = len(root.parts)
    for folder, dirs, files in os.walk(root):
        if "boxes.csv" in files:
            return Path(folder) / "boxes.csv"
        dirs.sort()
        if len(Path(folder).parts) - base >= depth:
            dirs[:] = []
    return None


def recorded(cfg: dict | None) -> tuple[Crop, Path] | None:
    """The crop of the training data of a checkpoint's config, and the boxes.csv it was read from; None when
    the data are not here or were not cut by extract_faces."""
    if not cfg:
        return None
    from datasets.paths import resolve_root
    from utils import UserError
    specs = [s for spec in cfg.get("data", {}).get("labeled", []) for s in (spec.get("sources", [spec])
                                                                           if isinstance(spec, dict) else [spec])]
    for spec in specs:
        raw = spec.get("root") if isinstance(spec, dict) else str(spec).partition(":")[2]
        try:
            root = resolve_root(raw, cfg["data"], "") if raw else None
        except (UserError, KeyError, TypeError):
            continue
        boxes = find_boxes(Path(root)) if root else None
        if boxes is not None:
            with open(boxes, newline="") as f:
                row = next(csv.DictReader(f), None)
            crop = parse(row.get("crop", "")) if row else None
            if crop is not None:
                return crop, boxes
    return None
