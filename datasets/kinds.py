"""The dataset kinds a source spec can name, in one registry: kind -> spec keys, folder layout, builder
(root -> samples), identity rule (video -> the identities it shows), and links between videos.

Adding a dataset = one builder here (or in a module of its own) plus one line in KINDS.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from datasets import deepfakebench
from datasets.images import IMG_EXTS
from datasets.index import Sample, Scan
from datasets.videos import listed_celebdf
from utils import UserError, resolve_path

FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
FF_EXTRA = ("FaceShifter",)  # in FF++ downloads (preprocess/ff_official.py); named explicitly in `methods`
FF_SUBSETS = ("train_set", "val_set", "test_set")
CELEBDF_FOLDERS = {"youtube_real_imgs": 0, "Celeb-real": 0, "YouTube-real": 0, "fake_imgs": 1, "Celeb-synthesis": 1}


# ----------------------------------------------------------------------------------------------- builders
def _require_dir(path: Path, what: str, kind: str | None = None) -> None:
    if not path.is_dir():
        layout = f" (expected layout: {KINDS[kind].layout})" if kind else ""
        raise UserError(f"{what} folder not found: {path}{layout}")


def _folder_source(root: Path, scan: Scan) -> list[Sample]:
    _require_dir(root, "dataset")
    samples = []
    for label, sub in ((0, "real"), (1, "fake")):
        _require_dir(root / sub, f"'{sub}'")
        files = scan.images(root / sub)
        if not files:
            raise UserError(f"no images in {root / sub} (expected {', '.join(IMG_EXTS)} files)")
        for f in files:
            rel = Path(f).relative_to(root / sub)
            video = f"folder:{sub}/{rel.parent}" if rel.parent != Path(".") else None
            samples.append(Sample(f, label, sub, video, "folder"))
    return samples


def _flat_source(root: Path, label: str, domain: str | None, scan: Scan) -> list[Sample]:
    _require_dir(root, "dataset", "flat")
    if label not in ("real", "fake"):
        raise UserError(f"flat source {root}: label must be 'real' or 'fake', got {label!r}")
    files = scan.images(root)
    if not files:
        raise UserError(f"no images in {root}")
    return [Sample(f, int(label == "fake"), domain or root.name, None, "flat") for f in files]


def _video_folders(base: Path, scan: Scan, what: str) -> list[tuple[str, list[str]]]:
    """(video name, its image paths) for every folder base/<video>/ (images searched recursively)."""
    scan.watch(base)
    with os.scandir(base) as it:
        videos = sorted(e.name for e in it if e.is_dir(follow_symlinks=True))
    out = [(v, scan.images(base / v)) for v in videos]
    if not any(files for _, files in out):
        raise UserError(f"no images in {base} ({what})")
    return out


def _ff_source(root: Path, spec: dict, scan: Scan) -> list[Sample]:
    """The videos of `subset` (with `official_split`: of every subset present, the lists decide the role).
    A tree written from an FF++ download records its compression (FF_OFFICIAL.json): source 'ff/c23'."""
    methods = list(spec.get("methods", ["Real", *FF_METHODS]))
    official = spec.get("official_split", "off") not in ("off", False, None)
    subsets = [s for s in FF_SUBSETS if (root / s).is_dir()] if official else [spec.get("subset", "train_set")]
    if not subsets:
        _require_dir(root / "train_set", "FaceForensics++ 'train_set'", "ff")
    marker = root / "FF_OFFICIAL.json"
    if root.is_dir():
        scan.watch(root)  # the marker (or a new subset) appearing invalidates the cached index
    source = f"ff/{json.loads(marker.read_text()).get('compression', '')}" if marker.is_file() else "ff"
    samples = []
    for subset in subsets:
        base = root / subset
        _require_dir(base, f"FaceForensics++ '{subset}'", "ff")
        for method in methods:
            if method != "Real" and method not in FF_METHODS + FF_EXTRA:
                raise UserError(f"unknown FaceForensics++ method '{method}' (Real, {', '.join(FF_METHODS + FF_EXTRA)})")
            if official and not (base / method).is_dir():
                continue
            _require_dir(base / method, f"FaceForensics++ '{subset}/{method}'", "ff")
            videos = _video_folders(base / method, scan, "FaceForensics++")
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
    return [s for s in samples if s.video and split_of(s.video.rsplit("/", 1)[-1], where) == want]


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


def dfdc_metadata(metadata_root: Path, scan: Scan) -> dict[str, dict]:
    """video stem -> {"label": 0|1, "original": stem|None, "part": int|None} from every metadata.json."""
    _require_dir(metadata_root, "DFDC metadata", "dfdc")
    table: dict[str, dict] = {}
    files = sorted(metadata_root.rglob("metadata.json"))
    if not files:
        raise UserError(f"no metadata.json under {metadata_root} (the original DFDC parts' label files)")
    for file in files:
        scan.watch(file)
        match = re.search(r"part_?(\d+)", str(file.parent.name))
        part = int(match.group(1)) if match else None
        try:
            entries = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read DFDC metadata {file}: {err}") from None
        for name, meta in entries.items():
            label = str(meta.get("label", "")).upper()
            if label not in ("REAL", "FAKE"):
                raise UserError(f"DFDC metadata {file}: video {name} has label {meta.get('label')!r}")
            original = meta.get("original")
            table[Path(name).stem] = {"label": int(label == "FAKE"), "part": part,
                                      "original": Path(original).stem if original else None}
    return table


def _dfdc_source(root: Path, metadata_root: Path, parts: list[int] | None, scan: Scan) -> list[Sample]:
    _require_dir(root, "DFDC crops", "dfdc")
    meta = dfdc_metadata(metadata_root, scan)
    samples, missing = [], set()
    for video, files in _video_folders(root, scan, "DFDC crops"):
        info = meta.get(video)
        if info is None:
            missing.add(video)
            continue
        if parts is not None and info["part"] not in parts:
            continue
        label, key = info["label"], f"dfdc:{video}"
        samples += [Sample(f, label, "DFDC-fake" if label else "DFDC-real", key, "dfdc") for f in files]
    if missing:
        # Reported, not guessed: these crops have no label.
        print(f"warning: {len(missing)} DFDC video(s) in {root} are not in any metadata.json under "
              f"{metadata_root} and are left out, e.g. {', '.join(sorted(missing)[:3])}", file=sys.stderr)
    return samples


def _celebdf_source(root: Path, folders: list[str] | None, scan: Scan) -> list[Sample]:
    _require_dir(root, "Celeb-DF", "celebdf")
    present = [f for f in CELEBDF_FOLDERS if (root / f).is_dir()] if folders is None else folders
    if not present:
        raise UserError(f"no Celeb-DF folders in {root} (expected layout: {KINDS['celebdf'].layout})")
    samples = []
    for folder in present:
        if folder not in CELEBDF_FOLDERS:
            raise UserError(f"unknown Celeb-DF folder '{folder}' ({', '.join(CELEBDF_FOLDERS)})")
        _require_dir(root / folder, f"Celeb-DF '{folder}'", "celebdf")
        label = CELEBDF_FOLDERS[folder]
        domain = "CelebDF-fake" if label else "CelebDF-real"
        for v, files in _video_folders(root / folder, scan, "Celeb-DF"):
            video = f"celebdf:{folder}/{v}"
            samples += [Sample(f, label, domain, video, "celebdf") for f in files]
    return samples


CELEBDF_TEST_LIST = "List_of_testing_videos.txt"


def celebdf_test_list(path: Path) -> set[tuple[int, str]]:
    """Celeb-DF-v2's official test list ("1 YouTube-real/00170.mp4": 1 = real, 0 = synthesised) as
    {(label here: 0 real / 1 fake, video name)}; a malformed line is a one-line UserError naming the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the Celeb-DF test list {path}: {err}") from None
    listed = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        folder, _, name = parts[-1].replace("\\", "/").rpartition("/") if len(parts) == 2 else ("", "", "")
        if len(parts) != 2 or parts[0] not in ("0", "1") or not name:
            raise UserError(f"{path} line {n}: expected '<1 real|0 fake> <folder>/<video>.mp4', got {line.strip()!r}")
        label = 1 - int(parts[0])
        if folder in CELEBDF_FOLDERS and CELEBDF_FOLDERS[folder] != label:
            raise UserError(f"{path} line {n}: {parts[0]} ({'real' if label == 0 else 'fake'}) for a video in "
                            f"'{folder}', a {'fake' if label == 0 else 'real'} folder")
        listed.add((label, Path(name).stem))
    if not listed:
        raise UserError(f"the Celeb-DF test list {path} is empty")
    return listed


