"""Extract face crops from videos: sample frames, detect faces with MTCNN (facenet-pytorch, the detector of
the authors' pipeline; its weights ship inside the package), crop with a margin, write the dataset layout.

  <output>/<video>/<frame>_<face>.png      crops (frame index in the video, face index in the frame)
  <output>/<video>/boxes.csv               frame,face,x1,y1,x2,y2,prob,crop,angle (written last: marks the
                                           video done; crop: how the crop was cut, angle: rotation in degrees)
  <output>/extract_summary.json            videos done / skipped / without a face / unreadable

A video is named by its path relative to --input without the extension (a single file: its stem). A rerun skips
finished videos; videos without a face or unreadable are listed, not fatal. Install the detector once, without
letting it change the pinned torch: pip install --no-deps facenet-pytorch==2.6.0
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from preprocess.video import VIDEO_EXTS, find_videos, read_frames
from utils import HelpFormatter, UserError, atomic_write_csv, atomic_write_text, run_cli

ALIGNED_SIZE = 256  # aligned crops without --size


def load_detector(device: str = "cpu", min_prob: float = 0.9, min_face: int = 20, reference: bool = False,
                  thresholds: tuple[float, float] = (0.6, 0.7)):
    """MTCNN from facenet-pytorch (weights inside the package, nothing downloaded), run by preprocess.detector
    (the same detections, faster: on a CPU its host-side form, on a GPU with the frames' pyramid and candidates
    cut on the GPU), or by facenet-pytorch's own code when `reference` is asked for."""
    try:
        from facenet_pytorch import MTCNN
    except ImportError:
        raise UserError("the face detector is not installed: pip install --no-deps facenet-pytorch==2.6.0 "
                        "(with --no-deps, so that it keeps the pinned torch)") from None
    # min_face: the smallest face searched for (MTCNN's image pyramid starts at 12 / min_face: a larger value
    # skips its largest, costliest levels; faces smaller than it are not found)
    mtcnn = MTCNN(keep_all=True, device=device, thresholds=[*thresholds, min_prob], min_face_size=min_face)
    if reference:
        return mtcnn
    from preprocess.detector import Detector, keep_freed_memory
    if str(device).startswith("cpu"):
        keep_freed_memory()
    return Detector(mtcnn)


def crop_box(box: np.ndarray, margin: float, width: int, height: int,
             scale: float | None = None) -> tuple[int, int, int, int]:
    """The box grown by `margin` x its size on each side, or (with `scale`) the square of side scale x the
    box's longer side around its centre (DeepfakeBench's and the DFDC winners' "1.3x the box"), clipped to
    the frame."""
    x1, y1, x2, y2 = box
    if scale is not None:
        half, cx, cy = max(x2 - x1, y2 - y1) * scale / 2, (x1 + x2) / 2, (y1 + y2) / 2
        x1, y1, x2, y2 = cx - half, cy - half, cx + half, cy + half
        mx = my = 0.0
    else:
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    return (max(int(x1 - mx), 0), max(int(y1 - my), 0), min(int(np.ceil(x2 + mx)), width),
            min(int(np.ceil(y2 + my)), height))


def aligned_crop(image: np.ndarray, points: np.ndarray, size: int, eye_distance: float) -> tuple[np.ndarray, float]:
    """A size x size crop in which the eyes are level, `eye_distance` x size apart, their midpoint at
    (0.5, 0.4) x size: the similarity transform (rotation, scale, shift) fixed by MTCNN's two eye landmarks
    (points [5, 2]: eyes, nose, mouth corners). Returns the crop and the rotation applied, in degrees."""
    left, right = points[0].astype(np.float64), points[1].astype(np.float64)
    dx, dy = right - left
    angle = float(np.arctan2(dy, dx))
    k = eye_distance * size / max(float(np.hypot(dx, dy)), 1e-6)
    c, s = np.cos(angle) * k, np.sin(angle) * k
    linear = np.array([[c, s], [-s, c]])  # rotates the eye line to horizontal, scaled
    target = np.array([0.5 * size, 0.4 * size])
    matrix = np.hstack([linear, (target - linear @ ((left + right) / 2))[:, None]])
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop, round(float(np.degrees(angle)), 2)


