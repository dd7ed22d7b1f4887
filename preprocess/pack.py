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
import time
from pathlib import Path


from datasets.packed import SHARD_IMAGES, build_pack, folder_paths
from utils import HelpFormatter, UserError, run_cli

def config_paths(config: str, overrides: list[str], roles: list[str]) -> tuple[list[str], int]:
    """The image paths of a config's sets in `roles` (labeled, unlabeled, test), and its img_size."""
    from engine.config import load_config
    from datasets.protocols import prepare_data, protocol_sets
    cfg = load_config(config, overrides)
    prepare_data(cfg)
    sets = protocol_sets(cfg)
    paths = [s.path for role, _, samples in sets.values() if role in roles for s in samples]
    return paths, cfg["img_size"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocess.pack", description=__doc__,
                                     formatter_class=HelpFormatter)
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
