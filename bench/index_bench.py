"""Index benchmark: time and peak memory of indexing a generated FF++-layout tree of empty files.

python bench/index_bench.py --files 1000000 --root /tmp/index_bench
Generates <root>/FaceForensics++/train_set/<5 methods>/<video>/<frame>.png (empty files) once, then, each in a
fresh process, indexes it (os.scandir walk + CSV cache write) and loads it again from the cache.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("Real", "Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


def make_tree(root: Path, files: int, frames: int) -> None:
    marker = root / f"tree-{files}-{frames}.done"
    if marker.exists():
        return
    videos = files // (len(METHODS) * frames)
    start = time.time()
    for method in METHODS:
        for v in range(videos):
            name = f"{v:04d}" if method == "Real" else f"{v:04d}_{(v + 1) % videos:04d}"
            folder = root / "FaceForensics++" / "train_set" / method / name
            folder.mkdir(parents=True, exist_ok=True)
            for f in range(frames):
                os.close(os.open(folder / f"{f:04d}.png", os.O_CREAT | os.O_WRONLY, 0o644))
    marker.touch()
    print(f"generated {videos * frames * len(METHODS)} empty files in {time.time() - start:.1f}s", file=sys.stderr)


def index_once(root: Path, index_dir: Path) -> dict:
    from datasets.sources import build_source
    start = time.time()
    samples = build_source({"kind": "ff", "root": str(root / "FaceForensics++"), "subset": "train_set"},
                           {"labeled_fraction": 0.5, "index_dir": str(index_dir), "paths_file": None}, 0)
    return {"images": len(samples), "seconds": round(time.time() - start, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=1_000_000)
    p.add_argument("--frames", type=int, default=200, help="frames per video folder")
    p.add_argument("--root", default="/tmp/index_bench")
    p.add_argument("--child", choices=("build", "cached"), help=argparse.SUPPRESS)
    args = p.parse_args()
    root = Path(args.root)
    index_dir = root / "index"
    if args.child:
        print(json.dumps(index_once(root, index_dir)))
        return 0
    make_tree(root, args.files, args.frames)
    for f in index_dir.glob("*"):
        f.unlink()
    rows = []
    for mode in ("build", "cached"):
        out = subprocess.run([sys.executable, __file__, "--root", str(root), "--child", mode],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
        rows.append((mode, json.loads(out.stdout.strip().splitlines()[-1])))
    print("| mode | images | seconds | peak RSS (MB) |\n| --- | --- | --- | --- |")
    for mode, r in rows:
        print(f"| {mode} | {r['images']} | {r['seconds']} | {r['peak_rss_mb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
