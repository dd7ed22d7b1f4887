"""Pack face crops for fast training: decode every image once, resize it to SIZE x SIZE and store the uint8
pixels in memory-mapped shards (format: datasets/packed.py). Train from the pack with `data.packed=DIR`.

  python -m preprocess.pack --config configs/ff_wo_nt.yaml --out data/packed/ff64      # a protocol's training sets
  python -m preprocess.pack --folder data/my_faces --out data/packed/mine --size 64     # every image under a folder

Run it again after adding images (or with another config): only the images the pack lacks are decoded and
appended as new shards; a pack interrupted part-way keeps every shard already finished. Unreadable images
are listed in DIR/bad.txt and skipped (training replaces them by the next sample, as without a pack).

The size defaults to the config's img_size: training then crops (RandomResizedCrop) from SIZE pixels
instead of the original crop. A larger --size keeps more detail for the crops, at (SIZE/img_size)^2 the disk.
Non-square images are resized to a square, as evaluation does.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from utils import UserError, run_cli

SHARD_IMAGES = 50_000


def _load(args: tuple[str, int]) -> tuple[str, np.ndarray | None]:
    """(path, uint8 [3, S, S]) or (path, None) for an unreadable image. Runs in worker processes."""
    from datasets.images import BadImageError, read_image
    path, size = args
    try:
        img = read_image(path).permute(1, 2, 0).numpy()  # [H, W, 3] RGB
    except BadImageError:
        return path, None
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR
    img = cv2.resize(img, (size, size), interpolation=interp) if (h, w) != (size, size) else img
    return path, np.ascontiguousarray(img.transpose(2, 0, 1))


def _open_pack(out: Path, size: int) -> tuple[dict, dict, set]:
    """The pack at `out` (meta, index, unreadable paths), or an empty one of `size` px."""
    import json

    from datasets.packed import FORMAT, VERSION, read_index
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


def _write_shard(out: Path, chunk: list[str], results, meta: dict, bad: set, bar) -> dict[str, tuple[int, int]]:
    """Decode `chunk` (results: (path, image or None) per path) into the pack's next shard; returns the rows
    it holds (none: no shard written). Unreadable images go to `bad`."""
    size = meta["size"]
    number = len(meta["shards"])
    name = f"shard-{number:05d}.npy"
    tmp = out / (name + ".tmp")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(chunk), 3, size, size))
    rows: dict[str, tuple[int, int]] = {}
    for path, img in results:
        if img is None:
            bad.add(path)
        else:
            arr[len(rows)] = img
            rows[path] = (number, len(rows))
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


def build_pack(paths: list[str], out: Path, size: int, workers: int = 0, shard_images: int = SHARD_IMAGES,
               quiet: bool = False) -> dict:
    """Add the images of `paths` that `out` lacks; returns counts {"added", "bad", "total", "skipped"}."""
    from multiprocessing import get_context

    from tqdm import tqdm

    from datasets.packed import pack_key, write_pack_files
    meta, index, bad = _open_pack(out, size)
    keys = list(dict.fromkeys(pack_key(p) for p in paths))  # unique, in order
    todo = [k for k in keys if k not in index and k not in bad]
    counts = {"added": 0, "bad": 0, "skipped": len(keys) - len(todo)}
    pool = get_context("fork").Pool(workers) if workers > 0 else None
    bar = tqdm(total=len(todo), desc="pack", unit="img", disable=quiet or not sys.stderr.isatty(), file=sys.stderr)
    try:
        for start in range(0, len(todo), shard_images):
            chunk = todo[start:start + shard_images]
            jobs = [(p, size) for p in chunk]
            rows = _write_shard(out, chunk, pool.imap(_load, jobs, chunksize=32) if pool else map(_load, jobs),
                                meta, bad, bar)
            index.update(rows)
            write_pack_files(out, meta, index, bad)  # after every shard: an interrupted pack keeps it
            counts["added"] += len(rows)
            counts["bad"] += len(chunk) - len(rows)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    if not (out / "meta.json").is_file():
        write_pack_files(out, meta, index, bad)
    counts["total"] = meta["count"]
    return counts


def config_paths(config: str, overrides: list[str], roles: list[str]) -> tuple[list[str], int]:
    """The image paths of a config's sets in `roles` (labeled, unlabeled, test), and its img_size."""
    from config import load_config
    from datasets.protocols import prepare_data, protocol_sets
    cfg = load_config(config, overrides)
    prepare_data(cfg)
    sets = protocol_sets(cfg)
    paths = [s.path for role, _, samples in sets.values() if role in roles for s in samples]
    return paths, cfg["img_size"]


def folder_paths(folder: Path) -> list[str]:
    from datasets.images import IMG_EXTS
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}")
    out = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        out += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(IMG_EXTS)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocess.pack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="pack the images of this config's sets (see --roles)")
    src.add_argument("--folder", help="pack every image under this folder (recursively)")
    parser.add_argument("--out", required=True, help="pack folder (created, or extended if it exists)")
    parser.add_argument("--size", type=int, help="side of the stored images (default: the config's img_size, "
                                                 "or 64 with --folder)")
    parser.add_argument("--roles", default="labeled,unlabeled",
                        help="with --config: which sets (labeled, unlabeled, test; default labeled,unlabeled)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--shard-images", type=int, default=SHARD_IMAGES, help="images per shard file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (with --config)")
    args = parser.parse_args(argv)
    if args.config:
        roles = [r.strip() for r in args.roles.split(",") if r.strip()]
        unknown = set(roles) - {"labeled", "unlabeled", "test"}
        if unknown or not roles:
            raise UserError(f"--roles takes labeled, unlabeled and/or test, got {args.roles!r}")
        paths, img_size = config_paths(args.config, args.overrides, roles)
    else:
        if args.overrides:
            raise UserError("key=value overrides go with --config")
        paths, img_size = folder_paths(Path(args.folder)), 64
    size = args.size or img_size
    if size <= 0 or args.shard_images <= 0 or args.workers < 0:
        raise UserError("--size and --shard-images must be positive, --workers >= 0")
    if not paths:
        raise UserError("no images to pack")
    start = time.time()
    counts = build_pack(paths, Path(args.out), size, args.workers, args.shard_images)
    gb = counts["total"] * 3 * size * size / 1e9
    print(f"packed {counts['added']} new image(s) into {args.out} in {time.time() - start:.1f} s "
          f"({counts['skipped']} already there, {counts['bad']} unreadable -> bad.txt); "
          f"the pack holds {counts['total']} {size}px images ({gb:.2f} GB)")
    return 0


if __name__ == "__main__":
    run_cli(main)