def celebdf_official(samples: list[Sample], spec: dict, role: str | None) -> list[Sample] | None:
    """With Celeb-DF-v2's official test list (spec `test_list`: auto = <root>/List_of_testing_videos.txt if
    there, a path = that file, required; off = never): the listed videos for the test role, the others for
    training roles; None when no list is used. The official split is by video (test identities also appear
    in training), so these videos are their own identity group: their ids read `celebdf-list:<folder>/<video>`."""
    choice = spec.get("test_list", "auto")
    if choice in ("off", False, None) or role is None:
        return None
    path = Path(spec["root"]) / CELEBDF_TEST_LIST if choice == "auto" else resolve_path(str(choice))
    if not path.is_file():
        if choice == "auto":
            return None
        raise UserError(f"Celeb-DF test list not found: {path} (it ships with Celeb-DF-v2; or test_list: auto/off)")
    listed = celebdf_test_list(path)
    found = {(s.label, s.video.rsplit("/", 1)[-1]) for s in samples if s.video}
    missing = listed - found
    if missing and role == "test":
        print(f"warning: {len(missing)} of the {len(listed)} videos of {path} have no crops under {spec['root']}, "
              f"e.g. {sorted(v for _, v in missing)[0]}", file=sys.stderr)
    keep = role == "test"
    return [Sample(s.path, s.label, s.domain, listed_celebdf(s.video), s.source)
            for s in samples if s.video and ((s.label, s.video.rsplit("/", 1)[-1]) in listed) == keep]


