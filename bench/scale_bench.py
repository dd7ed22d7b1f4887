"""Memory and time at scale: index, pack and one training epoch over a generated tree of tiny face crops.

python bench/scale_bench.py --images 1000000 --root /tmp/scale_bench

Generates <root>/FaceForensics++/{train_set,test_set}/<5 methods>/<video>/<frame>.png (tiny PNGs, 100 frames
per video) once, writes a config for it (test_resnet, `pretrained: none`, img_size = --size, the pack at
<root>/pack) and runs, each in its own process as a user would:

  index   python -m datasets describe --protocol CONFIG        (a cold index cache: scans the tree)
  pack    python -m preprocess.pack --config CONFIG --out PACK  (labeled + unlabeled: every training image)
  train   python train_pt.py --config CONFIG                    (one epoch of the labeled set, from the pack)

For each stage: wall time and peak host memory of the stage's whole process tree (its workers included),
sampled from /proc every 0.2 s: PSS (resident pages, those shared between processes split among them, so the
sum over a tree is what it holds) and its private part (anonymous + shared memory, i.e. without file pages
such as the pack's memory map, which the kernel can drop and reread). For training,
the run's own log (`rss_mb`, `private_mb` every `log_every` steps, engine/logger.py) gives memory against the
step: the bench prints its growth from step 100 to the end, per 1,000 steps. Writes <root>/scale_bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
METHODS = ("Real", "Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
FRAMES = 100  # per video


def video_name(method: str, v: int) -> str:
    """FF++ names: real videos by id, fakes as target_source; ids pair up (0 with 1, 2 with 3, ...), so that
    identity groups (datasets/splits.py) are pairs, as FF++'s are."""
    return f"{v:05d}" if method == "Real" else f"{v:05d}_{v ^ 1:05d}"


