"""Face-extraction benchmark: frames/s and videos/s of `preprocess.extract_faces` against a reference-style
loop (one frame at a time through facenet-pytorch's MTCNN, every frame decoded and converted, each crop saved
with PIL: the loop of the authors' pointer repository), on a generated set of videos of a face.

python bench/extract_bench.py --videos 6 --frames 120 --sample 32 --size 640x360

Both run with one torch thread and the same allocator setting (extract_faces's: freed memory kept for reuse);
the reference in one process, ours with --workers 1 (per core) and with --workers N (the scaling over the
machine's cores). The rows run in rounds, each row once a round, the best of --repeat rounds kept. On a GPU
(--device cuda) both detect on the GPU. The last line reads
`face extraction speed-up over reference-style per core: <ratio>x`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def make_videos(folder: Path, count: int, frames: int, width: int, height: int) -> list[tuple[str, Path]]:
    """`count` mp4 videos of a slowly panning face photograph (skimage's astronaut), `frames` frames each."""
    import skimage
    face = cv2.imread(str(Path(skimage.__file__).parent / "data" / "astronaut.png"))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for v in range(count):
        path = folder / f"{v:03d}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
        canvas = np.full((height, width, 3), 40 + 10 * v, np.uint8)
        side = int(height * 0.8)
        photo = cv2.resize(face, (side, side))
        for i in range(frames):
            frame = canvas.copy()
            x = int((width - side) * (0.5 + 0.4 * np.sin(i / 15 + v)))
            frame[(height - side) // 2:(height - side) // 2 + side, x:x + side] = photo
            writer.write(frame)
        writer.release()
        out.append((path.stem, path))
    return out


def reference_loop(videos: list, out: Path, sample: int, device: str) -> int:
    """The reference style: every frame decoded and converted; each sampled frame alone through MTCNN; the
    largest face cropped with a 20% margin and saved with PIL. Returns the frames it detected on."""
    from facenet_pytorch import MTCNN
    from PIL import Image
    mtcnn = MTCNN(keep_all=True, device=device)
    done = 0
    for name, path in videos:
        cap = cv2.VideoCapture(str(path))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(np.linspace(0, total - 1, sample).round().astype(int).tolist())
        frames, i = [], 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            i += 1
        cap.release()
        (out / name).mkdir(parents=True, exist_ok=True)
        for index, img in enumerate(frames):
            if index not in wanted:
                continue
            boxes, _ = mtcnn.detect(img)
            done += 1
            if boxes is None:
                continue
            x1, y1, x2, y2 = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            mx, my = 0.2 * (x2 - x1), 0.2 * (y2 - y1)
            img.crop((int(x1 - mx), int(y1 - my), int(x2 + mx), int(y2 + my))).save(out / name / f"{index:05d}.png")
    return done


def ours(videos: list, out: Path, sample: int, device: str, workers: int, min_face: int | None,
         reference_detector: bool = False, batch_size: int | None = None) -> int:
    from preprocess.extract_faces import Options, run
    shutil.rmtree(out, ignore_errors=True)  # a rerun would skip the finished videos
    opt = Options(frames=sample, device=device, reference_detector=reference_detector, batch_size=batch_size,
                  **({"min_face": min_face} if min_face else {}))
    summary = run(None, out, opt, workers, videos)
    return sum(1 for _ in summary["done"]) * sample


def stages(videos: list, out: Path, sample: int, device: str, batch_size: int | None, repeat: int) -> None:
    """Where extract_faces's time goes, one stage after another in one thread (best of `repeat`): decoding the
    sampled frames, detecting, cutting and writing the crops."""
    from preprocess.extract_faces import Options, detect_faces, load_detector, write_crops
    from preprocess.video import read_frames
    opt = Options(frames=sample, device=device, batch_size=batch_size)
    detector = load_detector(device)
    sync = (lambda: __import__("torch").cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
    best = {}
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        t = {}
        start = time.perf_counter()
        frames = [read_frames(path, sample, None) for _, path in videos]
        t["decode"] = time.perf_counter() - start
        start = time.perf_counter()
        faces = [detect_faces(detector, f, opt) for f in frames]
        sync()
        t["detect"] = time.perf_counter() - start
        start = time.perf_counter()
        for (name, _), fs in zip(videos, faces):
            write_crops(out / name, fs, opt)
        t["write"] = time.perf_counter() - start
        best = {k: min(v, best.get(k, float("inf"))) for k, v in t.items()}
    n = sum(len(f) for f in frames)
    print("stages, one thread: " + ", ".join(f"{k} {v * 1e3:.0f} ms ({n / v:.0f} frames/s)" for k, v in best.items()),
          flush=True)


def timed(fns: list, repeat: int) -> list[tuple[float, int]]:
    """Each of `fns` run `repeat` times, in rounds (every function once per round, so that a machine whose
    speed drifts between minutes slows all rows alike); per function the best time (seconds) and the frames
    detected on."""
    best, frames = [float("inf")] * len(fns), [0] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            frames[k] = fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return list(zip(best, frames))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--frames", type=int, default=120, help="frames per generated video")
    p.add_argument("--sample", type=int, default=32, help="frames sampled per video (extract_faces --frames)")
    p.add_argument("--size", default="640x360", help="video size WxH")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="ours with this many processes too")
    p.add_argument("--min-face", type=int, help="also ours with extract_faces --min-face (e.g. 60)")
    p.add_argument("--batch-size", type=int,
                   help="extract_faces --batch-size, frames per detector call (default: extract_faces's)")
    p.add_argument("--stages", action="store_true", help="first, the time of each stage of ours alone")
    p.add_argument("--repeat", type=int, default=3,
                   help="rounds of every row, the fastest of each row kept (a shared machine is noisy)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch
    torch.set_num_threads(1)
    # extract_faces keeps freed memory for reuse (preprocess.detector.keep_freed_memory, process-wide); set here
    # before any row runs, so that the reference loop runs with it too and the rows differ only in their code
    from preprocess.detector import keep_freed_memory
    keep_freed_memory()
    width, height = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="extract_bench-"))
    try:
        videos = make_videos(tmp / "videos", args.videos, args.frames, width, height)
        print(f"{args.videos} videos of {args.frames} frames at {width}x{height}, {args.sample} sampled per video, "
              f"device {args.device}, {os.cpu_count()} cores", flush=True)
        runs = [("reference-style loop, 1 process", 1,
                 lambda: reference_loop(videos, tmp / "ref", args.sample, args.device)),
                ("extract_faces --workers 1", 1,
                 lambda: ours(videos, tmp / "ours1", args.sample, args.device, 1, None, False, args.batch_size)),
                ("extract_faces --workers 1 --reference-detector", 1,
                 lambda: ours(videos, tmp / "ours_ref", args.sample, args.device, 1, None, True, args.batch_size))]
        if args.min_face:
            runs.append((f"extract_faces --workers 1 --min-face {args.min_face}", 1,
                         lambda: ours(videos, tmp / "ours_mf", args.sample, args.device, 1, args.min_face, False,
                                      args.batch_size)))
        if args.workers > 1:     # on a CPU processes, one core each; on a GPU threads decoding and writing
            runs.append((f"extract_faces --workers {args.workers}", args.workers,
                         lambda: ours(videos, tmp / "oursN", args.sample, args.device, args.workers, None, False,
                                      args.batch_size)))
        if args.stages:
            stages(videos, tmp / "stages", args.sample, args.device, args.batch_size, args.repeat)
        rows = [(what, t, n, cores) for (what, cores, _), (t, n) in zip(runs, timed([r[2] for r in runs], args.repeat))]
        for what, t, n, cores in rows:
            print(f"{what:<48} {t:7.1f} s  {n / t:6.2f} frames/s  {args.videos / t:6.3f} videos/s  "
                  f"({n / t / cores:.2f} frames/s per core)")
        ref = rows[0][2] / rows[0][1]
        per_core = (rows[1][2] / rows[1][1]) / ref
        if args.workers > 1 and args.device == "cpu":
            print(f"scaling: {rows[-1][2] / rows[-1][1] / (rows[1][2] / rows[1][1]):.2f}x with {args.workers} workers")
        elif args.workers > 1:
            print(f"face extraction speed-up over reference-style on the GPU, --workers {args.workers} threads: "
                  f"{rows[-1][2] / rows[-1][1] / ref:.2f}x")
        if args.min_face:
            _, t, n, _ = next(r for r in rows if "--min-face" in r[0])
            print(f"with --min-face {args.min_face}: {(n / t) / ref:.2f}x the reference per core")
        print(f"face extraction speed-up over reference-style per core: {per_core:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
