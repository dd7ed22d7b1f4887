"""FaceForensics++ as its download script leaves it, and its official split lists.

Download layout (the FaceForensics download script, `-c c23|c40|raw -t videos`):

    <ff-root>/original_sequences/youtube/<c>/videos/017.mp4                 real (1,000 YouTube videos)
    <ff-root>/manipulated_sequences/<method>/<c>/videos/017_042.mp4         fake: target 017, source 042
        method: Deepfakes, Face2Face, FaceSwap, NeuralTextures, FaceShifter
    <ff-root>/original_sequences/actors/<c>/videos/01__exit_phone_room.mp4   DeepFakeDetection's real videos
    <ff-root>/manipulated_sequences/DeepFakeDetection/<c>/videos/01_02__exit_phone_room__YVGY8LOK.mp4

Split lists (dataset/splits/ of the FaceForensics repository; put them in <ff-root>/splits/ or pass
--ff-splits): train.json, val.json, test.json, each a JSON list of pairs ["071", "054"]; a pair places
the real videos 071 and 054 and the fakes 071_054 and 054_071 of every method in that split (360 / 70 / 70
pairs = 720 / 140 / 140 real videos).

`python -m preprocess.extract_faces --ff-root ... --compression c23 --output DIR` writes the authors'
folder layout from it, so that the protocol configs run unchanged (`kind: ff, root: DIR`):

    DIR/{train_set,val_set,test_set}/{Real,Deepfakes,Face2Face,FaceSwap,NeuralTextures,FaceShifter}/<video>/
    DIR/DeepFakeDetection/{real,fake}/<video>/     (not in the lists: an extra test set, `kind: folder`)
    DIR/splits/{train,val,test}.json               (copies: `official_split: auto` finds them)
    DIR/FF_OFFICIAL.json                           (the compression and the counts; the ff source records
                                                    the compression in splits.csv)
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from utils import UserError, parse_json

SPLITS = ("train", "val", "test")
SUBSET = {"train": "train_set", "val": "val_set", "test": "test_set"}
OFFICIAL_PAIRS = {"train": 360, "val": 70, "test": 70}
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
COMPRESSIONS = ("raw", "c23", "c40")
MARKER = "FF_OFFICIAL.json"
_ID = re.compile(r"^\d{3}$")


def read_split(path: Path) -> list[tuple[str, str]]:
    """The pairs of one official split file; a malformed file is one UserError line naming it and the problem."""
    if not path.is_file():
        raise UserError(f"FaceForensics++ split list not found: {path} (train.json, val.json and test.json come with "
                        "the FaceForensics repository, dataset/splits/; put them in <ff-root>/splits or pass "
                        "--ff-splits)")
    try:
        data = parse_json(path.read_text(), str(path))
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, list) or not data:
        raise UserError(f"{path} must hold a non-empty JSON list of pairs like [\"071\", \"054\"]")
    pairs = []
    for i, pair in enumerate(data):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, str) and _ID.match(v) for v in pair)):
            raise UserError(f"{path}: entry {i + 1} is {json.dumps(pair)[:60]}, not a pair of three-digit video ids "
                            "like [\"071\", \"054\"]")
        pairs.append((pair[0], pair[1]))
    return pairs


def read_splits(folder: Path) -> dict[str, str]:
    """real video id -> train | val | test from the three lists in `folder`; a video in two lists is an error."""
    where: dict[str, str] = {}
    for split in SPLITS:
        path = folder / f"{split}.json"
        for pair in read_split(path):
            for vid in pair:
                if where.get(vid, split) != split:
                    raise UserError(f"{path}: video {vid} is also in {where[vid]}.json; the official lists are "
                                    "disjoint")
                where[vid] = split
    return where


def split_of(video: str, where: dict[str, str]) -> str | None:
    """The split of a real ('017') or fake ('017_042') FF++ video: its target's, if both ids are in one split."""
    ids = video.split("_")
    splits = {where.get(i) for i in ids}
    return splits.pop() if len(splits) == 1 else None


def official_videos(root: Path, compression: str, splits_dir: Path | None = None) -> tuple[list, dict]:
    """(output name, video file) for every video of an FF++ download at `compression`, placed by the official
    lists, and a summary (counts per split and method, videos in no list, DeepFakeDetection)."""
    if compression not in COMPRESSIONS:
        raise UserError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    originals = root / "original_sequences" / "youtube" / compression / "videos"
    if not originals.is_dir():
        raise UserError(f"not a FaceForensics++ download at {compression}: {originals} is missing (expected "
                        "<ff-root>/original_sequences/youtube/<c23|c40|raw>/videos and "
                        "<ff-root>/manipulated_sequences/<method>/<c>/videos)")
    where = read_splits(splits_dir or root / "splits")
    jobs: list[tuple[str, Path]] = []
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    unlisted: list[str] = []
    manipulated = root / "manipulated_sequences"
    sources = [("Real", originals)] + [(m, manipulated / m / compression / "videos") for m in METHODS]
    for method, folder in sources:
        if not folder.is_dir():
            continue  # FaceShifter and the other methods are optional downloads
        pattern = re.compile(r"^\d{3}$" if method == "Real" else r"^\d{3}_\d{3}$")
        for video in sorted(folder.glob("*.mp4")):
            if not pattern.match(video.stem):
                kind, example = ("real", "'017'") if method == "Real" else ("fake", "'017_042'")
                raise UserError(f"{video} is not named like a FaceForensics++ {kind} video ({example})")
            split = split_of(video.stem, where)
            if split is None:
                unlisted.append(f"{method}/{video.stem}")
                continue
            jobs.append((f"{SUBSET[split]}/{method}/{video.stem}", video))
            counts[split][method] = counts[split].get(method, 0) + 1
    dfd = 0
    for label, folder in (("real", root / "original_sequences" / "actors" / compression / "videos"),
                          ("fake", root / "manipulated_sequences" / "DeepFakeDetection" / compression / "videos")):
        for video in sorted(folder.glob("*.mp4")) if folder.is_dir() else ():
            jobs.append((f"DeepFakeDetection/{label}/{video.stem}", video))
            dfd += 1
    if not jobs:
        raise UserError(f"no FaceForensics++ videos at {compression} under {root}")
    summary = {"compression": compression, "videos": counts, "not_in_any_list": unlisted, "deepfakedetection": dfd,
               "listed_real_videos": {s: sum(v == s for v in where.values()) for s in SPLITS}}
    return jobs, summary


def write_marker(out: Path, summary: dict, splits_dir: Path) -> None:
    """DIR/FF_OFFICIAL.json and copies of the lists in DIR/splits/."""
    from utils import atomic_write_text
    (out / "splits").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        atomic_write_text(out / "splits" / f"{split}.json", (splits_dir / f"{split}.json").read_text())
    atomic_write_text(out / MARKER, json.dumps(summary, indent=2) + "\n")


def describe_counts(summary: dict) -> str:
    lines = []
    for split in SPLITS:
        per = summary["videos"][split]
        official = OFFICIAL_PAIRS[split] * 2
        note = "" if per.get("Real", 0) == official else f" (the official lists have {official} real videos)"
        lines.append(f"  {split}: " + ", ".join(f"{m} {n}" for m, n in per.items()) + note)
    if summary["not_in_any_list"]:
        left = summary["not_in_any_list"]
        lines.append(f"  in no list (left out): {len(left)}, e.g. {left[0]}")
    if summary["deepfakedetection"]:
        lines.append(f"  DeepFakeDetection (extra test set): {summary['deepfakedetection']} videos")
    return "\n".join(lines)