@dataclass
class Options:
    frames: int | None = 32
    stride: int | None = None
    margin: float = 0.2
    scale: float | None = None           # square crops of scale x the box (instead of margin)
    align: bool = False                  # eyes level, fixed inter-ocular distance (size x size)
    eye_distance: float = 0.3
    all_faces: bool = False
    size: int | None = None
    batch_size: int | None = None        # frames per detector call; None: 16 on a CPU, 32 on a GPU
    min_prob: float = 0.9
    thresholds: tuple[float, float] = (0.6, 0.7)  # MTCNN's first two stages (facenet-pytorch's defaults)
    downscale: int = 1                   # detect on frames shrunk by this factor (the authors' pipeline: 2)
    min_face: int = 20                   # MTCNN's min_face_size (its default)
    reference_detector: bool = False     # facenet-pytorch's own detection code instead of preprocess.detector
    device: str = "cpu"


@dataclass
class Outcome:
    name: str
    status: str                  # done | no_face | unreadable
    crops: int = 0
    frames: int = 0
    faces_per_frame: list = field(default_factory=list)


def crop_mode(opt: Options) -> str:
    """How crops are cut, as recorded in boxes.csv: margin:M, scale:S or align:D (D: eye distance / size)."""
    if opt.align:
        return f"align:{opt.eye_distance:g}"
    return f"scale:{opt.scale:g}" if opt.scale else f"margin:{opt.margin:g}"


def cut(image: np.ndarray, box: np.ndarray, points: np.ndarray, opt: Options) -> tuple[np.ndarray, float]:
    """The crop of one face (resized to opt.size if set) and the rotation applied (0 unless aligned)."""
    if opt.align:
        return aligned_crop(image, points, opt.size or ALIGNED_SIZE, opt.eye_distance)
    x1, y1, x2, y2 = crop_box(box, opt.margin, image.shape[1], image.shape[0], opt.scale)
    crop = image[y1:y2, x1:x2]
    if opt.size and crop.size:
        crop = cv2.resize(crop, (opt.size, opt.size), interpolation=cv2.INTER_AREA)
    return crop, 0.0


