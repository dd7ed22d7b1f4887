"""The index of a dataset tree: its samples (path, label, domain, video, source), the scan that finds
them, and the CSV cache that spares rescanning a tree that has not changed."""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from datasets.images import IMG_EXTS
from utils import UserError, resolve_path


@dataclass(frozen=True, slots=True)
class Sample:
    path: str
    label: int           # 0 = real, 1 = fake
    domain: str          # manipulation: Real, Deepfakes, ..., DFDC-fake, StyleGAN, or the folder's name
    video: str | None    # "<source>:<video id>" where the layout has videos
    source: str = ""     # ff, dfdc, celebdf, flat, folder


class Scan:
    """An os.scandir walk that remembers every directory it listed (and its mtime) for cache validation."""

    def __init__(self):
        self.dirs: list[tuple[str, int]] = []

    def images(self, root: Path) -> list[str]:
        """All image files below root, sorted; linear in the number of entries (no per-file stat).
        Symbolic links to folders are followed, each folder once: a link back up the tree (a loop) or an
        unreadable folder stops with one line naming it."""
        found, stack, seen = [], [str(root)], set()
        while stack:
            top = stack.pop()
            try:
                st = os.stat(top)
                if (st.st_dev, st.st_ino) in seen:
                    raise UserError(f"dataset folder {top!r} is reached twice (a symbolic link loop?): "
                                    "remove the link or point the config at a tree without loops")
                seen.add((st.st_dev, st.st_ino))
                self.dirs.append((top, st.st_mtime_ns))
                with os.scandir(top) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=True):
                            stack.append(entry.path)
                        elif entry.name.lower().endswith(IMG_EXTS):
                            found.append(entry.path)
            except OSError as err:
                raise UserError(f"cannot list dataset folder {top!r}: {err.strerror}") from None
        found.sort()
        return found

    def watch(self, path: Path) -> None:
        self.dirs.append((str(path), os.stat(path).st_mtime_ns))


def _index_files(index_dir: Path, key: dict) -> tuple[Path, Path]:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return index_dir / f"{key['kind']}-{digest}.csv", index_dir / f"{key['kind']}-{digest}.dirs.csv"


def _cache_valid(dirs_file: Path) -> bool:
    try:
        with open(dirs_file, newline="", encoding="utf-8", errors="surrogateescape") as f:
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
        with open(index_file, newline="", encoding="utf-8", errors="surrogateescape") as f:
            rows = csv.reader(f)
            next(rows)
            return [Sample(p, int(lab), one(dom), one(vid) if vid else None, one(src))
                    for p, lab, src, dom, vid in rows]
    scan = Scan()
    samples = build(scan)
    index_file.parent.mkdir(parents=True, exist_ok=True)
    rows = ((s.path, s.label, s.source, s.domain, s.video or "") for s in samples)  # streamed, not listed
    for path, header, body in ((index_file, [("path", "label", "source", "domain", "video")], rows),
                               (dirs_file, [], scan.dirs)):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: ranks may write at once
        # surrogateescape: file names that are not valid UTF-8 round-trip unchanged
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            writer = csv.writer(f)
            writer.writerows(header)
            writer.writerows(body)
        os.replace(tmp, path)
    return samples
