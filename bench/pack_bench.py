"""Packing throughput: images/s of `python -m preprocess.pack` per core and its scaling with workers.

python bench/pack_bench.py --images 4000 --crop 256 --size 64 --workers 0,1,2

Generates --images face crops as extract_faces writes them (PNG, about --crop px square: the astronaut photo,
shifted and scaled a little per image so that no two files are equal), then packs them into --size px packs,
once per worker count, each in a fresh process (`--workers 0` decodes in the main process; with 0 or 1 worker the
command is pinned to one core with taskset, so those rows are per-core figures). Prints
the whole command's time (interpreter start and imports included) and the packing time the command reports
(listing, decoding, resizing, writing shards), images/s from the latter, per core, and against the first row.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_crops(folder: Path, count: int, crop: int) -> None:
    import cv2
    import skimage
    face = cv2.imread(str(Path(skimage.__file__).parent / "data" / "astronaut.png"))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        side = int(crop * rng.uniform(0.9, 1.1))
        x, y = rng.integers(0, 80, 2)
        img = cv2.resize(face[y:y + 400, x:x + 400], (side, side), interpolation=cv2.INTER_AREA)
        sub = folder / f"{i // 100:04d}"
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"{i % 100:03d}.png"), img)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--crop", type=int, default=256, help="side of the generated crops (px)")
    p.add_argument("--size", type=int, default=64, help="side of the packed images (pack --size)")
    p.add_argument("--workers", default="0,1,2", help="worker counts to run, comma-separated")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pack_bench-"))
    try:
        make_crops(tmp / "crops", args.images, args.crop)
        print(f"{args.images} PNG crops of about {args.crop} px -> {args.size} px, {os.cpu_count()} cores", flush=True)
        rows = []
        for workers in (int(w) for w in args.workers.split(",")):
            out = tmp / f"pack{workers}"
            start = time.perf_counter()
            # rows of one decoding process run pinned to one core where taskset exists: a per-core figure
            pin = ["taskset", "-c", "0"] if workers <= 1 and shutil.which("taskset") else []
            res = subprocess.run([*pin, sys.executable, "-m", "preprocess.pack", "--folder", str(tmp / "crops"), "--out",
                                  str(out), "--size", str(args.size), "--workers", str(workers)], cwd=REPO, check=True,
                                 capture_output=True, text=True)
            whole = time.perf_counter() - start
            packing = float(re.search(r" in ([0-9.]+) s", res.stdout).group(1))  # the command's own timing
            rows.append((workers, whole, packing, args.images / packing))
            shutil.rmtree(out)
        base = rows[0][3]
        print("| --workers | whole command (s) | packing (s) | images/s | images/s per core | vs first row |\n"
              "| ---: | ---: | ---: | ---: | ---: | ---: |")
        for workers, whole, packing, rate in rows:
            cores = max(workers, 1)
            print(f"| {workers} | {whole:.1f} | {packing:.1f} | {rate:.0f} | {rate / cores:.0f} | {rate / base:.2f}x |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
