"""The embedded demo benchmark: synthetic stand-ins for FaceForensics++ built from sample photographs.

What it is for: letting the whole pipeline (loaders, protocols, the three trainings, evaluation) run on
any machine, offline, in minutes. It is NOT a deepfake dataset and its numbers say nothing about real
deepfake detection.

"Real" frames are crops of real photographs shipped by scikit-image and scikit-learn. Each "video" is a
short pan/zoom over one photograph, with a per-video sensor-noise level and video-like JPEG compression.
"Fake" frames are the same kind of frames with a face-like elliptical region altered by one of four
manipulation families standing in for FF++'s four methods, plus one post-generation family:

==================  ======================================================================
Deepfakes           region re-rendered by an autoencoder (PCA, fitted at generation time on
                    real crops) at 16x16 and up-sampled, colour-matched, soft-blended
Face2Face           region re-enacted: magnified re-sampling of the face texture plus a smooth
                    expression warp (bilinear)
FaceSwap            region from another video rendered at 0.4x resolution, colour-corrected
                    and Poisson-blended (cv2.seamlessClone)
NeuralTextures      region re-rendered as a low-pass base plus a texture from a fixed random
                    convolutional "neural texture" (texture mismatch instead of smoothing)
StyleGAN            whole frame synthesised at half resolution, up-sampled by a strided transposed
                    convolution (checkerboard spectrum), fine detail synthesised back; no blending
                    boundary and no smoothing
==================  ======================================================================

On disk it follows the FF++ layout used by the authors (``FaceForensics++/{train_set,test_set}/<method>/
<video>/<frame>.png``, real videos named ``017``, fake ones ``017_042`` = target_source) and a flat
``StyleGAN/`` folder, so the demo goes through the same loader and protocol code as real data. Train and
test videos come from disjoint pixels of each photograph (left and right parts) and disjoint ids.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from preprocess.demo_fakes import FAMILIES, POSTGEN, context, post_generation
from utils import UserError

FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
DEMO_VERSION = 4
PRETRAINED = "pretrained-test_resnet.pth"  # the demo's stand-in for ImageNet weights (demo_pretrain.py)
PACK = "pack"  # the demo's training images, packed (datasets/packed.py)

# Colour photographs that ship inside installed packages (file name, package).
_PHOTOS = [
    ("astronaut.png", "skimage"), ("coffee.png", "skimage"), ("chelsea.png", "skimage"),
    ("rocket.jpg", "skimage"), ("motorcycle_left.png", "skimage"), ("motorcycle_right.png", "skimage"),
    ("retina.jpg", "skimage"), ("hubble_deep_field.jpg", "skimage"), ("ihc.png", "skimage"),
    ("china.jpg", "sklearn"), ("flower.jpg", "sklearn"),
]


def _package_dir(package: str) -> Path:
    if package == "skimage":
        import skimage
        return Path(skimage.__file__).parent / "data"
    import sklearn
    return Path(sklearn.__file__).parent / "datasets" / "images"


def load_photos() -> list[np.ndarray]:
    """The sample photographs as BGR uint8 arrays (read from the installed packages, no network)."""
    photos = []
    for name, package in _PHOTOS:
        path = _package_dir(package) / name
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"sample photograph {path} is missing: reinstall {package}")
        photos.append(img)
    return photos


# ----------------------------------------------------------------------------- capture ("real" frames)
def _video_track(rng: np.random.Generator, photo_shape: tuple, part: str, frames: int, size: int) -> list:
    """Crop windows (x, y, w) of one 'video': a slow pan and zoom inside the train or test part."""
    h, w = photo_shape[:2]
    x_lo, x_hi = (0, int(w * 0.62)) if part == "train" else (int(w * 0.62), w)
    win0 = rng.uniform(1.2, 2.4) * size
    win0 = min(win0, (x_hi - x_lo) * 0.8, h * 0.8)
    cx = rng.uniform(x_lo + win0 / 2, x_hi - win0 / 2)
    cy = rng.uniform(win0 / 2, h - win0 / 2)
    vx, vy, vz = rng.normal(0, 0.02 * win0, 2).tolist() + [rng.normal(0, 0.02)]
    track = []
    for f in range(frames):
        win = win0 * (1 + vz * f)
        win = float(np.clip(win, size, min(x_hi - x_lo, h) - 1))
        x = float(np.clip(cx + vx * f - win / 2, x_lo, x_hi - win))
        y = float(np.clip(cy + vy * f - win / 2, 0, h - win))
        track.append((x, y, win))
    return track


def _crop(photo: np.ndarray, window: tuple, size: int) -> np.ndarray:
    x, y, win = window
    patch = photo[int(y):int(y + win), int(x):int(x + win)]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def _add_sensor_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = img.astype(np.float32) + rng.normal(0, sigma, img.shape).astype(np.float32)
    return np.clip(noisy, 0, 255)


def _compress(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _pairs(ids: list[int], rng: np.random.Generator) -> dict[int, int]:
    """Swap partners as in FF++: ids paired two by two (017_042 and 042_017); an odd one out joins a pair."""
    order = [ids[i] for i in rng.permutation(len(ids))]
    partner = {}
    for a, b in zip(order[0::2], order[1::2]):
        partner[a], partner[b] = b, a
    if len(order) % 2:
        partner[order[-1]] = order[0]
    return partner


# ----------------------------------------------------------------------------- writer
def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.clip(np.round(img), 0, 255).astype(np.uint8)):
        raise OSError(f"could not write {path}")


def _write_tree(tmp: Path, params: dict) -> None:
    """Every file of the demo under `tmp` (a fresh folder nobody else writes to); DEMO.json last."""
    seed, size, frames = params["seed"], params["size"], params["frames"]
    train_ids, test_ids = params["train_ids"], params["test_ids"]
    photos = load_photos()
    rng = np.random.default_rng(seed)
    ctx = context(photos, size, rng, _video_track, _crop)
    ff = tmp / "FaceForensics++"
    for subset, ids, first in (("train_set", train_ids, 0), ("test_set", test_ids, train_ids)):
        part = "train" if subset == "train_set" else "test"
        vids = list(range(first, first + ids))
        partner = _pairs(vids, np.random.default_rng([seed, first]))
        for vid in vids:
            vrng = np.random.default_rng([seed, vid])
            photo = photos[vid % len(photos)]
            sigma, quality = vrng.uniform(4.0, 8.0), int(vrng.integers(85, 97))
            track = _video_track(vrng, photo.shape, part, frames, size)
            source = partner[vid]
            donor_track = _video_track(np.random.default_rng([seed, source]), photos[source % len(photos)].shape,
                                       part, frames, size)
            for f, window in enumerate(track):
                frame = _add_sensor_noise(_crop(photo, window, size), sigma, vrng)
                _write(ff / subset / "Real" / f"{vid:03d}" / f"{f:04d}.png", _compress(frame, quality))
                donor = _crop(photos[source % len(photos)], donor_track[f], size).astype(np.float32)
                for method in FF_METHODS:
                    fake = FAMILIES[method](frame, donor, vrng, ctx)
                    _write(ff / subset / method / f"{vid:03d}_{source:03d}" / f"{f:04d}.png", _compress(fake, quality))
                if subset == "test_set":
                    fake = post_generation(frame, donor, vrng, ctx)
                    _write(tmp / POSTGEN / f"{vid:03d}_{f:04d}.png", _compress(fake, quality))
    (tmp / "README.txt").write_text(__doc__)
    if params.get("pretrained"):
        _pretrain(tmp / PRETRAINED, photos, params)
    # The marker goes last: a folder without it was never completed.
    (tmp / MARKER).write_text(json.dumps({"generator": GENERATOR, **params}, indent=2) + "\n")


def _pretrain(path: Path, photos: list, params: dict) -> None:
    """The stand-in for ImageNet weights (preprocess/demo_pretrain.py), a function of the demo's parameters
    alone: the same file whether written with the demo or added to it later."""
    from preprocess.demo_pretrain import pretrain
    capture = {"video_track": _video_track, "crop": _crop, "add_sensor_noise": _add_sensor_noise,
               "compress": _compress}
    pretrain(path, photos, capture, size=params["size"], seed=params["seed"])


def _add_pretrained(out: Path, current: dict) -> None:
    """Add the stand-in weights to the complete demo at `out` that lacks them (the caller holds the lock):
    written beside it, renamed into place, then the marker rewritten to say so."""
    from utils import atomic_write_text
    print(f"adding the stand-in for ImageNet weights to the demo benchmark at {out} (takes a minute)",
          file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _pretrain(tmp / PRETRAINED, load_photos(), current)
        os.replace(tmp / PRETRAINED, out / PRETRAINED)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(out / MARKER, json.dumps({**current, "pretrained": True}, indent=2) + "\n")


# ----------------------------------------------------------------------------- guarding the target
MARKER = "DEMO.json"
GENERATOR = "supcon-mpl preprocess.demo"
# Every file the generator writes, relative to the demo root (used to recognise a demo before replacing it).
_DEMO_FILE = re.compile(r"(FaceForensics\+\+/(train_set|test_set)/(Real/\d+|(%s)/\d+_\d+)/\d+\.png"
                        r"|%s/\d+_\d+\.png|DEMO\.json|README\.txt|pretrained-\w+\.pth"
                        r"|pack/(shard-\d+\.npy|index\.csv|bad\.txt|meta\.json)"
                        r"|deepfakebench/(VERSION|dataset_json/[\w+]+\.json|DF40/demostylegan/ff/sg\d+/\d+_\d+\.png))"
                        % ("|".join(FF_METHODS), POSTGEN))  # deepfakebench/: preprocess/demo_dfb.py


def demo_params(root: Path) -> dict | None:
    """The parameters of the complete demo at `root`, or None if `root` is not one (or not complete)."""
    try:
        params = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(params, dict):
        return None
    # Demos written before the marker named its generator (version <= 3) carry the same parameter keys.
    ours = params.get("generator") == GENERATOR or (
        params.get("generator") is None and {"version", "seed", "size", "train_ids"} <= set(params))
    return params if ours else None


def _foreign_file(root: Path) -> str | None:
    """The first file or link under `root` that the demo generator does not write, or None."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path) or not _DEMO_FILE.fullmatch(rel):
                return rel
    return None


