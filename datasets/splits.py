"""Splits by identity, never by frame: identity groups (union-find over the identities videos show),
the seeded labeled/unlabeled partition of groups, and the per-video frame limit."""
from __future__ import annotations

from typing import Any

import numpy as np

from datasets.index import Sample
from datasets.kinds import identities
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
