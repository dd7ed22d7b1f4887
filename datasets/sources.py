"""Dataset sources, video/identity-level splits, dataset roots and the cached index.

A *source* spec names images, their labels, domains and video ids:
  "folder:PATH"  or {kind: folder, root}        any tree with real/ and fake/ (searched recursively)
  {kind: ff, root, subset: train_set|test_set, methods: [Real, Deepfakes, ...]}
                 FaceForensics++ crops, one folder per video ('017' real, '017_042' fake = target_source)
  {kind: dfdc, root, metadata, parts: [0, 4, ...]}
                 DFDC crops, one folder per video; labels from the original parts' metadata.json files
                 found under `metadata` (a video absent from them is reported, never guessed)
  {kind: celebdf, root, folders: [...]}
                 Celeb-DF crops: youtube_real_imgs / Celeb-real / YouTube-real (real),
                 fake_imgs / Celeb-synthesis (fake), one folder per video
  {kind: flat, root, label: real|fake, domain}  a flat folder of one class (StyleGAN = fake, CelebA = real)
Every spec may add: videos: all|labeled|unlabeled (a seeded split by identity group: `labeled` is the first
`data.labeled_fraction` of the groups, `unlabeled` the rest), frames_per_video, max_videos.
A root may be written "{ff}/..." to use a key of the paths file (configs/paths.yaml, env SUPCON_<KEY>,
or paths.<key>=... on the command line).
A *set* is one source, or {sources: [...]} for several; test sets add `name` and `split` (known|unknown).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from utils import UserError, resolve_path

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
CELEBDF_FOLDERS = {"youtube_real_imgs": 0, "Celeb-real": 0, "YouTube-real": 0, "fake_imgs": 1, "Celeb-synthesis": 1}
LAYOUTS = {
    "ff": "<root>/{train_set,test_set}/{Real,Deepfakes,Face2Face,FaceSwap,NeuralTextures}/<video>/<frame>.png",
    "dfdc": "<root>/<video>/<frame>.png plus the original parts' metadata.json files under <metadata>",
    "celebdf": "<root>/{youtube_real_imgs,fake_imgs,Celeb-real,Celeb-synthesis,YouTube-real}/<video>/<frame>.png",
    "flat": "<root>/<image>.png (one class)",
    "folder": "<root>/{real,fake}/**/<image>.png",
}


@dataclass(frozen=True, slots=True)
class Sample:
    path: str
    label: int           # 0 = real, 1 = fake
    domain: str          # manipulation: Real, Deepfakes, ..., DFDC-fake, StyleGAN, or the folder's name
    video: str | None    # "<source>:<video id>" where the layout has videos
    source: str = ""     # ff, dfdc, celebdf, flat, folder


# ----------------------------------------------------------------------------------------------- paths
def load_paths(data_cfg: dict) -> dict[str, str]:
    """Dataset roots: the paths file, then SUPCON_<KEY> environment variables, then data.paths overrides."""
    paths: dict[str, str] = {}
    file = data_cfg.get("paths_file")
    if file and resolve_path(file).is_file():
        loaded = yaml.safe_load(resolve_path(file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise UserError(f"paths file {file} must hold a mapping of names to folders")
        paths.update({k: v for k, v in loaded.items() if v})
    for key, value in os.environ.items():
        if key.startswith("SUPCON_") and value:
            paths[key[len("SUPCON_"):].lower()] = value
    paths.update({k: v for k, v in (data_cfg.get("paths") or {}).items() if v})
    return paths


def resolve_root(root: str, data_cfg: dict, kind: str) -> Path:
    """A spec's root with {key} references to the paths file filled in."""
    keys = re.findall(r"\{(\w+)\}", str(root))
    if keys:
        paths = load_paths(data_cfg)
        for key in keys:
            if key not in paths:
                raise UserError(f"dataset root '{key}' is not set: set it in {data_cfg.get('paths_file')}, with "
                                f"SUPCON_{key.upper()}=... or data.paths.{key}=... (expected layout: {LAYOUTS[kind]})")
        root = str(root).format(**paths)
    return resolve_path(root)


