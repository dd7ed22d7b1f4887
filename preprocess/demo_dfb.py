"""The embedded demo in DeepfakeBench's and DF40's formats (configs/demo_dfb*.yaml, reproduce --table dfb|df40 --demo).

Written once under <demo>/deepfakebench/, from the demo's own images (nothing new is generated):

  dataset_json/FaceForensics++.json   DeepfakeBench's index of the demo's FF++ stand-in: labels FF-real, FF-DF,
                                      FF-F2F, FF-FS, FF-NT; splits train / val (a tenth of the train people) /
                                      test; compression level c23; frame paths relative to <demo> (its rgb_dir)
  dataset_json/demostylegan_ff.json   DF40's format for one "method" (labels demostylegan_Fake / _Real): the
                                      demo's StyleGAN stand-ins as fakes, copied to DF40/demostylegan/ff/<video>/
                                      (a folder per source photo: DeepfakeBench groups frames by folder), the
                                      FF++ stand-in's reals as its reals (as DF40 takes FF++'s); test split only

Every path in them is below <demo>, so `root: data/demo` reads both. A stand-in, not DeepfakeBench's data: the
demo tables say so.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from utils import atomic_write_text

FOLDER = {"FF-real": "Real", "FF-DF": "Deepfakes", "FF-F2F": "Face2Face", "FF-FS": "FaceSwap",
          "FF-NT": "NeuralTextures"}
VERSION = 3


def _videos(root: Path, subset: str, method: str) -> dict[str, list[str]]:
    base = root / "FaceForensics++" / subset / method
    return {v.name: sorted(str(f.relative_to(root)) for f in v.iterdir() if f.suffix == ".png")
            for v in sorted(base.iterdir()) if v.is_dir()}


def _val_ids(root: Path) -> set[str]:
    """The identities of the val split: whole groups of people linked by the fakes' pairs (as FF++'s official
    splits are), the groups holding the smallest tenth of the ids."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a
    for method in FOLDER.values():
        for video in _videos(root, "train_set", method):
            ids = video.split("_")
            for other in ids[1:]:
                parent[find(other)] = find(ids[0])
    groups: dict[str, list[str]] = {}
    for a in sorted(parent):
        groups.setdefault(find(a), []).append(a)
    chosen: set[str] = set()
    for members in sorted(groups.values(), key=min):
        if len(chosen) >= len(parent) // 10:
            break
        chosen.update(members)
    return chosen


def ff_index(root: Path) -> dict:
    index: dict = {}
    val = _val_ids(root)
    for label, method in FOLDER.items():
        index[label] = {split: {"c23": {}} for split in ("train", "val", "test")}
        for subset in ("train_set", "test_set"):
            for video, frames in _videos(root, subset, method).items():
                split = "test" if subset == "test_set" else "val" if video.split("_")[0] in val else "train"
                index[label][split]["c23"][video] = {"label": label, "frames": frames}
    return {"FaceForensics++": index}


def df40_index(root: Path, out: Path) -> dict:
    """demostylegan_ff: the StyleGAN stand-ins (copied into DF40's layout) against the FF++ stand-in's test reals."""
    fakes: dict[str, list[str]] = {}
    for image in sorted((root / "StyleGAN").glob("*.png")):
        video = "sg" + image.stem.split("_")[0]  # not a real video's name: DeepfakeBench groups by folder name
        target = out / "DF40" / "demostylegan" / "ff" / video / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file():
            shutil.copyfile(image, target)
        fakes.setdefault(video, []).append(str(target.relative_to(root)))
    reals = _videos(root, "test_set", "Real")
    entry = lambda label, videos: {"train": {}, "val": {}, "test": {  # noqa: E731
        v: {"label": label, "frames": frames} for v, frames in videos.items()}}
    return {"demostylegan_ff": {"demostylegan_Real": entry("demostylegan_Real", reals),
                                "demostylegan_Fake": entry("demostylegan_Fake", fakes)}}


def ensure_dfb_demo(root: str | os.PathLike) -> Path:
    """<root>/deepfakebench with both indexes (written unless this version's are there); returns its JSON folder."""
    root = Path(root)
    out = root / "deepfakebench"
    done = out / "VERSION"
    if done.is_file() and done.read_text().strip() == str(VERSION):
        return out / "dataset_json"
    print(f"writing the demo in DeepfakeBench's and DF40's formats to {out}", file=sys.stderr)
    (out / "dataset_json").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "dataset_json" / "FaceForensics++.json", json.dumps(ff_index(root)))
    atomic_write_text(out / "dataset_json" / "demostylegan_ff.json", json.dumps(df40_index(root, out)))
    atomic_write_text(done, f"{VERSION}\n")
    return out / "dataset_json"