def detect_faces(detector, frames: list[tuple[int, np.ndarray]], opt: Options) -> list[tuple]:
    """The faces to crop from (index, RGB frame) pairs, opt.batch_size frames per detector call (H200, 640 x 360:
    the GPU detected 944 frames/s 32 at a time, 511 16 at a time, 697 64 at a time): (frame index,
    face number, frame, box, prob, landmarks), the largest face of a frame first (only it without --all-faces)."""
    faces, per_call = [], opt.batch_size or (16 if opt.device == "cpu" else 32)
    for start in range(0, len(frames), per_call):
        chunk = frames[start:start + per_call]
        images = [f for _, f in chunk]
        if opt.downscale > 1:  # detected on smaller frames, cut from the full ones (boxes scaled back)
            images = [cv2.resize(f, (f.shape[1] // opt.downscale, f.shape[0] // opt.downscale),
                                 interpolation=cv2.INTER_AREA) for f in images]
        same_size = len({im.shape for im in images}) == 1
        detected = (detector.detect(images, landmarks=True) if same_size
                    else list(zip(*[detector.detect(im, landmarks=True) for im in images])))
        for (index, image), boxes, probs, points in zip(chunk, *detected):
            if boxes is None or len(boxes) == 0:
                continue
            if opt.downscale > 1:
                boxes, points = boxes * opt.downscale, points * opt.downscale
            order = np.argsort([-(b[2] - b[0]) * (b[3] - b[1]) for b in boxes])  # largest first
            if not opt.all_faces:
                order = order[:1]
            faces.extend((index, face, image, boxes[k], probs[k], points[k]) for face, k in enumerate(order))
    return faces


def write_crops(folder: Path, faces: list[tuple], opt: Options) -> list[tuple]:
    """Cut and write the crops of `faces` (detect_faces's tuples); their boxes.csv rows (empty crops skipped)."""
    rows = []
    for index, face, image, box, prob, points in faces:
        crop, angle = cut(image, box, points, opt)
        if crop.size == 0:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{index:05d}_{face}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        rows.append((index, face, *[round(float(v), 1) for v in box], round(float(prob), 4), crop_mode(opt), angle))
    return rows


def finish_video(name: str, folder: Path, frames: int, rows: list[tuple]) -> Outcome:
    """boxes.csv of a video whose crops are all written (written last: its presence marks the video done)."""
    if not rows:
        return Outcome(name, "no_face", frames=frames)
    atomic_write_csv(folder / "boxes.csv", ["frame", "face", "x1", "y1", "x2", "y2", "prob", "crop", "angle"],
                     rows)
    return Outcome(name, "done", crops=len(rows), frames=frames)


def extract_video(detector, name: str, path: Path, out: Path, opt: Options) -> Outcome:
    """One video, start to end: decode, detect, write (a CPU worker's job)."""
    frames = read_frames(path, opt.frames, opt.stride)
    if not frames:
        return Outcome(name, "unreadable")
    faces = detect_faces(detector, frames, opt)
    return finish_video(name, out / name, len(frames), write_crops(out / name, faces, opt))


WRITE_PART = 8  # faces per write task: a video's crops are written by several threads at once


def extract_pipelined(detector, jobs: list[tuple], opt: Options, threads: int, progress=None) -> list[Outcome]:
    """The videos of `jobs` with the detector (on a GPU) kept busy: `threads` threads decode the next videos
    while it detects, and `threads` threads cut and write the crops of the videos before (in parts of
    WRITE_PART faces); a video's boxes.csv follows its last crop. At most `threads` + 1 videos are decoded ahead
    and 2 x `threads` videos wait for their crops, which bounds the frames held in memory."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    outcomes, reads, writes = [], deque(), deque()             # writes: (name, folder, frames, part futures)

    def finish_oldest():
        name, folder, frames, parts = writes.popleft()
        outcomes.append(finish_video(name, folder, frames, [row for f in parts for row in f.result()]))

    with ThreadPoolExecutor(threads, "decode") as readers, ThreadPoolExecutor(threads, "write") as writers:
        todo = iter(jobs)

        def read_next():
            job = next(todo, None)
            if job is not None:
                reads.append((job, readers.submit(read_frames, job[1], opt.frames, opt.stride)))

        for _ in range(threads + 1):
            read_next()
        while reads:
            (name, _, out, _), decoded = reads.popleft()
            frames = decoded.result()
            read_next()
            if not frames:
                outcomes.append(Outcome(name, "unreadable"))
            else:
                faces = detect_faces(detector, frames, opt)
                parts = [writers.submit(write_crops, out / name, faces[i:i + WRITE_PART], opt)
                         for i in range(0, len(faces), WRITE_PART)]
                writes.append((name, out / name, len(frames), parts))
                while len(writes) > 2 * threads or (writes and all(f.done() for f in writes[0][3])):
                    finish_oldest()
            if progress is not None:
                progress.update()
        while writes:
            finish_oldest()
    return outcomes


_worker_detector = None


def _init_worker(opt: Options) -> None:
    global _worker_detector
    import torch
    torch.set_num_threads(1)  # parallel over videos, one core each
    _worker_detector = load_detector(opt.device, opt.min_prob, opt.min_face, opt.reference_detector, opt.thresholds)


def _work(job: tuple) -> Outcome:
    name, path, out, opt = job
    return extract_video(_worker_detector, name, path, out, opt)


def run(input_path: Path | None, out: Path, opt: Options, workers: int, videos: list | None = None) -> dict:
    """Extract the faces of every video under `input_path` (or of `videos`: (output name, file) pairs)."""
    videos = videos if videos is not None else find_videos(input_path)
    if not videos:
        raise UserError(f"no videos ({', '.join(VIDEO_EXTS)}) under {input_path}")
    todo = [(n, p) for n, p in videos if not (out / n / "boxes.csv").is_file()]
    skipped = len(videos) - len(todo)
    if skipped:
        print(f"skipping {skipped} video(s) already extracted in {out}", file=sys.stderr)
    from engine.progress import Progress
    jobs = [(n, p, out, opt) for n, p in todo]
    outcomes: list[Outcome] = []
    with Progress("face extraction", len(jobs), "videos") as progress:  # lines a log file keeps too
        if opt.device != "cpu":                        # the GPU detects; threads decode and write around it
            detector = load_detector(opt.device, opt.min_prob, opt.min_face, opt.reference_detector, opt.thresholds)
            outcomes = extract_pipelined(detector, jobs, opt, max(1, workers), progress)
        elif workers > 1 and len(jobs) > 1:
            import multiprocessing as mp
            with mp.get_context("spawn").Pool(workers, _init_worker, (opt,)) as pool:
                for outcome in pool.imap(_work, jobs):
                    outcomes.append(outcome)
                    progress.update()
        else:
            detector = load_detector(opt.device, opt.min_prob, opt.min_face, opt.reference_detector, opt.thresholds)
            for job in jobs:
                outcomes.append(extract_video(detector, *job))
                progress.update()
    summary = {
        "videos": len(videos), "skipped_finished": skipped,
        "done": sorted(o.name for o in outcomes if o.status == "done"),
        "no_face": sorted(o.name for o in outcomes if o.status == "no_face"),
        "unreadable": sorted(o.name for o in outcomes if o.status == "unreadable"),
        "crops": sum(o.crops for o in outcomes),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "extract_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m preprocess.extract_faces", description=__doc__,
        formatter_class=HelpFormatter,
        epilog="examples:\n  python -m preprocess.extract_faces --input /data/DFDC_videos/dfdc_train_part_0 "
               "--output /data/DFDC_imgs --frames 32\n"
               "  python -m preprocess.extract_faces --ff-root /data/FF++ --compression c23 --output /data/FF_c23\n"
               "  python -m preprocess.extract_faces --input video.mp4 --output crops --stride 10 --all-faces")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="a video file or a folder searched recursively for videos")
    source.add_argument("--ff-root", help="a FaceForensics++ download (original_sequences/, manipulated_sequences/): "
                                          "written in the authors' layout, train/val/test by the official lists "
                                          "(preprocess/ff_official.py)")
    p.add_argument("--compression", default="c23", help="with --ff-root: c23 (default), c40 or raw")
    p.add_argument("--ff-splits", help="with --ff-root: the folder of train.json, val.json, test.json "
                                       "(default: <ff-root>/splits)")
    p.add_argument("--out", "--output", dest="output", required=True,
                   help="output folder (dataset layout: <out>/<video>/...)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frames", type=int, help="frames per video, evenly spaced (default: 32)")
    g.add_argument("--stride", type=int, help="every K-th frame instead")
    crop = p.add_mutually_exclusive_group()
    crop.add_argument("--margin", type=float, help="margin around the box on each side, as a fraction of its size "
                                                   "(default: 0.2)")
    crop.add_argument("--scale", type=float, help="square crops of SCALE x the box's longer side around its centre "
                                                  "(e.g. 1.3, as DeepfakeBench and the DFDC winners state theirs)")
    crop.add_argument("--align", action="store_true",
                      help="rotate so that the eyes are level and scale to a fixed inter-ocular distance "
                           f"(--eye-distance x the crop size; size: --size or {ALIGNED_SIZE})")
    p.add_argument("--eye-distance", type=float, default=0.3,
                   help="with --align: the distance between the eyes as a fraction of the crop size (default 0.3)")
    p.add_argument("--all-faces", action="store_true", help="keep every face (default: the largest per frame)")
    p.add_argument("--size", type=int, help="resize crops to SIZE x SIZE (default: keep)")
    p.add_argument("--preset", choices=("authors",),
                   help="authors: the crops the SupCon-MPL authors' pipeline cuts (every frame, every face, a tight "
                        "square, MTCNN thresholds 0.85/0.95/0.95 on frames halved in size): what the Sin counts need")
    p.add_argument("--min-prob", type=float, default=0.9, help="detection threshold (MTCNN's last stage)")
    p.add_argument("--min-face", type=int, default=20,
                   help="smallest face searched for, in pixels (MTCNN's min_face_size, default 20); a larger value is "
                        "faster (e.g. 60 for FF++'s large faces) and misses faces smaller than it")
    p.add_argument("--reference-detector", action="store_true",
                   help="run MTCNN through facenet-pytorch's own code, one interpolate call per candidate face "
                        "(slower on a CPU and a GPU; the same detections to float rounding: preprocess/detector.py)")
    p.add_argument("--batch-size", type=int, help="frames per detector call (default: 16 on a CPU, 32 on a GPU)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--workers", type=int,
                   help="on a CPU: videos in parallel, a process each (default: the machine's cores); on a GPU: "
                        "threads that decode the next videos and write the crops while the GPU detects (default: 4, "
                        "at most the cores; more did not help on an H200)")
    return p


AUTHORS = {"stride": 1, "scale": 1.0, "all_faces": True, "min_prob": 0.95, "thresholds": (0.85, 0.95),
           "downscale": 2}  # davide-coccomini's face_detector.py / extract_crops.py, as the authors' README points to


def options(args: argparse.Namespace) -> tuple[Options, int]:
    """The extraction's options and its number of workers from the command line (bad values: UserError)."""
    if args.preset == "authors":
        if args.frames or args.stride or args.margin is not None or args.scale or args.align:
            raise UserError("--preset authors sets the frames and the crop: leave out --frames, --stride, --margin, "
                            "--scale and --align")
        args.stride, args.scale, args.all_faces, args.min_prob = 1, 1.0, True, 0.95
    if (args.frames is not None and args.frames <= 0) or (args.stride is not None and args.stride <= 0):
        raise UserError("--frames and --stride must be positive")
    for name, value, ok in (("--margin", args.margin, args.margin is None or args.margin >= 0),
                            ("--scale", args.scale, args.scale is None or args.scale > 0),
                            ("--eye-distance", args.eye_distance, 0 < args.eye_distance < 1),
                            ("--size", args.size, args.size is None or args.size > 0),
                            ("--min-face", args.min_face, args.min_face >= 12),
                            ("--batch-size", args.batch_size, args.batch_size is None or args.batch_size > 0),
                            ("--workers", args.workers, args.workers is None or args.workers > 0)):
        if not ok:
            raise UserError(f"{name} out of range: {value}")
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cores = os.cpu_count() or 1
    workers = args.workers or (cores if device == "cpu" else min(4, cores))
    opt = Options(frames=None if args.stride else (args.frames or 32), stride=args.stride,
                  margin=0.2 if args.margin is None else args.margin, scale=args.scale, align=args.align,
                  eye_distance=args.eye_distance, all_faces=args.all_faces, size=args.size,
                  batch_size=args.batch_size, min_prob=args.min_prob, min_face=args.min_face,
                  reference_detector=args.reference_detector, device=device,
                  **({"thresholds": AUTHORS["thresholds"], "downscale": AUTHORS["downscale"]} if args.preset else {}))
    return opt, workers


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    opt, workers = options(args)
    if args.ff_root:
        from preprocess import ff_official
        root = Path(args.ff_root)
        splits_dir = Path(args.ff_splits) if args.ff_splits else root / "splits"
        videos, ff = ff_official.official_videos(root, args.compression, splits_dir)
        print(f"FaceForensics++ {args.compression}, placed by the official lists:\n"
              + ff_official.describe_counts(ff), file=sys.stderr)
        s = run(root, Path(args.output), opt, workers, videos)
        ff_official.write_marker(Path(args.output), ff, splits_dir)
    else:
        s = run(Path(args.input), Path(args.output), opt, workers)
    print(f"{len(s['done'])} video(s) extracted ({s['crops']} crops), {s['skipped_finished']} already done, "
          f"{len(s['no_face'])} without a face, {len(s['unreadable'])} unreadable")
    for key in ("no_face", "unreadable"):
        if s[key]:
            print(f"  {key.replace('_', ' ')}: {', '.join(s[key][:10])}" + (" ..." if len(s[key]) > 10 else ""))
    print(f"summary: {Path(args.output) / 'extract_summary.json'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
