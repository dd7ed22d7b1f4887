"""How a pack names its images: by their path below the folder they were under when packed (the pack's
"base"), so that a pack still finds them after the repository or the datasets move. A path under the base is
its relative path. When the base is gone (moved), another path is re-rooted at the shortest prefix whose
remainder is a key of the pack (learned once), as DeepfakeBench's frame paths are
(datasets/kinds/deepfakebench.py); while the base exists, a path outside it is another image. Packs of format
version 1 named images by absolute path: `base` None keeps that.
"""
from __future__ import annotations

import os


class PackKeys:
    """path -> the pack's key for it; `known`: the keys the pack holds (to learn where its images are now)."""

    def __init__(self, base: str | None, known: set[str]):
        self.base, self.known = base, known
        self.gone: bool | None = None  # whether the base folder no longer exists (checked once)

    def __call__(self, path: str) -> str:
        p = os.path.abspath(path)
        if self.base is None:
            return p
        if p.startswith(self.base.rstrip(os.sep) + os.sep):
            return p[len(self.base.rstrip(os.sep)) + 1:]
        if self.gone is None:
            self.gone = not os.path.isdir(self.base)
        parts = p.split(os.sep) if self.gone else []
        for i in range(1, len(parts)):
            rest = os.sep.join(parts[i:])
            if rest in self.known:
                self.base, self.gone = os.sep.join(parts[:i]) or os.sep, False
                return rest
        return p  # not in the pack (absolute: never a key of a version-2 pack)

    def outside(self, key: str) -> bool:
        """Whether a key of __call__ is an absolute path: an image outside the pack's base."""
        return self.base is not None and os.path.isabs(key)


def widened(base: str | None, paths: list[str], index: dict, bad: set) -> tuple[str | None, dict, set]:
    """The base of a pack that is to hold `paths` (absolute) too: the common folder of its old base and theirs,
    its keys re-keyed to it (a pack holding FF++ crops that gets the StyleGAN folder beside them)."""
    if base is None or not paths:
        return base, index, bad
    new = os.path.commonpath([base, *paths])
    if new == base:
        return base, index, bad
    prefix = os.path.relpath(base, new)
    return new, {os.path.join(prefix, k): v for k, v in index.items()}, {os.path.join(prefix, k) for k in bad}


def first_base(paths: list[str]) -> str:
    """The base of a new pack: the common folder of its images."""
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    return os.path.commonpath(list(folders)) if folders else os.sep
