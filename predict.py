"""Run a trained detector on new media: images, videos or folders of them. Faces are found with the same
MTCNN detector as preprocessing, each face is scored with P(fake), and scores are aggregated per image or
video. Images (`--rule auto` = max): a picture is fake if any face is. Videos (`--rule auto` = tracks): every
face of the sampled frames is grouped into tracks, one per person (preprocess/tracks.py), each track is
scored by the mean over its frames and the video by the maximum over tracks (a video is fake if any person
in it is); tracks seen in fewer than --min-track frames (stray detections) do not decide the score unless no
track is longer. `--rule mean` / `max`: over all faces instead. Unreadable inputs are reported per file; the
rest still runs.

Output JSON: {"<input>": {"faces": [{"frame": int|null, "box": [x1, y1, x2, y2], "score": float,
                                     "track": int (videos), "cam": path (--cam)}],
                          "tracks": [{"frames": [int], "score": float, "decides": bool}] (videos),
                          "score": float|null (null: no face), "error": str|null,
                          "verdict": "fake"|"real", "threshold": float (when scored)}}
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.config import DEFAULTS
from datasets.augment import eval_transform
from datasets.images import IMG_EXTS, BadImageError, read_image
from engine.amp import autocast
from engine.dist import get_device
from engine.release import RELEASE, build_model, checkpoint_settings, release_calibration
from preprocess.crops import Crop, recorded
from preprocess.extract_faces import ALIGNED_SIZE, aligned_crop, crop_box, load_detector
from preprocess.tracks import group_tracks
from preprocess.video import VIDEO_EXTS, read_frames
from utils import HelpFormatter, UserError, atomic_write_csv, atomic_write_text, resolve_path, run_cli


def expand(inputs: list[str]) -> list[Path]:
    """Files as given; folders searched recursively for images and videos."""
    out = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMG_EXTS + VIDEO_EXTS and f.is_file())
        else:
            out.append(p)  # a missing or odd file is reported per file
    return out


def check_size(path: Path, max_pixels: int) -> None:
    """An image of more than max_pixels pixels is refused before it is decoded (a 140 KB PNG can hold 144
    megapixels, which take gigabytes once decoded): an OSError for this input, the others go on."""
    from PIL import Image
    try:
        with Image.open(path) as im:  # reads the header only
            width, height = im.size
    except Exception:  # noqa: BLE001 (a format PIL does not know: OpenCV decodes it, or says why not)
        return
    if width * height > max_pixels:
        raise OSError(f"{width} x {height} pixels is more than --max-pixels {max_pixels:,}")


def faces_of(path: Path, detector, frames: int, all_faces: bool, crop: Crop,
             max_pixels: int = 40_000_000) -> list[tuple]:
    """(frame index or None, box, RGB crop) for the faces of an image or the sampled frames of a video."""
    if path.suffix.lower() in VIDEO_EXTS:
        images = read_frames(path, frames, None)
        if not images:
            raise OSError("cannot read video")
    else:
        check_size(path, max_pixels)
        images = [(None, read_image(str(path)).permute(1, 2, 0).numpy())]  # [H, W, 3] RGB
    found = []
    for index, image in images:
        boxes, probs, points = detector.detect(image, landmarks=True)
        if boxes is None:
            continue
        order = np.argsort([-(b[2] - b[0]) * (b[3] - b[1]) for b in boxes])
        for k in (order if all_faces else order[:1]):
            box = [round(float(v), 1) for v in boxes[k]]
            if crop.align:  # as extract_faces --align: eyes level, at the training crops' size
                face, _ = aligned_crop(image, points[k], ALIGNED_SIZE, crop.align)
                found.append((index, box, face))
                continue
            x1, y1, x2, y2 = crop_box(boxes[k], crop.margin, image.shape[1], image.shape[0], crop.scale)
            if x2 > x1 and y2 > y1:
                found.append((index, box, image[y1:y2, x1:x2]))
    return found


@torch.no_grad()
def score_crops(model, crops: list[np.ndarray], transform, device, batch_size: int, amp: bool) -> list[float]:
    scores = []
    for i in range(0, len(crops), batch_size):
        x = torch.stack([transform(torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1))
                         for c in crops[i:i + batch_size]])  # [B, 3, S, S]
        with autocast(device, amp):
            logits = model(x.to(device))
        scores += torch.softmax(logits.float(), dim=1)[:, 1].cpu().tolist()
    return scores


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="predict.py", description=__doc__, formatter_class=HelpFormatter,
        epilog="examples:\n"
               "  python predict.py photo.jpg clip.mp4 --method supconmpl --encoder runs/demo/supconmpl/"
               "mpl_supcon_encoder.tar --classifier runs/demo/supconmpl/mpl_supcon_classifier.tar --json out.json\n"
               "  python predict.py media/ --method pt --weights weights/resnet50_state_dict_ff.tar "
               "--input-scale seed --json out.json")
    p.add_argument("inputs", nargs="+", help="images, videos or folders")
    p.add_argument("--method", required=True, choices=sorted(RELEASE))
    p.add_argument("--run", metavar="DIR", help="a run's folder (runs/<run_name>/<method>): its release files, as "
                                                "evaluate.py finds them (instead of --weights / --encoder --classifier)")
    p.add_argument("--weights", help="baseline checkpoint (pt)")
    p.add_argument("--encoder", help="SupCon network checkpoint (supcon, supconmpl)")
    p.add_argument("--classifier", help="linear classifier checkpoint (supcon, supconmpl)")
    p.add_argument("--backbone", help="architecture (default: from the checkpoint, else resnet50)")
    p.add_argument("--img-size", type=int, help="input size (default: from the checkpoint, else 64)")
    p.add_argument("--input-scale", choices=("project", "seed", "unit"),
                   help="seed: the authors' weights' scaling; unit: [0, 1] (default: the checkpoint's)")
    p.add_argument("--json", help="write per-input results here")
    p.add_argument("--csv", help="write one row per face here")
    p.add_argument("--out", help="folder for predictions.json and faces.csv (when --json/--csv are not given)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the pipeline is deterministic; for parity)")
    p.add_argument("--threshold", type=float,
                   help="P(fake) at or above which a verdict is FAKE (default: the threshold chosen on the validation "
                        "set, stored in the weights by a run with val.enabled; else 0.5)")
    p.add_argument("--rule", choices=("auto", "mean", "max"), default="auto",
                   help="aggregation of face scores: auto = max for images, max over face tracks for videos; "
                        "mean / max over all faces")
    p.add_argument("--min-track", type=int, default=2,
                   help="frames a video's face track needs to decide its score (default: 2)")
    p.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    p.add_argument("--all-faces", action="store_true",
                   help="images: score every face (default: the largest); videos always score every face")
    crop = p.add_mutually_exclusive_group()
    crop.add_argument("--margin", type=float, help="cut faces with this margin (extract_faces --margin; default: as "
                                                   "the weights' training crops were cut, recorded in their boxes.csv; "
                                                   "else 0.2)")
    crop.add_argument("--scale", type=float, help="cut squares of SCALE x the box (extract_faces --scale)")
    crop.add_argument("--align", action="store_true", help="cut aligned faces (extract_faces --align)")
    p.add_argument("--eye-distance", type=float, default=0.3, help="with --align (default: 0.3)")
    p.add_argument("--min-face", type=int, default=20, help="smallest face searched for, in pixels (default: 20)")
    p.add_argument("--batch-size", type=int, default=64, help="faces scored per model call (default: 64)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="images larger than this are reported, not decoded (default: 40,000,000)")
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--cam", metavar="DIR", help="write a Grad-CAM heat map of every scored face into DIR (PNG, "
                   "with its score in the title; the path is recorded in the JSON as the face's \"cam\")")
    args = p.parse_args(argv)
    for name, ok, what in (("frames", args.frames > 0, "positive"), ("batch_size", args.batch_size > 0, "positive"),
                           ("min_track", args.min_track > 0, "positive"), ("max_pixels", args.max_pixels > 0, "positive"),
                           ("margin", args.margin is None or args.margin >= 0, ">= 0"),
                           ("scale", args.scale is None or args.scale > 0, "positive"),
                           ("min_face", args.min_face >= 12, "at least 12"), ("threshold", args.threshold is None or 0 <= args.threshold <= 1, "in [0, 1]")):
        if not ok:
            raise UserError(f"--{name.replace('_', '-')} must be {what}, got {getattr(args, name)}")
    return args


def weight_files(args) -> dict[str, Path]:
    """The checkpoint files to run, by role: --run's release files, or --weights / --encoder --classifier."""
    if args.run:
        if args.weights or args.encoder or args.classifier:
            raise UserError("--run takes the run's own files: give either --run or the checkpoint files")
        for role, name in RELEASE[args.method].items():
            setattr(args, role, str(Path(args.run) / name))
    if "weights" in RELEASE[args.method] and not args.weights:
        raise UserError(f"--method {args.method} needs --weights (or --run)")
    if "encoder" in RELEASE[args.method] and not (args.encoder and args.classifier):
        raise UserError(f"--method {args.method} needs --encoder and --classifier (or --run)")
    return {role: resolve_path(getattr(args, role)) for role in RELEASE[args.method]}


