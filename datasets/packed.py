"""Packed face crops: decoded uint8 images at one fixed resolution in memory-mapped shards.

A pack is a folder:

    meta.json            {"format": "supcon-mpl-pack", "version": 1, "size": S, "count": N, "shards": [...]}
    shard-00000.npy ...  uint8 [n, 3, S, S] (NumPy .npy, opened memory-mapped)
    index.csv            path,shard,row   (absolute path of the source image -> where its pixels are)
    bad.txt              source images that could not be decoded (never packed)

`python -m preprocess.pack` builds one from a config's training sets or from a folder, and adds to an
existing pack only the images it lacks. With `data.packed: <folder>` the training scripts take their
batches from it (PackedBatches): no per-image decode, a background thread gathers each batch's rows into
pinned memory, the copy to the device is non-blocking, and the augmentation runs batched on the device
(datasets/augment.py). Splits, sampling and labels still come from the dataset sources, so a run with and
without a pack sees the same images in the same order.
"""
from __future__ import annotations

import errno
import json
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from datasets.augment import BatchAugment, view_specs
from datasets.images import IMG_EXTS
from datasets.pack_keys import PackKeys, first_base, widened
from datasets.pack_workers import init_loader, load
from datasets.index import Sample
from datasets.sampling import StepBatchSampler, stream_seed
from engine.dist import rank_world
from utils import UserError, atomic_write_text

FORMAT, VERSION = "supcon-mpl-pack", 2  # 2: images named relative to the pack's base (datasets/pack_keys.py)


class Pack:
    """A pack opened for reading: rows of images looked up by source path."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta_file = self.folder / "meta.json"
        if not meta_file.is_file():
            raise UserError(f"not a pack: {self.folder} has no meta.json (build one with python -m preprocess.pack)")
        self.meta = json.loads(meta_file.read_text())
        if self.meta.get("format") != FORMAT or self.meta.get("version") not in (1, VERSION):
            raise UserError(f"{meta_file} is not a {FORMAT} file of version 1 or {VERSION}")
        self.size = int(self.meta["size"])
        self.shards = [np.load(self.folder / s["file"], mmap_mode="r") for s in self.meta["shards"]]
        for arr, s in zip(self.shards, self.meta["shards"]):
            if arr.shape != (s["count"], 3, self.size, self.size) or arr.dtype != np.uint8:
                raise UserError(f"pack shard {self.folder / s['file']} is damaged (shape {arr.shape}); rebuild the pack")
        self.location = read_index(self.folder)  # path -> (shard, row)
        bad_file = self.folder / "bad.txt"
        self.bad = set(bad_file.read_text().splitlines()) if bad_file.is_file() else set()
        self.keys = PackKeys(self.meta.get("base") if self.meta["version"] >= 2 else None, set(self.location) | self.bad)

    def rows(self, samples: list[Sample], what: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(shard, row) of each sample, -1 for images the pack lists as unreadable; a sample the pack
        does not hold is a UserError."""
        shard = np.full(len(samples), -1, dtype=np.int64)
        row = np.full(len(samples), -1, dtype=np.int64)
        missing, bad = [], []
        for i, s in enumerate(samples):
            key = self.keys(s.path)
            loc = self.location.get(key)
            if loc is not None:
                shard[i], row[i] = loc
            elif key in self.bad:
                bad.append(s.path)
            else:
                missing.append(s.path)
        if missing:
            raise UserError(f"{len(missing)} of the {len(samples)} {what} images are not in pack {self.folder} "
                            f"(e.g. {missing[0]}); add them with python -m preprocess.pack --out {self.folder} "
                            "and the same config")
        if len(bad) == len(samples):
            raise UserError(f"every {what} image is listed as unreadable in {self.folder / 'bad.txt'}")
        return shard, row, bad

    def gather(self, shard: np.ndarray, row: np.ndarray, out: np.ndarray) -> None:
        """Copy the images at (shard, row) into out [n, 3, S, S], reading each shard in row order."""
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            order = sel[np.argsort(row[sel])]  # ascending rows: sequential reads of the memory map
            out[order] = self.shards[s][row[order]]


def read_index(folder: Path) -> dict[str, tuple[int, int]]:
    index = folder / "index.csv"
    if not index.is_file():
        return {}
    out = {}
    with open(index) as f:
        header = f.readline().rstrip("\n")
        if header != "path,shard,row":
            raise UserError(f"{index} has an unexpected header {header!r}; rebuild the pack")
        for line in f:
            path, shard, row = line.rstrip("\n").rsplit(",", 2)
            out[path] = (int(shard), int(row))
    return out


