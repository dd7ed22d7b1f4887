"""The dataset kinds a source spec can name, in one registry: kind -> spec keys, folder layout, builder
(root -> samples), identity rule (video -> the identities it shows), links between videos, official split.

Adding a dataset = one module here defining KIND (a datasets.kinds.base.SourceKind) plus one line in KINDS.
"""
from __future__ import annotations

from datasets.kinds import celebdf, deepfakebench, dfdc, ff, flat, folder, unlabeled
from datasets.kinds.base import SourceKind
from datasets.videos import kind_of

KINDS: dict[str, SourceKind] = {
    "folder": folder.KIND,
    "flat": flat.KIND,
    "ff": ff.KIND,
    "dfdc": dfdc.KIND,
    "celebdf": celebdf.KIND,
    "deepfakebench": deepfakebench.KIND,
    "unlabeled": unlabeled.KIND,
}


def identities(video: str | None) -> tuple[str, ...]:
    """The identities a video shows (by its kind's rule; a video of no known kind shows itself)."""
    if video is None:
        return ()
    kind = KINDS.get(kind_of(video))
    return kind.identities(video) if kind else (video,)