def crop_settings(args, loaded: dict) -> Crop:
    """How to cut faces: the command line's, else as the weights' training crops were cut (their config's
    labeled data, boxes.csv), else extract_faces's default; one line says which."""
    if args.align or args.scale is not None or args.margin is not None:
        crop = Crop(align=args.eye_distance) if args.align else Crop(scale=args.scale) if args.scale is not None \
            else Crop(margin=args.margin)
        print(f"faces cut as asked: {crop.describe()}", file=sys.stderr)
        return crop
    found = recorded(loaded.get("config"))
    if found:
        print(f"faces cut as the training crops were: {found[0].describe()} (from {found[1]})", file=sys.stderr)
        return found[0]
    print("faces cut with extract_faces's default, margin:0.2 (the weights' training crops are not here to tell; "
          "--margin, --scale or --align to choose)", file=sys.stderr)
    return Crop()


def shown(text: str) -> str:
    """A file name as it can be printed, also when it is not valid UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def track_scores(faces: list[dict], min_track: int) -> list[dict]:
    """Group a video's faces into tracks (sets each face's "track"); per track its frames, mean score and
    whether it is long enough to decide the video's score (the longest ones do when none is)."""
    tracks = group_tracks([(f["frame"], f["box"]) for f in faces])
    longest = max((len(t) for t in tracks), default=0)
    out = []
    for k, members in enumerate(tracks):
        for i in members:
            faces[i]["track"] = k
        out.append({"frames": [faces[i]["frame"] for i in members],
                    "score": round(float(np.mean([faces[i]["score"] for i in members])), 6),
                    "decides": len(members) >= min(min_track, longest)})
    return out