# ----------------------------------------------------------------------------------------------- identities
def _ff_identities(video: str) -> tuple[str, ...]:
    """FF++ '017_042' -> (017, 042): a fake shows its target and its source identity."""
    return tuple(f"ff:{p}" for p in video.partition(":")[2].split("/")[-1].split("_"))


def _celebdf_identities(video: str) -> tuple[str, ...]:
    """Celeb-DF 'id0_id1_0003' -> (id0, id1); YouTube-real videos have no id: the video itself."""
    ids = [p for p in video.partition(":")[2].split("/")[-1].split("_") if p.startswith("id")]
    return tuple(f"celebdf:{i}" for i in ids) or (video,)


def _dfdc_links(spec: dict) -> dict[str, str]:
    """A DFDC fake shows the person of its original video."""
    meta = dfdc_metadata(Path(spec["metadata"]), Scan())
    return {f"dfdc:{v}": f"dfdc:{m['original']}" for v, m in meta.items() if m["original"]}


# ----------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class SourceKind:
    keys: frozenset[str]                       # spec keys besides kind and the common ones (root included)
    layout: str                                # the folder layout, shown when a folder is missing
    build: Callable[[Path, dict, Scan], list[Sample]]  # (root, spec with resolved paths, scan) -> samples
    identities: Callable[[str], tuple[str, ...]] = lambda video: (video,)
    links: Callable[[dict], dict[str, str]] | None = None  # spec -> {video: video it shares an identity with}
    path_keys: tuple[str, ...] = ()            # spec keys besides root that name folders ({key} allowed)
    # (samples, resolved spec, role) -> the samples of that role under an official split, or None (no such split)
    official_split: Callable[[list[Sample], dict, str | None], list[Sample] | None] | None = None


KINDS: dict[str, SourceKind] = {
    "folder": SourceKind(frozenset({"root"}), "<root>/{real,fake}/**/<image>.png",
                         lambda root, spec, scan: _folder_source(root, scan)),
    "flat": SourceKind(frozenset({"root", "label", "domain"}), "<root>/<image>.png (one class)",
                       lambda root, spec, scan: _flat_source(root, spec.get("label", "fake"), spec.get("domain"),
                                                             scan)),
    "ff": SourceKind(frozenset({"root", "subset", "methods", "official_split"}),
                     "<root>/{train_set,val_set,test_set}/{Real,Deepfakes,Face2Face,FaceSwap,NeuralTextures,FaceShifter}"
                     "/<video>/<frame>.png (and, for official_split, FF++'s train/val/test.json in <root>/splits)",
                     _ff_source, identities=_ff_identities, official_split=ff_official),
    "dfdc": SourceKind(frozenset({"root", "metadata", "parts"}),
                       "<root>/<video>/<frame>.png plus the original parts' metadata.json files under <metadata>",
                       lambda root, spec, scan: _dfdc_source(root, Path(spec["metadata"]), spec.get("parts"), scan),
                       links=_dfdc_links, path_keys=("metadata",)),
    "celebdf": SourceKind(frozenset({"root", "folders", "test_list"}),
                          "<root>/{youtube_real_imgs,fake_imgs,Celeb-real,Celeb-synthesis,YouTube-real}/<video>/<frame>.png"
                          f" (and Celeb-DF-v2's {CELEBDF_TEST_LIST})",
                          lambda root, spec, scan: _celebdf_source(root, spec.get("folders"), scan),
                          identities=_celebdf_identities, official_split=celebdf_official),
    "deepfakebench": SourceKind(frozenset({"root", "json", "dataset", "compression", "labels"}),
                                "<root> = DeepfakeBench's rgb_dir, holding the frames its dataset JSON "
                                "(preprocessing/dataset_json/<dataset>.json, spec key json) lists",
                                lambda root, spec, scan: deepfakebench.build(root, spec, scan),
                                identities=lambda video: deepfakebench.identities(video), path_keys=("json",),
                                official_split=lambda samples, spec, role: deepfakebench.official(samples, spec, role)),
}


def identities(video: str | None) -> tuple[str, ...]:
    """The identities a video shows (by its kind's rule; a video of no known kind shows itself)."""
    if video is None:
        return ()
    kind = KINDS.get(video.partition(":")[0])
    return kind.identities(video) if kind else (video,)