def _check_replaceable(out: Path) -> None:
    """`out` may be replaced only if it is a demo this project wrote and holds nothing else (or is empty)."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"{out} exists and is not a demo benchmark folder: refusing to replace it "
                        "(choose another data.demo / --out)")
    if not any(out.iterdir()):
        return
    if demo_params(out) is None:
        raise UserError(f"{out} exists and is not a complete demo benchmark written by this project: refusing to "
                        "replace it (choose another data.demo / --out, or move that folder away)")
    foreign = _foreign_file(out)
    if foreign is not None:
        raise UserError(f"{out} holds a demo benchmark plus other files (e.g. {foreign}): refusing to replace it")


@contextlib.contextmanager
def _demo_lock(out: Path):
    """An exclusive lock for generating the demo at `out` (a lock file beside it; released on exit, also when
    the process dies)."""
    import fcntl
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is generating the demo benchmark at {out}", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def generate(out: str | os.PathLike, seed: int = 0, size: int = 64, train_ids: int = 100, test_ids: int = 20,
             frames: int = 8, quiet: bool = False, replace: bool = True, pretrained: bool = False) -> Path:
    """Write the demo benchmark at `out` and return it. Written into a private temporary sibling under a lock,
    then renamed into place, so a reader never sees a partial demo and two writers never mix. An existing
    demo with the same parameters is kept (replace=False; the stand-in weights added to it if `pretrained`
    and it lacks them) or replaced (replace=True); anything at `out` that is not a demo written by this
    project is never touched (UserError)."""
    out = Path(out).absolute()
    params = dict(version=DEMO_VERSION, seed=seed, size=size, train_ids=train_ids, test_ids=test_ids, frames=frames,
                  pretrained=pretrained)
    with _demo_lock(out):
        current = demo_params(out)
        if not replace and current is not None and all(current.get(k) == v for k, v in params.items()
                                                       if k != "pretrained"):
            # another process wrote it while this one waited for the lock, or an earlier run that needed no
            # stand-in weights did
            if pretrained and not current.get("pretrained"):
                _add_pretrained(out, current)
            return out
        _check_replaceable(out)
        for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by killed runs (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        start = time.time()
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            _write_tree(tmp, params)
            if out.exists():
                # Checked above: a demo of ours and nothing else (or an empty folder). Moved aside first, so
                # that `out` is always either the old complete demo or the new one.
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / "demo")
                os.replace(tmp, out)
                shutil.rmtree(old)
            else:
                os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(f"demo benchmark written to {out} in {time.time() - start:.1f}s", file=sys.stderr)
    return out


def ensure_demo(root: str | os.PathLike, seed: int = 0, pack_size: int | None = None,
                pretrained: bool = True) -> Path:
    """The demo benchmark at `root`, generated first unless a complete one of this version and seed is there;
    with `pretrained`, also its stand-in for ImageNet weights (added to a demo that lacks them: a minute of
    training that a run starting from other weights, or `datasets describe`, need not wait for); with
    `pack_size`, also its training images packed at <root>/pack. Safe with several processes at once (they
    wait for one writer)."""
    root = Path(root)
    params = demo_params(root)
    ready = params is not None and params.get("version") == DEMO_VERSION and params.get("seed") == seed
    if not ready:
        _check_replaceable(root.absolute())  # before saying anything: a folder that is not ours is refused
        print(f"demo benchmark not found at {root}: generating it (takes a minute)", file=sys.stderr)
    if not ready or (pretrained and not params.get("pretrained")):
        generate(root, seed=seed, replace=False, pretrained=pretrained)
    if pack_size and not (root / PACK / "meta.json").is_file():
        with _demo_lock(root.absolute()):
            if not (root / PACK / "meta.json").is_file():
                from datasets.packed import build_pack, folder_paths
                build_pack(folder_paths(root / "FaceForensics++" / "train_set"), root / PACK, pack_size, quiet=True)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.demo",
        description="Generate the embedded demo benchmark (synthetic stand-ins for FF++; offline, seeded). "
                    "Only a folder that holds a demo written by this command is ever replaced.",
        epilog="example: python -m preprocess.demo --out data/demo --seed 0")
    parser.add_argument("--out", default="data/demo",
                        help="output root (an earlier demo there is replaced; anything else is refused; "
                             "default: data/demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="frame size in pixels (default: 64)")
    parser.add_argument("--train-ids", type=int, default=100, help="videos per method in train_set (default: 100)")
    parser.add_argument("--test-ids", type=int, default=20, help="videos per method in test_set (default: 20)")
    parser.add_argument("--frames", type=int, default=8, help="frames per video (default: 8)")
    parser.add_argument("--no-pretrained", action="store_true",
                        help="skip the stand-in for ImageNet weights (preprocess/demo_pretrain.py)")
    args = parser.parse_args(argv)
    for name in ("size", "train_ids", "test_ids", "frames"):
        if getattr(args, name) < (8 if name == "size" else 2 if name.endswith("ids") else 1):
            raise UserError(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    generate(args.out, args.seed, args.size, args.train_ids, args.test_ids, args.frames,
             pretrained=not args.no_pretrained)
    return 0


if __name__ == "__main__":
    from utils import run_cli
    run_cli(main)