def predict_one(path: Path, args, detector, model, transform, device, cam=None, number: int = 0) -> dict:
    """The result of one input: its faces and score, or its error; nothing that goes wrong with this input
    stops the others. `cam`: a GradCAM of the model (--cam): each face's heat map is written to --cam DIR as
    <number>-<name>[-f<frame>]-face<k>.png and its path recorded in the face's entry."""
    entry = {"faces": [], "score": None, "error": None}
    try:
        if not path.is_file():
            raise OSError("no such file")
        video = path.suffix.lower() in VIDEO_EXTS
        found = faces_of(path, detector, args.frames, args.all_faces or video, args.crop, args.max_pixels)
        scores = score_crops(model, [c for _, _, c in found], transform, device, args.batch_size, True)
        if not np.isfinite(scores).all():  # never a verdict from NaN (it compares as "real")
            raise FloatingPointError(f"the model gave {int((~np.isfinite(scores)).sum())} of its {len(scores)} "
                                     "face(s) a non-finite score (NaN or inf)")
        entry["faces"] = [{"frame": f, "box": b, "score": round(s, 6)} for (f, b, _), s in zip(found, scores)]
        if cam is not None and found:
            write_face_cams(cam, path, number, found, entry["faces"], args, transform, device)
        if video:
            entry["tracks"] = track_scores(entry["faces"], args.min_track)
        if scores:
            rule = args.rule if args.rule != "auto" else ("tracks" if video else "max")
            entry["score"] = round(float({"mean": np.mean, "max": np.max}[rule](scores)), 6) if rule != "tracks" \
                else max(t["score"] for t in entry["tracks"] if t["decides"])
    except FloatingPointError as err:
        entry["faces"], entry["error"] = [], str(err)
    except (OSError, BadImageError) as err:
        entry["error"] = str(err).split(": ")[-1] if isinstance(err, BadImageError) else str(err)
    except Exception as err:  # e.g. the face detector on a 1x1 image: this input fails, the others go on
        entry["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'failed'}"
    return entry


def write_face_cams(cam, path: Path, number: int, found: list, faces: list[dict], args, transform, device) -> None:
    from evaluation.cams import crop_maps, safe_name, title
    from models.gradcam import save_cam_png
    crops = [c for _, _, c in found]
    for k, (face, crop, heat) in enumerate(zip(faces, crops, crop_maps(cam, crops, transform, device))):
        frame = "" if face["frame"] is None else f"-f{face['frame']}"
        png = Path(args.cam) / f"{number:04d}-{safe_name(path.stem)}{frame}-face{k}.png"
        save_cam_png(crop, heat, png, f"{shown(path.name)}{frame} face {k}: {title(face['score'], None, args.threshold)}")
        face["cam"] = str(png)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.out:
        args.json = args.json or str(Path(args.out) / "predictions.json")
        args.csv = args.csv or str(Path(args.out) / "faces.csv")
        Path(args.out).mkdir(parents=True, exist_ok=True)
    paths = weight_files(args)
    loaded, backbone, img_size, input_scale = checkpoint_settings(next(iter(paths.values())), args, DEFAULTS)
    device = get_device(args.device)
    model = build_model(args.method, backbone, paths, loaded).to(device).eval()
    # (a stored calibration is validated when it is used: --threshold replaces it)
    calibration = release_calibration(args.method, paths, loaded) if args.threshold is None else None
    source = "--threshold" if args.threshold is not None else \
        f"chosen on the run's validation set ({calibration['rule']})" if calibration else "the default"
    if args.threshold is None:
        args.threshold = calibration["threshold"] if calibration else 0.5
    print(f"verdict: FAKE at P(fake) >= {args.threshold:.4f} ({source})", file=sys.stderr)
    transform = eval_transform(img_size, backbone, input_scale)
    args.crop = crop_settings(args, loaded)
    detector = load_detector("cuda" if device.type == "cuda" else "cpu", min_face=args.min_face)

    results, rows = {}, []
    cam = None
    if args.cam:
        from models.gradcam import GradCAM
        Path(args.cam).mkdir(parents=True, exist_ok=True)
        cam = GradCAM(model, img_size)
    written = time.time()
    from engine.progress import Progress
    inputs = expand(args.inputs)
    progress = Progress("predict", len(inputs), "inputs")
    for number, path in enumerate(inputs):
        entry = predict_one(path, args, detector, model, transform, device, cam, number)
        progress.update()
        if entry["score"] is not None:
            entry["verdict"] = "fake" if entry["score"] >= args.threshold else "real"
            entry["threshold"] = args.threshold
        results[str(path)] = entry
        rows += [(str(path), f["frame"], i, *f["box"], f["score"], f.get("track", ""))
                 for i, f in enumerate(entry["faces"])]
        if args.json and time.time() - written > 10:  # what is done so far survives a crash or a kill
            atomic_write_text(resolve_path(args.json), json.dumps(results, indent=2, allow_nan=False) + "\n")
            written = time.time()
    progress.close()
    print(f"{'input':<50}{'faces':>6}{'P(fake)':>9}  verdict")
    for path, e in results.items():
        verdict = ("error: " + e["error"]) if e["error"] else ("no face" if e["score"] is None else
                                                               ("FAKE" if e["verdict"] == "fake" else "real"))
        score = "-" if e["score"] is None else f"{e['score']:.3f}"
        print(f"{shown(path)[-49:]:<50}{len(e['faces']):>6}{score:>9}  {verdict}")
    if args.json:
        atomic_write_text(resolve_path(args.json), json.dumps(results, indent=2, allow_nan=False) + "\n")
    if args.csv:
        atomic_write_csv(resolve_path(args.csv), ["path", "frame", "face", "x1", "y1", "x2", "y2", "score", "track"],
                         rows)
    failed = sum(1 for e in results.values() if e["error"])
    if failed:
        print(f"{failed} input(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
