"""Dataset source specs: from a spec in a config to its samples (see datasets/kinds/ for the kinds).

A *source* spec names images, their labels, domains and video ids:
  "folder:PATH"  or {kind: folder, root}        any tree with real/ and fake/ (searched recursively)
  "unlabeled:PATH" or {kind: unlabeled, root, json}
                 images without labels, for data.unlabeled: a folder (recursively), a .txt list of images, or
                 DeepfakeBench's dataset JSON (datasets/kinds/unlabeled.py)
  {kind: ff, root, subset: train_set|test_set, methods: [Real, Deepfakes, ...]}
                 FaceForensics++ crops, one folder per video ('017' real, '017_042' fake = target_source)
  {kind: dfdc, root, metadata, parts: [0, 4, ...]}
                 DFDC crops, one folder per video; labels from the original parts' metadata.json files
                 found under `metadata` (a video absent from them is reported, never guessed)
  {kind: celebdf, root, folders: [...], test_list: auto|off|PATH}
                 Celeb-DF crops: youtube_real_imgs / Celeb-real / YouTube-real (real),
                 fake_imgs / Celeb-synthesis (fake), one folder per video. With Celeb-DF-v2's official
                 List_of_testing_videos.txt (auto: in root if there; PATH: required there), test sets get
                 the listed videos and training roles the others (`videos` then splits those); off: ignored
  {kind: flat, root, label: real|fake, domain}  a flat folder of one class (StyleGAN = fake, CelebA = real)
Every spec may add: videos: all|labeled|unlabeled (a seeded split by identity group, or with split_by: video by
video, stratified by label: `labeled` is `data.labeled_fraction` of them, `unlabeled` the rest),
frames_per_video, max_videos, frames: N (a seeded random N of its frames, the authors' Sin; frames_of: rest
gives the frames that draw leaves, the remaining frames of the same videos), and max_images / every (a seeded
random max_images of its images, then every `every`-th: the authors' pools).
A root may be written "{ff}/..." to use a key of the paths file (configs/paths.yaml, env SUPCON_<KEY>,
or paths.<key>=... on the command line).
A *set* is one source, or {sources: [...]} for several; test sets add `name`, `split` (known|unknown) and
`balance_classes: true` (both classes capped at the smaller one's size); a test or unlabeled set may add
`optional: true`: where a root key is unset or a root or index file is absent, the set is left out with one line
and named as missing (`absent`), never silently.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from datasets.index import Sample, cached
from datasets.kinds import KINDS
from datasets.paths import resolve_root, unset_keys
from datasets.splits import limit_frames, sample_frames, split_by_video
from utils import UserError

SET_KEYS = ("name", "split", "balance_classes", "optional")  # keys of a set, not of its sources
_COMMON_KEYS = {"kind", "videos", "split_by", "frames_per_video", "max_videos", "frames", "frames_of", "max_images",
                "every"}


def _resolved(spec: Any, data_cfg: dict) -> tuple[dict, Any]:
    """(the spec with its roots resolved, its kind); a malformed spec is a UserError."""
    if isinstance(spec, str):
        kind, _, root = spec.partition(":")
        if kind not in ("folder", "unlabeled") or not root:
            raise UserError(f"unknown dataset '{spec}' (use folder:PATH, unlabeled:PATH, or a mapping with kind: "
                            f"{'|'.join(KINDS)})")
        spec = {"kind": kind, "root": root}
    if not isinstance(spec, dict) or "kind" not in spec or "root" not in spec:
        raise UserError(f"dataset spec must be folder:PATH, unlabeled:PATH or a mapping with 'kind' and 'root', got "
                        f"{spec!r}"[:300])
    kind = KINDS.get(spec["kind"])
    if kind is None:
        raise UserError(f"unknown dataset kind '{spec['kind']}' ({', '.join(KINDS)})")
    extra = set(spec) - kind.keys - _COMMON_KEYS
    if extra:
        raise UserError(f"unknown key(s) {', '.join(sorted(extra))} in {spec['kind']} dataset spec")
    for name in kind.path_keys:
        if name not in spec:
            raise UserError(f"{spec['kind']} dataset spec needs '{name}' (expected layout: {kind.layout})")
    keys = ("root", *kind.path_keys, *(k for k in kind.optional_path_keys if spec.get(k)))
    return {**spec, **{k: str(resolve_root(spec[k], data_cfg, kind.layout)) for k in keys}}, kind


def build_source(spec: Any, data_cfg: dict, seed: int, role: str | None = None) -> list[Sample]:
    """Samples of one source spec (see the module docstring)."""
    resolved, kind = _resolved(spec, data_cfg)
    spec = resolved
    root = Path(resolved["root"])
    key = {"kind": spec["kind"], **{k: resolved.get(k) for k in sorted(kind.keys - {"test_list"})}}
    samples = cached(key, data_cfg, lambda scan: kind.build(root, resolved, scan))
    links = kind.links(resolved) if kind.links else None
    official = kind.official_split(samples, resolved, role) if kind.official_split else None
    if official is not None:  # the dataset's own test list decides the test role; `videos` splits the rest
        samples = official
    if official is None or role != "test":
        samples = split_by_video(samples, spec.get("videos", "all"), data_cfg["labeled_fraction"], seed, links,
                                 spec.get("split_by", "identity"), f"{spec['kind']} source {root}")
    per_video = spec.get("frames_per_video", data_cfg.get("frames_per_video"))
    samples = limit_frames(samples, per_video, spec.get("max_videos"), seed)
    for key in ("frames", "max_images", "every"):
        if spec.get(key) is not None and not (isinstance(spec[key], int) and not isinstance(spec[key], bool)
                                              and spec[key] > 0):
            raise UserError(f"'{key}' of a dataset spec must be a positive integer, got {spec[key]!r}")
    if spec.get("frames"):  # the authors' Sin: a seeded random subset of frames (or the rest of them)
        count = max(1, round(spec["frames"] * data_cfg.get("frames_scale", 1.0)))
        if len(samples) < count and spec.get("frames_of", "chosen") == "chosen":
            print(f"note: {spec['kind']} source {root} has {len(samples)} frames, fewer than frames: {count}: "
                  "all of them are taken (and none are left for frames_of: rest; the authors' counts need every "
                  "frame: extract_faces --preset authors)", file=sys.stderr)
        draw = json.dumps({k: v for k, v in spec.items() if k != "frames_of"}, sort_keys=True, default=str)
        samples = sample_frames(samples, count, spec.get("frames_of", "chosen"), draw, seed)
    # A pool (the authors' post-generation one): a seeded random max_images of them, then every `every`-th.
    if spec.get("max_images") and len(samples) > spec["max_images"]:
        keep = np.random.default_rng([seed, 0x9001]).permutation(len(samples))[:spec["max_images"]]
        samples = [samples[i] for i in sorted(keep)]
    return samples[:: spec.get("every") or 1]


def build_set(spec: Any, data_cfg: dict, seed: int, role: str | None = None) -> list[Sample]:
    """Samples of a set: one source, or {sources: [...]} (test sets may carry name/split keys). `role`
    (labeled, unlabeled, test) lets a source with an official test list serve the right part of it."""
    balance = isinstance(spec, dict) and spec.get("balance_classes", False)
    if isinstance(spec, dict) and "sources" in spec:
        samples = [s for src in spec["sources"] for s in build_source(src, data_cfg, seed, role)]
    else:
        if isinstance(spec, dict):
            spec = {k: v for k, v in spec.items() if k not in SET_KEYS}
        samples = build_source(spec, data_cfg, seed, role)
    return balanced(samples, seed) if balance else samples


def balanced(samples: list[Sample], seed: int) -> list[Sample]:
    """A two-class pool with both classes capped at the smaller one's size (a seeded choice, in order):
    `balance_classes: true` of a test set, so that caps cannot leave it 92% fake."""
    by_label = {label: [i for i, s in enumerate(samples) if s.label == label] for label in (0, 1)}
    n = min(len(v) for v in by_label.values())
    keep = sorted(i for label, idx in by_label.items()
                  for i in np.random.default_rng([seed, 0xba1, label]).permutation(idx)[:n].tolist())
    return [samples[i] for i in keep]


def set_links(spec: Any, data_cfg: dict) -> dict[str, str]:
    """{video: video it shows the same person as} of a set's sources beyond what their ids say (DFDC's fake ->
    original), for the identity groups of splits and of the overlap check."""
    specs = spec["sources"] if isinstance(spec, dict) and "sources" in spec else [spec]
    links: dict[str, str] = {}
    for src in specs:
        if isinstance(src, dict):
            src = {k: v for k, v in src.items() if k not in SET_KEYS}
        resolved, kind = _resolved(src, data_cfg)
        if kind.links:
            links.update(kind.links(resolved))
    return links


def absent(spec: Any, data_cfg: dict) -> str | None:
    """Why an `optional: true` set cannot be read (a root key unset, a root or index file missing), or None (it is
    there, or it is not optional). A malformed optional spec is still an error, never absent."""
    if not (isinstance(spec, dict) and spec.get("optional")):
        return None
    sources = spec["sources"] if "sources" in spec else [{k: v for k, v in spec.items() if k not in SET_KEYS}]
    for src in sources:
        kind = KINDS.get(src.get("kind")) if isinstance(src, dict) else None
        if kind is None or set(src) - kind.keys - _COMMON_KEYS:
            _resolved(src, data_cfg)  # a malformed spec: its one-line error, whatever its roots
        if isinstance(src, dict):
            unset = [k for name in ("root", "json") if isinstance(src.get(name), str)
                     for k in unset_keys(src[name], data_cfg)]
            if unset:
                return f"dataset root '{unset[0]}' is not set"
        resolved, kind = _resolved(src, data_cfg)
        for key in ("root", *kind.path_keys, *(k for k in kind.optional_path_keys if resolved.get(k))):
            if not Path(resolved[key]).exists():
                return f"{resolved[key]} not found"
    return None


def test_set_name(spec: Any, index: int) -> str:
    if isinstance(spec, dict) and spec.get("name"):
        return spec["name"]
    if isinstance(spec, str) and spec.startswith("folder:"):
        return Path(spec[len("folder:"):].rstrip("/")).name
    return f"test{index}"