# ----------------------------------------------------------------------------------------------- scanning
class Scan:
    """An os.scandir walk that remembers every directory it listed (and its mtime) for cache validation."""

    def __init__(self):
        self.dirs: list[tuple[str, int]] = []

    def images(self, root: Path) -> list[str]:
        """All image files below root, sorted; linear in the number of entries (no per-file stat)."""
        found, stack = [], [str(root)]
        while stack:
            top = stack.pop()
            self.dirs.append((top, os.stat(top).st_mtime_ns))
            with os.scandir(top) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=True):
                        stack.append(entry.path)
                    elif entry.name.lower().endswith(IMG_EXTS):
                        found.append(entry.path)
        found.sort()
        return found

    def watch(self, path: Path) -> None:
        self.dirs.append((str(path), os.stat(path).st_mtime_ns))


def _index_files(index_dir: Path, key: dict) -> tuple[Path, Path]:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return index_dir / f"{key['kind']}-{digest}.csv", index_dir / f"{key['kind']}-{digest}.dirs.csv"


def _cache_valid(dirs_file: Path) -> bool:
    try:
        with open(dirs_file, newline="") as f:
            for path, mtime in csv.reader(f):
                if os.stat(path).st_mtime_ns != int(mtime):
                    return False
        return True
    except (OSError, ValueError):
        return False


def cached(key: dict, data_cfg: dict, build: Callable[[Scan], list[Sample]]) -> list[Sample]:
    """The samples of a source from the index cache (a CSV: path,label,source,domain,video), rebuilt when any
    directory listed while building it (or a watched metadata file) has changed since."""
    index_dir = data_cfg.get("index_dir")
    if not index_dir:
        return build(Scan())
    index_file, dirs_file = _index_files(resolve_path(index_dir), key)
    if index_file.is_file() and _cache_valid(dirs_file):
        shared: dict[str, str] = {}  # one string object per distinct label/source/domain/video value
        one = lambda v: shared.setdefault(v, v)  # noqa: E731
        with open(index_file, newline="") as f:
            rows = csv.reader(f)
            next(rows)
            return [Sample(p, int(lab), one(dom), one(vid) if vid else None, one(src)) for p, lab, src, dom, vid in rows]
    scan = Scan()
    samples = build(scan)
    index_file.parent.mkdir(parents=True, exist_ok=True)
    rows = ((s.path, s.label, s.source, s.domain, s.video or "") for s in samples)  # streamed, not listed
    for path, header, body in ((index_file, [("path", "label", "source", "domain", "video")], rows),
                               (dirs_file, [], scan.dirs)):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: ranks may write at once
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerows(header)
            writer.writerows(body)
        os.replace(tmp, path)
    return samples


# ----------------------------------------------------------------------------------------------- sources
def _require_dir(path: Path, what: str, kind: str | None = None) -> None:
    if not path.is_dir():
        layout = f" (expected layout: {LAYOUTS[kind]})" if kind else ""
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


def _ff_source(root: Path, subset: str, methods: list[str], scan: Scan) -> list[Sample]:
    base = root / subset
    _require_dir(base, f"FaceForensics++ '{subset}'", "ff")
    samples = []
    for method in methods:
        if method != "Real" and method not in FF_METHODS:
            raise UserError(f"unknown FaceForensics++ method '{method}' (Real, {', '.join(FF_METHODS)})")
        _require_dir(base / method, f"FaceForensics++ '{subset}/{method}'", "ff")
        videos = _video_folders(base / method, scan, "FaceForensics++")
        _check_ff_names(base / method, method, {v for v, _ in videos})
        label = int(method != "Real")
        for v, files in videos:
            video = f"ff:{method}/{v}"  # one string shared by the video's frames
            samples += [Sample(f, label, method, video, "ff") for f in files]
    return samples


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
        raise UserError(f"no Celeb-DF folders in {root} (expected layout: {LAYOUTS['celebdf']})")
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