def write_pack_files(folder: Path, meta: dict, index: dict[str, tuple[int, int]], bad: set[str]) -> None:
    """index.csv, bad.txt and (last, so a pack is only valid once complete) meta.json, each atomically."""
    rows = "".join(f"{p},{s},{r}\n" for p, (s, r) in index.items())
    atomic_write_text(folder / "index.csv", "path,shard,row\n" + rows)
    atomic_write_text(folder / "bad.txt", "".join(f"{p}\n" for p in sorted(bad)))
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------- writing
SHARD_IMAGES = 50_000


def _open_pack(out: Path, size: int) -> tuple[dict, dict, set]:
    """The pack at `out` (meta, index, unreadable paths), or an empty one of `size` px."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    meta_file = out / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {
        "format": FORMAT, "version": VERSION, "size": size, "count": 0, "shards": []}
    if meta.get("format") != FORMAT:
        raise UserError(f"{out} holds something other than a pack ({meta_file})")
    if meta["size"] != size:
        raise UserError(f"pack {out} holds {meta['size']}px images; pack {size}px images into another folder")
    bad_file = out / "bad.txt"
    return meta, read_index(out), set(bad_file.read_text().splitlines()) if bad_file.is_file() else set()


def _reserve(path: Path) -> None:
    """Allocate a new (sparse) shard file's blocks now: on a full disk, writing into a memory map of unallocated
    blocks kills the process with SIGBUS; fallocate fails with ENOSPC instead (a one-line error)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: nothing to reserve
            return
        path.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        os.close(fd)


def _write_shard(out: Path, chunk: list[str], results, meta: dict, bad: set, bar) -> dict[str, tuple[int, int]]:
    """Decode `chunk` (the images' keys; results: (path, image or None) per key, in order) into the pack's next
    shard; returns the rows it holds by key (none: no shard written). Unreadable images go to `bad`."""
    size = meta["size"]
    number = len(meta["shards"])
    name = f"shard-{number:05d}.npy"
    tmp = out / (name + ".tmp")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(chunk), 3, size, size))
    _reserve(tmp)
    rows: dict[str, tuple[int, int]] = {}
    for key, (_, img) in zip(chunk, results):
        if img is None:
            bad.add(key)
        else:
            arr[len(rows)] = img
            rows[key] = (number, len(rows))
        bar.update()
    arr.flush()
    del arr
    if not rows:  # nothing readable in this chunk
        tmp.unlink()
        return rows
    if len(rows) < len(chunk):  # unreadable images left empty rows at the end: drop them
        np.save(tmp.with_suffix(".cut"), np.load(tmp, mmap_mode="r")[:len(rows)])
        os.replace(tmp.with_suffix(".cut.npy"), tmp)
    os.replace(tmp, out / name)
    meta["shards"].append({"file": name, "count": len(rows)})
    meta["count"] = sum(s["count"] for s in meta["shards"])
    return rows


def _keyed(meta: dict, paths: list[str], index: dict, bad: set) -> tuple[dict[str, str], dict, set]:
    """{key: path} of the images to pack (a key already in the pack is the same image, wherever the pack was
    built), and the pack's index and bad list re-keyed when its base widens to hold them (meta["base"] set)."""
    if meta["version"] < 2:  # a version-1 pack: absolute paths, as it was built
        return {p: p for p in paths}, index, bad
    keys = PackKeys(meta.get("base") or first_base(paths), set(index) | bad)
    keyed = {keys(p): p for p in paths}  # (learns where the packed images are now, if they moved)
    outside = [p for k, p in keyed.items() if keys.outside(k)]
    if outside:
        keys.base, index, bad = widened(keys.base, outside, index, bad)
        keys.known = set(index) | bad
        keyed = {keys(p): p for p in paths}
    meta["base"] = keys.base
    return keyed, index, bad


def build_pack(paths: list[str], out: Path, size: int, workers: int = 0, shard_images: int = SHARD_IMAGES,
               quiet: bool = False) -> dict:
    """Add the images of `paths` that `out` lacks; returns counts {"added", "bad", "total", "skipped"}."""
    from multiprocessing import get_context

    from tqdm import tqdm

    meta, index, bad = _open_pack(out, size)
    base = meta.get("base")
    keyed, index, bad = _keyed(meta, [os.path.abspath(p) for p in dict.fromkeys(paths)], index, bad)
    todo = [(k, p) for k, p in keyed.items() if k not in index and k not in bad]
    counts = {"added": 0, "bad": 0, "skipped": len(keyed) - len(todo)}
    # forkserver: a fork of this process (which may run threads: torch's, a loader's) could deadlock its children
    pool = get_context("forkserver").Pool(workers, init_loader) if workers > 0 else None
    bar = tqdm(total=len(todo), desc="pack", unit="img", disable=quiet or not sys.stderr.isatty(), file=sys.stderr)
    try:
        for start in range(0, len(todo), shard_images):
            chunk = todo[start:start + shard_images]
            jobs = [(p, size) for _, p in chunk]
            rows = _write_shard(out, [k for k, _ in chunk], pool.imap(load, jobs, chunksize=32) if pool
                                else map(load, jobs), meta, bad, bar)
            index.update(rows)
            write_pack_files(out, meta, index, bad)  # after every shard: an interrupted pack keeps it
            counts["added"] += len(rows)
            counts["bad"] += len(chunk) - len(rows)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    if not (out / "meta.json").is_file() or meta.get("base") != base:  # new, or its images moved or widened
        write_pack_files(out, meta, index, bad)
    counts["total"] = meta["count"]
    return counts


