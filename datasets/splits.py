"""Splits by identity, never by frame: identity groups (union-find over the identities videos show),
the seeded labeled/unlabeled partition of groups, and the per-video frame limit."""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import numpy as np

from datasets.index import Sample
from datasets.kinds import identities
from datasets.videos import split_by_video as by_video_id
from utils import UserError


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
                   links: dict[str, str] | None = None, by: str = "identity", what: str = "a source") -> list[Sample]:
    """The labeled or unlabeled share of samples, never a split of frames: by="identity", a seeded partition
    of identity groups, so all frames of a video and all videos sharing an identity fall on the same side (a
    group too large for that is a UserError: check_groups); by="video", a seeded partition of videos,
    stratified by label (the same share of the real and of the fake videos on each side)."""
    if part == "all":
        return samples
    if part not in ("labeled", "unlabeled"):
        raise UserError(f"videos must be all, labeled or unlabeled, got {part!r}")
    if by not in ("identity", "video"):
        raise UserError(f"split_by must be identity or video, got {by!r}")
    if by == "video":  # (its ids say so: each video is then its own identity group, datasets/videos.py)
        groups = {s.video: f"{s.label}/{s.video}" for s in samples if s.video}
        first = set()
        for label in sorted({s.label for s in samples}):
            keys = sorted({g for g in groups.values() if g.startswith(f"{label}/")})
            order = np.random.default_rng([seed, label + 1]).permutation(len(keys))
            first |= {keys[i] for i in order[: int(round(fraction * len(keys)))]}
        want = part == "labeled"
        return [Sample(s.path, s.label, s.domain, by_video_id(s.video) if s.video else None, s.source)
                for s in samples if (groups.get(s.video, s.path) in first) == want]
    else:
        groups = identity_groups(samples, links)
        check_groups(groups, what)
        GROUP_SHARES[what] = largest_group(groups)
        keys = sorted(set(groups.values()))
        order = np.random.default_rng(seed).permutation(len(keys))
        first = {keys[i] for i in order[: int(round(fraction * len(keys)))]}
    want = part == "labeled"
    return [s for s in samples if (groups.get(s.video, s.path) in first) == want]


def largest_group(groups: dict[str, str]) -> tuple[float, int]:
    """(the largest identity group's share of the videos, the number of groups)."""
    sizes = Counter(groups.values())
    return (max(sizes.values()) / len(groups), len(sizes)) if sizes else (0.0, 0)


def check_groups(groups: dict[str, str], what: str) -> None:
    """A split by identity group cannot be a split when one group holds most of the videos (Celeb-DF's
    idA_idB names link its celebrities into a handful of groups): more than max(20%, 2 / groups) of a
    source's videos in one group stops with one line."""
    share, n = largest_group(groups)
    if n > 1 and share > max(MAX_GROUP_SHARE, 2 / n):
        raise UserError(f"{what}: one identity group holds {share:.0%} of its {len(groups)} videos ({n} groups), so "
                        "a split by identity puts most of it on one side: split it by video (split_by: video), or "
                        "use its official test list")


MAX_GROUP_SHARE = 0.2
# (largest group's share, groups) of each source a split by identity group was made of, as the last build saw
# them: datasets.protocols reports them (describe, the run log)
GROUP_SHARES: dict[str, tuple[float, int]] = {}


def sample_frames(samples: list[Sample], count: int, part: str, key: str, seed: int) -> list[Sample]:
    """A seeded random subset of `count` frames of `samples` (part "chosen"), or the frames it leaves out
    (part "rest": the remaining frames of the same videos); `key` names the draw, so that the two parts of one
    source come from the same draw. Fewer frames than `count`: all of them are chosen (the caller says so)."""
    if part not in ("chosen", "rest"):
        raise UserError(f"frames_of must be chosen or rest, got {part!r}")
    digest = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    picked = set(np.random.default_rng([seed, digest]).permutation(len(samples))[:count].tolist())
    return [s for i, s in enumerate(samples) if (i in picked) == (part == "chosen")]


def hold_out(samples: list[Sample], fraction: float, seed: int,
             links: dict[str, str] | None = None) -> tuple[list[Sample], list[Sample]]:
    """(kept, held out): a seeded share `fraction` of the identity groups of `samples` held out (the
    validation set), by group as every split here, so no video or identity is on both sides. At least one
    group stays on each side; fewer than two groups is a UserError. `links`: as identity_groups."""
    groups = identity_groups(samples, links)
    keys = sorted(set(groups.values()) | {s.path for s in samples if not s.video})
    if len(keys) < 2:
        raise UserError(f"the labeled set has {len(keys)} identity group(s): a validation set needs at least two")
    n = min(max(1, int(round(fraction * len(keys)))), len(keys) - 1)
    order = np.random.default_rng([seed, 0x7a1]).permutation(len(keys))  # another stream than the labeled split
    held = {keys[i] for i in order[:n]}
    key = lambda s: groups.get(s.video, s.path) if s.video else s.path  # noqa: E731
    return [s for s in samples if key(s) not in held], [s for s in samples if key(s) in held]


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


def per_class(samples: list[Sample], k: int, seed: int) -> list[Sample]:
    """A seeded k images of each class (fewer where a class has fewer), in the samples' order: a few-shot set."""
    keep = []
    for label in (0, 1):
        idx = [i for i, s in enumerate(samples) if s.label == label]
        keep += np.random.default_rng([seed, 0xf5, label]).permutation(idx)[:k].tolist() if idx else []
    if not keep:
        raise UserError("a few-shot source has no labeled image")
    return [samples[i] for i in sorted(keep)]