# ----------------------------------------------------------------------------------------------- identities
def identities(video: str | None) -> tuple[str, ...]:
    """The identities a video shows: FF++ '017_042' -> (017, 042); Celeb-DF 'id0_id1_0003' -> (id0, id1);
    DFDC fakes are grouped with their original (see identity_groups); others: the video itself."""
    if video is None:
        return ()
    source, _, rest = video.partition(":")
    name = rest.split("/")[-1]
    if source == "ff":
        return tuple(f"ff:{p}" for p in name.split("_"))
    if source == "celebdf":
        ids = [p for p in name.split("_") if p.startswith("id")]
        return tuple(f"celebdf:{i}" for i in ids) or (video,)
    return (video,)


def identity_groups(samples: list[Sample], links: dict[str, str] | None = None) -> dict[str, str]:
    """video -> group key: videos that share an identity (an FF++ target/source pair, a DFDC fake and its
    original, `links`) are in one group, so splits never separate them (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    videos = sorted({s.video for s in samples if s.video})
    for v in videos:
        for ident in identities(v):
            union(v, ident)
    for a, b in (links or {}).items():
        union(a, b)
    return {v: find(v) for v in videos}


def split_by_video(samples: list[Sample], part: str, fraction: float, seed: int,
                   links: dict[str, str] | None = None) -> list[Sample]:
    """The labeled or unlabeled share of samples: a seeded partition of identity groups, never of frames,
    so all frames of a video, and all videos sharing an identity, fall on the same side."""
    if part == "all":
        return samples
    if part not in ("labeled", "unlabeled"):
        raise UserError(f"videos must be all, labeled or unlabeled, got {part!r}")
    groups = identity_groups(samples, links)
    keys = sorted(set(groups.values()))
    order = np.random.default_rng(seed).permutation(len(keys))
    first = {keys[i] for i in order[: int(round(fraction * len(keys)))]}
    want = part == "labeled"
    return [s for s in samples if (groups.get(s.video, s.path) in first) == want]


def target_id(video: str | None) -> str | None:
    """The target identity of an FF++ video id: 'ff:Deepfakes/017_042' -> '017', 'ff:Real/017' -> '017'."""
    if video is None:
        return None
    return video.split("/")[-1].split("_")[0]


def limit_frames(samples: list[Sample], per_video: int | None, max_videos: int | None = None,
                 seed: int = 0) -> list[Sample]:
    """At most `per_video` evenly spaced frames of each video and at most `max_videos` videos (seeded)."""
    by_video: dict[Any, list[Sample]] = {}
    for s in samples:
        by_video.setdefault(s.video or s.path, []).append(s)
    keys = list(by_video)
    if max_videos and len(keys) > max_videos:
        keep = np.random.default_rng(seed).permutation(len(keys))[:max_videos]
        keys = [keys[i] for i in sorted(keep)]
    out = []
    for key in keys:
        frames = by_video[key]
        if per_video and len(frames) > per_video:
            idx = np.linspace(0, len(frames) - 1, per_video).round().astype(int)
            frames = [frames[i] for i in idx]
        out.extend(frames)
    return out


_SPEC_KEYS = {"folder": {"root"}, "flat": {"root", "label", "domain"},
              "ff": {"root", "subset", "methods"}, "dfdc": {"root", "metadata", "parts"},
              "celebdf": {"root", "folders"}}
_COMMON_KEYS = {"kind", "videos", "frames_per_video", "max_videos"}


def build_source(spec: Any, data_cfg: dict, seed: int) -> list[Sample]:
    """Samples of one source spec (see the module docstring)."""
    if isinstance(spec, str):
        if not spec.startswith("folder:"):
            raise UserError(f"unknown dataset '{spec}' (use folder:PATH, or a mapping with kind: "
                            f"{'|'.join(_SPEC_KEYS)})")
        spec = {"kind": "folder", "root": spec[len("folder:"):]}
    if not isinstance(spec, dict) or "kind" not in spec or "root" not in spec:
        raise UserError(f"dataset spec must be folder:PATH or a mapping with 'kind' and 'root', got {spec!r}")
    kind = spec["kind"]
    if kind not in _SPEC_KEYS:
        raise UserError(f"unknown dataset kind '{kind}' ({', '.join(_SPEC_KEYS)})")
    extra = set(spec) - _SPEC_KEYS[kind] - _COMMON_KEYS
    if extra:
        raise UserError(f"unknown key(s) {', '.join(sorted(extra))} in {kind} dataset spec")
    root = resolve_root(spec["root"], data_cfg, kind)
    key = {"kind": kind, "root": str(root), **{k: spec.get(k) for k in sorted(_SPEC_KEYS[kind] - {"root"})}}
    links = None
    if kind == "folder":
        samples = cached(key, data_cfg, lambda scan: _folder_source(root, scan))
    elif kind == "flat":
        samples = cached(key, data_cfg, lambda scan: _flat_source(root, spec.get("label", "fake"),
                                                                  spec.get("domain"), scan))
    elif kind == "ff":
        methods = list(spec.get("methods", ["Real", *FF_METHODS]))
        samples = cached(key, data_cfg, lambda scan: _ff_source(root, spec.get("subset", "train_set"), methods, scan))
    elif kind == "dfdc":
        if "metadata" not in spec:
            raise UserError("dfdc dataset spec needs 'metadata': the folder holding the parts' metadata.json files")
        meta_root = resolve_root(spec["metadata"], data_cfg, kind)
        key["metadata"] = str(meta_root)
        samples = cached(key, data_cfg, lambda scan: _dfdc_source(root, meta_root, spec.get("parts"), scan))
        meta = dfdc_metadata(meta_root, Scan())
        links = {f"dfdc:{v}": f"dfdc:{m['original']}" for v, m in meta.items() if m["original"]}
    else:
        samples = cached(key, data_cfg, lambda scan: _celebdf_source(root, spec.get("folders"), scan))
    samples = split_by_video(samples, spec.get("videos", "all"), data_cfg["labeled_fraction"], seed, links)
    per_video = spec.get("frames_per_video", data_cfg.get("frames_per_video"))
    return limit_frames(samples, per_video, spec.get("max_videos"), seed)


def build_set(spec: Any, data_cfg: dict, seed: int) -> list[Sample]:
    """Samples of a set: one source, or {sources: [...]} (test sets may carry name/split keys)."""
    if isinstance(spec, dict) and "sources" in spec:
        return [s for src in spec["sources"] for s in build_source(src, data_cfg, seed)]
    if isinstance(spec, dict):
        spec = {k: v for k, v in spec.items() if k not in ("name", "split")}
    return build_source(spec, data_cfg, seed)


def build_samples(specs: list, data_cfg: dict, seed: int, what: str) -> list[Sample]:
    """Concatenate the samples of several sets (the labeled or unlabeled data of a config)."""
    if not specs:
        raise UserError(f"no {what} data configured (data.{what} is empty)")
    samples = [s for spec in specs for s in build_set(spec, data_cfg, seed)]
    if not samples:
        raise UserError(f"the {what} split is empty")
    return samples


def test_set_name(spec: Any, index: int) -> str:
    if isinstance(spec, dict) and spec.get("name"):
        return spec["name"]
    if isinstance(spec, str) and spec.startswith("folder:"):
        return Path(spec[len("folder:"):].rstrip("/")).name
    return f"test{index}"


def test_sets(cfg: dict, extra: list[str] = ()) -> dict[str, tuple[str | None, list[Sample]]]:
    """{name: (split, samples)} for the config's test sets, or for ad-hoc `folder:PATH` ones if given."""
    out: dict[str, tuple[str | None, list[Sample]]] = {}
    specs = list(extra) if extra else list(cfg["data"]["test"])
    for i, spec in enumerate(specs):
        name = test_set_name(spec, i)
        split = spec.get("split") if isinstance(spec, dict) else None
        if split not in (None, "known", "unknown"):
            raise UserError(f"test set '{name}': split must be known or unknown, got {split!r}")
        out[name] = (split, build_set(spec, cfg["data"], cfg["seed"]))
    if not out:
        raise UserError("no test sets: configure data.test or pass --test folder:PATH")
    return out


def prepare_data(cfg: dict) -> None:
    """Generate the embedded demo benchmark first if the config asks for it and it is missing."""
    if cfg["data"].get("demo"):
        from preprocess.demo import ensure_demo
        from utils import barrier, is_main_process
        if is_main_process():  # one process writes it; the others wait for it
            ensure_demo(resolve_path(cfg["data"]["demo"]))
        barrier()