def folder_paths(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}")
    out = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        out += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(IMG_EXTS)]
    return out


# ----------------------------------------------------------------------------------------------- batches
class PackedBatches:
    """Endless training batches from a pack, the same samples and order as the folder path's loader
    (StepBatchSampler), augmented on `device`. Yields (*views, labels, bad) like the DataLoader path:
    views float [B, 3, img_size, img_size] on the device, labels [B] on the device, bad a list of strings.

    Distributed: batch_size is the global batch; each rank takes its contiguous slice of the indices and
    of the augmentation parameters, so N ranks together see exactly the single-process batch.
    """

    def __init__(self, pack: Pack, samples: list[Sample], cfg: dict, batch_size: int, views: int, balance: bool,
                 stream: str, start_step: int, device: torch.device, what: str = "training", role: str = "labeled"):
        self.pack, self.views, self.device = pack, views, device
        self.rank, self.world = rank_world()
        if batch_size % self.world:
            raise UserError(f"batch size {batch_size} is not divisible by the number of processes ({self.world})")
        self.local = batch_size // self.world
        self.shard, self.row, bad = pack.rows(samples, what)
        self.bad_paths = set(bad)
        self.paths = [s.path for s in samples]
        # An unreadable image is replaced by the next readable sample, as the folder path does.
        ok = np.flatnonzero(self.row >= 0)
        nxt = np.searchsorted(ok, np.arange(len(samples)))
        self.substitute = ok[nxt % len(ok)]  # [N] index of the first readable sample at or after i (cyclic)
        self.labels = np.array([s.label for s in samples], dtype=np.int64)
        self.sampler = StepBatchSampler(self.labels, batch_size, cfg["seed"], stream, balance, start_step)
        self.seed, self.stream = cfg["seed"], stream
        self.augments = [BatchAugment(spec) for spec in view_specs(cfg, role, views)]  # one per view
        self.step = start_step
        self.pin = device.type == "cuda"
        self.queue: queue.Queue = queue.Queue(maxsize=3)
        self.thread: threading.Thread | None = None
        self.stopped = threading.Event()

    def host_batch(self, step: int) -> tuple:
        """The rank's part of the batch of `step` on the host: uint8 images, labels, augmentation
        parameters [views, b, N_PARAMS] and the unreadable paths replaced in it."""
        idx = self.sampler.indices(step)  # [global B]
        gen = torch.Generator()
        params = []
        for v in range(self.views):  # drawn for the global batch, then sliced: same on any number of ranks
            gen.manual_seed(stream_seed(self.seed, self.stream, "batch-aug", step, v))
            params.append(self.augments[v].params(len(idx), gen))
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        idx = idx[lo:hi]
        bad = [self.paths[i] for i in idx if self.row[i] < 0]
        idx = self.substitute[idx]
        images = torch.empty(len(idx), 3, self.pack.size, self.pack.size, dtype=torch.uint8)
        self.pack.gather(self.shard[idx], self.row[idx], images.numpy())
        p = torch.stack([q[lo:hi] for q in params])  # [views, b, N_PARAMS]
        labels = torch.from_numpy(self.labels[idx])
        if self.pin:
            images, p, labels = images.pin_memory(), p.pin_memory(), labels.pin_memory()
        return images, labels, p, bad

    def _fill(self) -> None:
        step = self.step
        while not self.stopped.is_set():
            try:
                item = self.host_batch(step)
            except BaseException as err:  # hand the error to the training thread
                item = err
            while not self.stopped.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    pass
            if isinstance(item, BaseException):
                return
            step += 1

    def close(self) -> None:
        """Stop the loader thread and drop its prefetched batches."""
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> tuple:
        if self.thread is None:
            self.thread = threading.Thread(target=self._fill, daemon=True, name="pack-loader")
            self.thread.start()
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        images, labels, p, bad = item
        self.step += 1
        images = images.to(self.device, non_blocking=True)
        p = p.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        views = [self.augments[v](images, p[v]) for v in range(self.views)]
        return (*views, labels, ["\n".join(bad)])
