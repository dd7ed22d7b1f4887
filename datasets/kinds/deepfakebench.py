"""DeepfakeBench's preprocessed frames as a source (`kind: deepfakebench`), read through its dataset JSON.

DeepfakeBench (SCLBD/DeepfakeBench) ships face frames per dataset and one index per dataset,
`preprocessing/dataset_json/<dataset>.json`:

    {"<dataset>": {"<label>": {"train"|"val"|"test": {"<compression>": {"<video>": {"label": "<label>",
                                                                                  "frames": ["<path>", ...]}}}}}}

where the compression level (c23, c40, ...) is present for the FaceForensics++ family (FaceForensics++, FF-DF,
FF-F2F, FF-FS, FF-NT, FaceShifter, DeepFakeDetection) and absent for the others ({"<video>": {...}} directly
under the split). Frame paths are relative to DeepfakeBench's `rgb_dir` (our `root`); absolute paths from
another machine are re-rooted at the first path component that exists under `root`.

Labels map to real/fake by name (FF-real, DFD_real, CelebDFv2_real, DFDC_real, DF40's simswap_Real, ... are
real; every other label is fake) and to a manipulation family (FF-DF -> Deepfakes, FF-F2F -> Face2Face, FF-FS ->
FaceSwap, FF-NT -> NeuralTextures, FF-FH -> FaceShifter, FF-real -> Real; DF40's simswap_Fake -> simswap,
simswap_Real -> Real; other labels keep their name). Roles follow the JSON's splits: test sets get its `test`
videos, data.val its `val` videos, training roles its `train` videos (then split labeled/unlabeled by `videos`
as any source).

DF40 (YZY-stack/DF40) ships its fakes as DF40/<method>/{ff,cdf}/... and one JSON per method and domain in this
format (simswap_ff.json: {"simswap_ff": {"simswap_Real": ..., "simswap_Fake": ...}}), the real frames being
FF++'s or Celeb-DF's: one root holding both trees reads it. FF++ video names (017, 017_042) share identities
with the ff kind's, so an overlap with an FF++ folder source is caught too.

Spec: {kind: deepfakebench, root: <rgb_dir>, json: <dataset>.json, dataset: <top-level key> (default: the
JSON's only one), compression: c23 (FF++ family), labels: [FF-real, FF-DF, ...] (default: all)}
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from datasets.index import Sample, Scan
from datasets.kinds.base import SourceKind
from datasets.videos import deepfakebench_id, deepfakebench_split
from utils import UserError, parse_json

SPLITS = ("train", "val", "test")
FAMILY = {"FF-real": "Real", "FF-DF": "Deepfakes", "FF-F2F": "Face2Face", "FF-FS": "FaceSwap",
          "FF-NT": "NeuralTextures", "FF-FH": "FaceShifter"}
_DF40_LABEL = re.compile(r"^.+_(Fake|Real)$")
_FF_NAME = re.compile(r"^\d{3}(_\d{3})?$")
_CELEBDF_NAME = re.compile(r"^id\d+(_id\d+)?_\d{4}$")


def is_real(label: str) -> bool:
    return label.lower().endswith("real")


def family(label: str) -> str:
    """The manipulation family of a label: FF++'s by name, DF40's <method>_Fake -> <method>, any *_Real -> Real."""
    if label in FAMILY:
        return FAMILY[label]
    if _DF40_LABEL.match(label):
        return "Real" if is_real(label) else label.rsplit("_", 1)[0]
    return label


def load_index(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"DeepfakeBench dataset JSON not found: {path} (preprocessing/dataset_json/<dataset>.json)")
    try:
        return parse_json(path.read_text(), str(path))
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None


def _videos_of(node, where: str, path: Path, compression: str | None) -> dict:
    """The {video: info} mapping of one label/split node, through its compression level if it has one."""
    if not isinstance(node, dict):
        raise UserError(f"{path}: {where} must be a mapping, got {type(node).__name__}")
    first = next(iter(node.values()), None)
    levelled = isinstance(first, dict) and "frames" not in first and all(isinstance(v, dict) for v in node.values())
    if not levelled:
        return node
    if compression is None:
        raise UserError(f"{path}: {where} has compression levels ({', '.join(node)}): set `compression` in the spec")
    if compression not in node:
        raise UserError(f"{path}: {where} has no compression '{compression}' (it has {', '.join(node)})")
    return node[compression]


class Rerooter:
    """Frame paths -> files under root: relative paths are joined to it; an absolute path under root is kept; any
    other absolute path (another machine's) is re-rooted at its first component found under root (learned once
    per leading prefix). A path that would leave root (`..`) is a UserError: a dataset lists its own frames."""

    def __init__(self, root: Path, index: Path):
        self.root, self.index, self.prefixes = root, index, {}
        self.inside = os.path.normpath(str(root)) + os.sep

    def __call__(self, frame: str) -> str:
        p = PurePosixPath(frame)
        if not p.is_absolute():
            return self._checked(str(self.root / p), frame)
        if os.path.normpath(frame).startswith(self.inside):
            return self._checked(frame, frame)
        parts = p.parts
        for prefix, cut in self.prefixes.items():
            if parts[:len(prefix)] == prefix:
                return self._checked(str(self.root.joinpath(*parts[cut:])), frame)
        for i in range(1, len(parts) - 1):
            if (self.root / parts[i]).exists():
                self.prefixes[parts[:i]] = i
                return self._checked(str(self.root.joinpath(*parts[i:])), frame)
        return self._checked(str(self.root.joinpath(*parts[1:])), frame)  # reported as missing by the caller

    def _checked(self, path: str, listed: str) -> str:
        if not os.path.normpath(path).startswith(self.inside):
            raise UserError(f"{self.index} lists the frame {listed!r}, which is outside the dataset root {self.root}"
                            [:400])
        return path


def build(root: Path, spec: dict, scan: Scan) -> list[Sample]:
    """Every listed frame of the chosen labels, all splits (the role picks them: official_split)."""
    path = Path(spec["json"])
    index = load_index(path)
    if not isinstance(index, dict) or not index:
        raise UserError(f"{path}: expected {{\"<dataset>\": {{\"<label>\": {{\"train\": ...}}}}}}")
    dataset = spec.get("dataset") or (next(iter(index)) if len(index) == 1 else None)
    if dataset is None or dataset not in index:
        raise UserError(f"{path}: dataset {dataset!r} not in it (it has {', '.join(index)}); set `dataset` in the spec")
    labels = index[dataset]
    if not isinstance(labels, dict):
        raise UserError(f"{path}: {dataset} must map labels to splits")
    wanted = spec.get("labels") or list(labels)
    unknown = [lab for lab in wanted if lab not in labels]
    if unknown:
        raise UserError(f"{path}: label {unknown[0]!r} not in {dataset} (it has {', '.join(labels)})")
    reroot, samples, missing = Rerooter(root, path), [], []
    scan.watch(path)  # a changed JSON (or root) rebuilds the cached index
    if root.is_dir():
        scan.watch(root)
    for label in wanted:
        splits = labels[label]
        if not isinstance(splits, dict) or not set(splits) & set(SPLITS):
            raise UserError(f"{path}: {dataset}/{label} must map train/val/test to videos")
        for split in SPLITS:
            videos = _videos_of(splits.get(split, {}), f"{dataset}/{label}/{split}", path, spec.get("compression"))
            for video, info in videos.items():
                if not (isinstance(info, dict) and isinstance(info.get("frames"), list)):
                    raise UserError(f"{path}: {dataset}/{label}/{split}/{video} needs a 'frames' list")
                own = info.get("label", label)
                if not isinstance(own, str):
                    raise UserError(f"{path}: {dataset}/{label}/{split}/{video} has label {own!r}: labels are names "
                                    "(FF-real, FF-DF, ...)"[:300])
                vid = deepfakebench_id(split, own, video)
                for frame in info["frames"]:
                    f = reroot(str(frame))
                    if Path(f).is_file():
                        samples.append(Sample(f, 0 if is_real(own) else 1, family(own), vid,
                                              f"deepfakebench/{spec.get('compression') or '-'}"))
                    else:
                        missing.append(f)
    if missing:
        if not samples:
            raise UserError(f"none of the {len(missing)} frames listed in {path} exist under {root} "
                            f"(e.g. {missing[0]}): set root to DeepfakeBench's rgb_dir")
        import sys
        print(f"warning: {len(missing)} frames listed in {path} are missing under {root} (e.g. {missing[0]}); "
              "they are left out", file=sys.stderr)
    return samples


def official(samples: list[Sample], spec: dict, role: str | None) -> list[Sample] | None:
    """The JSON's split decides the role: test -> test, val (data.val) -> val, training roles -> train."""
    if role is None:
        return None
    want = role if role in ("test", "val") else "train"
    return [s for s in samples if deepfakebench_split(s.video) == want]


def identities(video: str) -> tuple[str, ...]:
    """FF++ names share the ff kind's identities (017_042 -> 017, 042); Celeb-DF's id0_id1_0003 -> id0, id1."""
    name = video.rsplit("/", 1)[-1]
    if _FF_NAME.match(name):
        return tuple(f"ff:{p}" for p in name.split("_"))
    if _CELEBDF_NAME.match(name):
        return tuple(f"celebdf:{p}" for p in name.split("_") if p.startswith("id"))
    return (video,)


LAYOUT = ("<root> = DeepfakeBench's rgb_dir, holding the frames its dataset JSON "
          "(preprocessing/dataset_json/<dataset>.json, spec key json) lists")
KIND = SourceKind(frozenset({"root", "json", "dataset", "compression", "labels"}), LAYOUT, build,
                  identities=identities, path_keys=("json",), official_split=official)
