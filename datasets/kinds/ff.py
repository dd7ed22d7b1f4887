"""FaceForensics++ crops in the authors' layout: {kind: ff, root, subset: train_set|val_set|test_set,
methods: [Real, Deepfakes, ...], official_split: off|auto|DIR}, one folder per video ('017' real, '017_042'
fake = target_source). A fake shows its target's and its source's identity."""
from __future__ import annotations

import json
import re
from pathlib import Path

from datasets.index import Sample, Scan
from datasets.kinds.base import SourceKind, require_dir, video_folders
from datasets.videos import name_of
from utils import UserError, resolve_path

FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
FF_EXTRA = ("FaceShifter",)  # in FF++ downloads (preprocess/ff_official.py); named explicitly in `methods`
FF_SUBSETS = ("train_set", "val_set", "test_set")
LAYOUT = ("<root>/{train_set,val_set,test_set}/{Real,Deepfakes,Face2Face,FaceSwap,NeuralTextures,FaceShifter}"
          "/<video>/<frame>.png (and, for official_split, FF++'s train/val/test.json in <root>/splits)")


def _ff_source(root: Path, spec: dict, scan: Scan) -> list[Sample]:
    """The videos of `subset` (with `official_split`: of every subset present, the lists decide the role).
    A tree written from an FF++ download records its compression (FF_OFFICIAL.json): source 'ff/c23'."""
    methods = list(spec.get("methods", ["Real", *FF_METHODS]))
    official = spec.get("official_split", "off") not in ("off", False, None)
    subsets = [s for s in FF_SUBSETS if (root / s).is_dir()] if official else [spec.get("subset", "train_set")]
    if not subsets:
        require_dir(root / "train_set", "FaceForensics++ 'train_set'", LAYOUT)
    marker = root / "FF_OFFICIAL.json"
    if root.is_dir():
        scan.watch(root)  # the marker (or a new subset) appearing invalidates the cached index
    source = f"ff/{json.loads(marker.read_text()).get('compression', '')}" if marker.is_file() else "ff"
    samples = []
    for subset in subsets:
        base = root / subset
        require_dir(base, f"FaceForensics++ '{subset}'", LAYOUT)
        for method in methods:
            if method != "Real" and method not in FF_METHODS + FF_EXTRA:
                raise UserError(f"unknown FaceForensics++ method '{method}' (Real, {', '.join(FF_METHODS + FF_EXTRA)})")
            if official and not (base / method).is_dir():
                continue
            require_dir(base / method, f"FaceForensics++ '{subset}/{method}'", LAYOUT)
            videos = video_folders(base / method, scan, "FaceForensics++")
            _check_ff_names(base / method, method, {v for v, _ in videos})
            label = int(method != "Real")
            for v, files in videos:
                video = f"ff:{method}/{v}"  # one string shared by the video's frames
                samples += [Sample(f, label, method, video, source) for f in files]
    return samples


def ff_official(samples: list[Sample], spec: dict, role: str | None) -> list[Sample] | None:
    """With `official_split` (auto = <root>/splits, or a folder of FF++'s train.json / val.json / test.json):
    test sets get the videos of test.json, training roles those of train.json (then split labeled /
    unlabeled by `videos`); the videos of val.json serve neither. None when off."""
    from preprocess.ff_official import read_splits, split_of
    choice = spec.get("official_split", "off")
    if choice in ("off", False, None) or role is None:
        return None
    folder = Path(spec["root"]) / "splits" if choice == "auto" else resolve_path(str(choice))
    where = read_splits(folder)
    want = "test" if role == "test" else "train"
    return [s for s in samples if s.video and split_of(name_of(s.video), where) == want]


def _check_ff_names(folder: Path, method: str, videos: set[str]) -> None:
    """FF++ names real videos '017' and fake ones '017_042' (target_source): a name of the other kind
    means a mislabelled folder, so stop rather than train on wrong labels."""
    pattern = re.compile(r"^\d+$" if method == "Real" else r"^\d+_\d+$")
    wrong = sorted(v for v in videos if not pattern.match(v))
    if wrong:
        expected = "'017'" if method == "Real" else "'017_042' (target_source)"
        raise UserError(f"{len(wrong)} video folder(s) in {folder} are not named like FaceForensics++ "
                        f"{'real' if method == 'Real' else 'fake'} videos ({expected}), e.g. '{wrong[0]}': "
                        "check the labels of this folder")


def _ff_identities(video: str) -> tuple[str, ...]:
    """FF++ '017_042' -> (017, 042): a fake shows its target and its source identity."""
    return tuple(f"ff:{p}" for p in name_of(video).split("_"))


KIND = SourceKind(frozenset({"root", "subset", "methods", "official_split"}), LAYOUT, _ff_source,
                  identities=_ff_identities, official_split=ff_official)