def make_tree(root: Path, images: int, size: int, test_videos: int) -> None:
    """images / 5 PNGs per method in the train set (FF++ layout), test_videos x 10 frames per method in the test
    set. The PNGs are copies of 64 encoded noise images per method (a tint per label), written as bytes."""
    marker = root / f"tree-{images}-{size}.done"
    if marker.exists():
        return
    import cv2
    rng = np.random.default_rng(0)
    encoded = {}
    for k, method in enumerate(METHODS):
        tint = np.array([20 * k, 0, 0], np.int16)
        encoded[method] = [cv2.imencode(".png", np.clip(rng.integers(0, 200, (size, size, 3)) + tint, 0, 255)
                                        .astype(np.uint8))[1].tobytes() for _ in range(64)]
    videos = max(images // (len(METHODS) * FRAMES), 1)
    start = time.time()
    first_test = videos + videos % 2  # test identities after the training ones
    for subset, ids, frames in (("train_set", range(videos), FRAMES),
                                ("test_set", range(first_test, first_test + test_videos), 10)):
        for method in METHODS:
            for v in ids:
                folder = root / "FaceForensics++" / subset / method / video_name(method, v)
                folder.mkdir(parents=True, exist_ok=True)
                for f in range(frames):
                    fd = os.open(folder / f"{f:04d}.png", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
                    os.write(fd, encoded[method][(v * frames + f) % 64])
                    os.close(fd)
    marker.touch()
    print(f"generated {videos * FRAMES * len(METHODS)} training images in {time.time() - start:.0f} s", flush=True)


def write_config(root: Path, size: int, batch: int, steps: int) -> Path:
    tree = str(root / "FaceForensics++")
    ff = {"kind": "ff", "root": tree, "subset": "train_set", "methods": list(METHODS)}
    cfg = {
        "backbone": "test_resnet", "pretrained": "none", "img_size": size, "workers": 0, "log_every": 10,
        "checkpoint_every": 100_000,
        "data": {"packed": str(root / "pack"), "index_dir": str(root / "index"), "labeled_fraction": 0.5,
                 "labeled": [{**ff, "videos": "labeled"}], "unlabeled": [{**ff, "videos": "unlabeled"}],
                 "test": [{"name": "Test", "split": "known", "kind": "ff", "root": tree, "subset": "test_set",
                           "methods": list(METHODS)}]},
        "aug": {"scale": [0.7, 1.0]},
        "pt": {"steps": steps, "batch_size": batch, "lr": 1.0e-3},
    }
    import yaml
    path = root / "scale.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def tree_memory(pid: int) -> tuple[float, float]:
    """(PSS, private PSS) in MB summed over pid and its descendants, from /proc/<pid>/smaps_rollup: pages
    shared by several processes (forked workers, libraries) count once in the sum, split between them;
    private: anonymous and shared-memory pages (no file pages)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    pss = private = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        kb = {k: float(v.split()[0]) for k, v in (line.split(":", 1) for line in lines)}
        pss += kb.get("Pss", 0) / 1024
        private += (kb.get("Pss_Anon", 0) + kb.get("Pss_Shmem", 0)) / 1024
    return pss, private


def stage(name: str, cmd: list[str], log: Path) -> dict:
    """Run one stage, sampling its process tree's memory; a failure stops the bench with the stage's log."""
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    start = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        peak_pss = peak_private = 0.0
        while proc.poll() is None:
            pss, private = tree_memory(proc.pid)
            peak_pss, peak_private = max(peak_pss, pss), max(peak_private, private)
            time.sleep(0.2)
    wall = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"[{name}] failed (exit {proc.returncode}); its output: {log}\n" + log.read_text()[-3000:])
    row = {"stage": name, "seconds": round(wall, 1), "peak_pss_mb": round(peak_pss), "peak_private_mb": round(peak_private)}
    print(f"[{name}] {row}", flush=True)
    return row


def memory_by_step(run_dir: Path, after: int) -> dict:
    """Training memory against the step, from the run's train_log.jsonl: first/last logged values after
    step `after` and the growth per 1,000 steps (least squares)."""
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "private_mb" in r and r["step"] >= after]
    steps = np.array([r["step"] for r in rows], float)
    out = {"logged_steps": [int(steps[0]), int(steps[-1])], "points": len(rows)}
    for key in ("rss_mb", "private_mb"):
        values = np.array([r[key] for r in rows])
        slope = np.polyfit(steps, values, 1)[0] if len(rows) > 1 else 0.0
        out[key] = {"at_first": values[0], "at_last": values[-1], "max": values.max(),
                    "growth_per_1000_steps": round(float(slope * 1000), 1)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1_000_000, help="training images in the generated tree")
    p.add_argument("--root", default="/tmp/scale_bench")
    p.add_argument("--size", type=int, default=16, help="side of the generated PNGs and the training img_size")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pack's decoding processes")
    p.add_argument("--keep", action="store_true", help="keep the pack, index and run (the tree is always kept)")
    args = p.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    make_tree(root, args.images, args.size, test_videos=4)
    labeled = args.images // 2  # labeled_fraction 0.5 of the videos, all of equal length
    steps = -(-labeled // args.batch_size)  # one epoch
    config = write_config(root, args.size, args.batch_size, steps)
    for leftover in ("index", "pack", "runs"):
        shutil.rmtree(root / leftover, ignore_errors=True)
    py = sys.executable
    rows = [
        stage("index", [py, "-m", "datasets", "describe", "--protocol", str(config)], root / "index.log"),
        stage("pack", [py, "-m", "preprocess.pack", "--config", str(config), "--out", str(root / "pack"),
                       "--workers", str(args.workers)], root / "pack.log"),
        stage("train", [py, "train_pt.py", "--config", str(config), "--run-name", "scale", "--out",
                        str(root / "runs")], root / "train.log"),
    ]
    by_step = memory_by_step(root / "runs" / "scale" / "pt", after=min(100, steps // 5))
    result = {"images": args.images, "size": args.size, "batch_size": args.batch_size, "train_steps": steps,
              "cores": os.cpu_count(), "stages": rows, "train_memory_by_step": by_step}
    (root / "scale_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| stage | wall time (s) | peak memory, PSS (MB) | of which private (MB) |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['stage']} | {r['seconds']} | {r['peak_pss_mb']} | {r['peak_private_mb']} |")
    for key in ("rss_mb", "private_mb"):
        m = by_step[key]
        print(f"train {key} from step {by_step['logged_steps'][0]} to {by_step['logged_steps'][1]}: "
              f"{m['at_first']} -> {m['at_last']} (max {m['max']}), {m['growth_per_1000_steps']:+} MB per 1000 steps")
    if not args.keep:
        for leftover in ("pack", "runs"):
            shutil.rmtree(root / leftover, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
