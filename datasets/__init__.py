"""Datasets: sample lists from folder trees, transforms, and loaders.

A *source* spec names images and their labels:
  "folder:PATH"                    any tree with real/ and fake/ subfolders (searched recursively)
  {kind: folder, root: PATH}       the same, as a mapping
  {kind: ff, root: PATH, subset: train_set|test_set, methods: [Real, Deepfakes, ...],
   videos: all|labeled|unlabeled}  the FaceForensics++ crop layout (one folder per video)
  {kind: flat, root: PATH, label: real|fake, domain: NAME}   a flat folder of one class (StyleGAN, CelebA)
A *set* is one source, or {sources: [...]} for several; test sets add `name` and `split` (known|unknown).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from utils import UserError, resolve_path

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


@dataclass(frozen=True)
class Sample:
    path: str
    label: int          # 0 = real, 1 = fake
    domain: str         # manipulation (Real, Deepfakes, ..., or the folder's name)
    video: str | None   # video id where the layout has one


# ----------------------------------------------------------------------------------------------- sources
def _images_under(root: Path) -> list[str]:
    """All image files below root, sorted (os.scandir walk; no stat of each file)."""
    found, stack = [], [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                elif entry.name.lower().endswith(IMG_EXTS):
                    found.append(entry.path)
    return sorted(found)


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise UserError(f"{what} folder not found: {path}")


def _folder_source(root: Path) -> list[Sample]:
    _require_dir(root, "dataset")
    samples = []
    for label, sub in ((0, "real"), (1, "fake")):
        _require_dir(root / sub, f"'{sub}'")
        files = _images_under(root / sub)
        if not files:
            raise UserError(f"no images in {root / sub} (expected {', '.join(IMG_EXTS)} files)")
        for f in files:
            rel = Path(f).relative_to(root / sub)
            video = str(rel.parent) if rel.parent != Path(".") else None
            samples.append(Sample(f, label, sub, video))
    return samples


def _flat_source(root: Path, label: str, domain: str | None) -> list[Sample]:
    _require_dir(root, "dataset")
    if label not in ("real", "fake"):
        raise UserError(f"flat source {root}: label must be 'real' or 'fake', got {label!r}")
    files = _images_under(root)
    if not files:
        raise UserError(f"no images in {root}")
    return [Sample(f, int(label == "fake"), domain or root.name, None) for f in files]


def _ff_source(root: Path, subset: str, methods: list[str]) -> list[Sample]:
    base = root / subset
    _require_dir(base, f"FaceForensics++ '{subset}'")
    samples = []
    for method in methods:
        if method != "Real" and method not in FF_METHODS:
            raise UserError(f"unknown FaceForensics++ method '{method}' (Real, {', '.join(FF_METHODS)})")
        _require_dir(base / method, f"FaceForensics++ '{subset}/{method}'")
        files = _images_under(base / method)
        if not files:
            raise UserError(f"no images in {base / method}")
        for f in files:
            video = Path(f).relative_to(base / method).parts[0]
            samples.append(Sample(f, int(method != "Real"), method, f"{method}/{video}"))
        _check_ff_names(base / method, method, {Path(s.video).name for s in samples if s.domain == method})
    return samples


def _check_ff_names(folder: Path, method: str, videos: set[str]) -> None:
    """FF++ names real videos '017' and fake ones '017_042' (target_source): a name of the other kind
    means a mislabelled folder, so stop rather than train on wrong labels."""
    import re
    pattern = re.compile(r"^\d+$" if method == "Real" else r"^\d+_\d+$")
    wrong = sorted(v for v in videos if not pattern.match(v))
    if wrong:
        expected = "'017'" if method == "Real" else "'017_042' (target_source)"
        raise UserError(f"{len(wrong)} video folder(s) in {folder} are not named like FaceForensics++ "
                        f"{'real' if method == 'Real' else 'fake'} videos ({expected}), e.g. '{wrong[0]}': "
                        "check the labels of this folder")


def target_id(video: str | None) -> str | None:
    """The target identity of an FF++ video id: 'Deepfakes/017_042' -> '017', 'Real/017' -> '017'."""
    if video is None:
        return None
    return video.split("/")[-1].split("_")[0]


def split_by_video(samples: list[Sample], part: str, fraction: float, seed: int) -> list[Sample]:
    """The labeled or unlabeled part of samples: a seeded partition of target ids, never of frames,
    so that all frames of a video (and every video of one target) fall on the same side."""
    if part == "all":
        return samples
    if part not in ("labeled", "unlabeled"):
        raise UserError(f"videos must be all, labeled or unlabeled, got {part!r}")
    ids = sorted({target_id(s.video) for s in samples})
    order = np.random.default_rng(seed).permutation(len(ids))
    n_labeled = int(round(fraction * len(ids)))
    labeled = {ids[i] for i in order[:n_labeled]}
    keep = (lambda t: t in labeled) if part == "labeled" else (lambda t: t not in labeled)
    return [s for s in samples if keep(target_id(s.video))]


def limit_frames(samples: list[Sample], per_video: int | None) -> list[Sample]:
    """At most `per_video` evenly spaced frames of each video (samples without a video are kept)."""
    if not per_video:
        return samples
    by_video: dict[Any, list[Sample]] = {}
    for s in samples:
        by_video.setdefault(s.video or s.path, []).append(s)
    out = []
    for frames in by_video.values():
        if len(frames) > per_video:
            idx = np.linspace(0, len(frames) - 1, per_video).round().astype(int)
            frames = [frames[i] for i in idx]
        out.extend(frames)
    return out


def build_source(spec: Any, data_cfg: dict, seed: int) -> list[Sample]:
    """Samples of one source spec (see the module docstring)."""
    if isinstance(spec, str):
        if not spec.startswith("folder:"):
            raise UserError(f"unknown dataset '{spec}' (use folder:PATH, or a mapping with kind: ff|flat|folder)")
        spec = {"kind": "folder", "root": spec[len("folder:"):]}
    if not isinstance(spec, dict) or "kind" not in spec or "root" not in spec:
        raise UserError(f"dataset spec must be folder:PATH or a mapping with 'kind' and 'root', got {spec!r}")
    allowed = {"folder": {"kind", "root"}, "flat": {"kind", "root", "label", "domain"},
               "ff": {"kind", "root", "subset", "methods", "videos"}}
    kind = spec["kind"]
    if kind not in allowed:
        raise UserError(f"unknown dataset kind '{kind}' (folder, ff, flat)")
    extra = set(spec) - allowed[kind]
    if extra:
        raise UserError(f"unknown key(s) {', '.join(sorted(extra))} in {kind} dataset spec")
    root = resolve_path(spec["root"])
    if kind == "folder":
        samples = _folder_source(root)
    elif kind == "flat":
        samples = _flat_source(root, spec.get("label", "fake"), spec.get("domain"))
    else:
        samples = _ff_source(root, spec.get("subset", "train_set"), list(spec.get("methods", ["Real", *FF_METHODS])))
        samples = split_by_video(samples, spec.get("videos", "all"), data_cfg["labeled_fraction"], seed)
    return limit_frames(samples, data_cfg.get("frames_per_video"))


def build_set(spec: Any, data_cfg: dict, seed: int) -> list[Sample]:
    """Samples of a set: one source, or {sources: [...]} (test sets may carry name/split keys)."""
    if isinstance(spec, dict) and "sources" in spec:
        return [s for src in spec["sources"] for s in build_source(src, data_cfg, seed)]
    if isinstance(spec, dict):
        spec = {k: v for k, v in spec.items() if k not in ("name", "split")}
    return build_source(spec, data_cfg, seed)


def build_samples(specs: list, data_cfg: dict, seed: int, what: str) -> list[Sample]:
    """Concatenate the samples of several sets (the labeled or unlabeled data of a config)."""
    if not specs:
        raise UserError(f"no {what} data configured (data.{what} is empty)")
    samples = [s for spec in specs for s in build_set(spec, data_cfg, seed)]
    if not samples:
        raise UserError(f"the {what} split is empty")
    return samples


def test_sets(cfg: dict, extra: list[str] = ()) -> dict[str, tuple[str | None, list[Sample]]]:
    """{name: (split, samples)} for the config's test sets plus ad-hoc `folder:PATH` ones."""
    out: dict[str, tuple[str | None, list[Sample]]] = {}
    specs = [] if extra else list(cfg["data"]["test"])
    for spec in specs:
        name = spec.get("name") if isinstance(spec, dict) else None
        name = name or (Path(spec[len("folder:"):]).name if isinstance(spec, str) else f"test{len(out)}")
        split = spec.get("split") if isinstance(spec, dict) else None
        if split not in (None, "known", "unknown"):
            raise UserError(f"test set '{name}': split must be known or unknown, got {split!r}")
        out[name] = (split, build_set(spec, cfg["data"], cfg["seed"]))
    for spec in extra:
        name = Path(spec[len("folder:"):].rstrip("/")).name if spec.startswith("folder:") else spec
        out[name] = (None, build_set(spec, cfg["data"], cfg["seed"]))
    if not out:
        raise UserError("no test sets: configure data.test or pass --test folder:PATH")
    return out


def prepare_data(cfg: dict) -> None:
    """Generate the embedded demo benchmark first if the config asks for it and it is missing."""
    if cfg["data"].get("demo"):
        from preprocess.demo import ensure_demo
        ensure_demo(resolve_path(cfg["data"]["demo"]))


# ----------------------------------------------------------------------------------------------- images
def read_image(path: str) -> torch.Tensor:
    """An image file as a uint8 RGB tensor [3, H, W] (grayscale and alpha converted)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise BadImageError(f"cannot read image {path}: {err.strerror}") from None
    # A truncated JPEG still decodes (grey bottom rows): require its end-of-image marker.
    if path.lower().endswith((".jpg", ".jpeg")) and b"\xff\xd9" not in data[-64:].tobytes():
        raise BadImageError(f"truncated JPEG {path}")
    # IMREAD_COLOR converts grayscale, RGBA (alpha dropped) and 16-bit images to 8-bit BGR.
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise BadImageError(f"cannot decode image {path}")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()  # [H, W, 3] -> [3, H, W]


def normalisation(backbone: str, input_scale: str) -> v2.Transform:
    """uint8 -> float. project: [0, 1] then the backbone's mean/std. seed: the reference code's
    ToTensor() followed by another /255 (inputs in [0, 1/255], no mean/std), needed for the authors' weights."""
    to_float = v2.ToDtype(torch.float32, scale=True)
    if input_scale == "seed":
        return v2.Compose([to_float, v2.Lambda(lambda x: x / 255.0)])
    import timm
    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
        mean, std = (cfg.mean, cfg.std) if cfg is not None else (None, None)
    except Exception:
        mean = std = None
    mean, std = mean or (0.485, 0.456, 0.406), std or (0.229, 0.224, 0.225)
    return v2.Compose([to_float, v2.Normalize(mean=list(mean), std=list(std))])


def train_transform(cfg: dict) -> v2.Transform:
    """The reference augmentation: RandomResizedCrop, flip, colour jitter (p), grayscale (p)."""
    aug = cfg["aug"]
    return v2.Compose([
        v2.RandomResizedCrop(cfg["img_size"], scale=tuple(aug["scale"]), antialias=True),
        v2.RandomHorizontalFlip(aug["hflip"]),
        v2.RandomApply([v2.ColorJitter(*aug["color_jitter"])], p=aug["color_jitter_p"]),
        v2.RandomGrayscale(aug["grayscale_p"]),
        normalisation(cfg["backbone"], cfg["input_scale"]),
    ])


def eval_transform(img_size: int, backbone: str, input_scale: str) -> v2.Transform:
    """Evaluation: resize only."""
    return v2.Compose([v2.Resize((img_size, img_size), antialias=True), normalisation(backbone, input_scale)])


def _stream_seed(*parts: Any) -> int:
    """A 63-bit seed from the run seed, a stream name and step/slot numbers (stable across processes)."""
    import zlib
    text = "/".join(str(p) for p in parts).encode()
    return (zlib.crc32(text) << 31) ^ zlib.adler32(text)


class StepBatchSampler:
    """Endless batches whose content is a pure function of (seed, stream, step): resuming at step k
    gives exactly the batches an uninterrupted run would have seen, with any number of workers.

    Each item is (sample index, augmentation seed). Balanced: classes drawn equally often (with
    replacement). Otherwise: a fresh seeded permutation per pass over the data (each pass re-shuffles).
    """

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int, stream: str, balance: bool,
                 start_step: int = 0):
        self.n, self.batch_size, self.seed, self.stream = len(labels), batch_size, seed, stream
        self.start_step = start_step
        self.by_class = [np.flatnonzero(labels == c) for c in (0, 1)] if balance else None
        if self.by_class is not None and any(len(c) == 0 for c in self.by_class):
            self.by_class = None  # one class only: nothing to balance

    def _indices(self, step: int) -> np.ndarray:
        if self.by_class is not None:
            rng = np.random.default_rng(_stream_seed(self.seed, self.stream, "step", step))
            cls = rng.integers(0, 2, self.batch_size)
            return np.array([self.by_class[c][rng.integers(len(self.by_class[c]))] for c in cls])
        first = step * self.batch_size
        positions = np.arange(first, first + self.batch_size)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(positions // self.n):
            perm = np.random.default_rng(_stream_seed(self.seed, self.stream, "epoch", epoch)).permutation(self.n)
            sel = positions // self.n == epoch
            out[sel] = perm[positions[sel] % self.n]
        return out

    def __iter__(self):
        step = self.start_step
        while True:
            idx = self._indices(step)
            yield [(int(i), _stream_seed(self.seed, self.stream, "aug", step, slot)) for slot, i in enumerate(idx)]
            step += 1


class BadImageError(OSError):
    """An image file that cannot be decoded (empty, truncated, not an image)."""


class ImageDataset(Dataset):
    """Samples -> (image, label, bad) or, with views=2, (view1, view2, label, bad): two independent draws.

    Items are (index, augmentation seed) pairs from StepBatchSampler, so augmentation is reproducible.
    An unreadable file is replaced by the next readable sample (deterministically) and its path returned
    in `bad` ("" when none) so that the training loop can count and list it.
    """

    def __init__(self, samples: list[Sample], transform: v2.Transform, views: int = 1):
        self.samples, self.transform, self.views = samples, transform, views

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        index, aug_seed = item if isinstance(item, tuple) else (item, None)
        bad = []
        for attempt in range(len(self.samples)):
            s = self.samples[(index + attempt) % len(self.samples)]
            try:
                img = read_image(s.path)
                break
            except BadImageError:
                bad.append(s.path)
                if len(bad) >= 20:
                    raise
        # torchvision's transforms draw from torch's global CPU generator: seeding it per item makes the
        # augmentation a function of (seed, stream, step, slot), whatever the number of workers. (With
        # workers=0 this re-seeds the training process's generator too; what a step draws from it is then
        # still a function of the step, so runs stay reproducible and resumable.)
        if aug_seed is not None:
            torch.default_generator.manual_seed(aug_seed)
        views = [self.transform(img) for _ in range(self.views)]
        return (*views, s.label, "\n".join(bad))


class EvalDataset(Dataset):
    """Samples -> (image, ok): unreadable files give ok=False (and a zero image) instead of an error."""

    def __init__(self, samples: list[Sample], transform: v2.Transform, img_size: int):
        self.samples, self.transform, self.img_size = samples, transform, img_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        try:
            return self.transform(read_image(self.samples[i].path)), True
        except BadImageError:
            return torch.zeros(3, self.img_size, self.img_size), False


def train_loader(samples: list[Sample], cfg: dict, batch_size: int, views: int, balance: bool, stream: str,
                 start_step: int = 0) -> DataLoader:
    """Endless, reproducible training batches from `start_step` on (see StepBatchSampler)."""
    ds = ImageDataset(samples, train_transform(cfg), views)
    labels = np.array([s.label for s in samples])
    sampler = StepBatchSampler(labels, batch_size, cfg["seed"], stream, balance, start_step)
    return DataLoader(ds, batch_sampler=sampler, num_workers=cfg["workers"], pin_memory=torch.cuda.is_available())


def train_batches(samples: list[Sample], cfg: dict, batch_size: int, views: int, balance: bool, stream: str,
                  start_step: int = 0) -> Iterator:
    """Like iter(train_loader(...)), but nothing (workers included) starts until the first batch is taken."""
    yield from train_loader(samples, cfg, batch_size, views, balance, stream, start_step)


def eval_loader(samples: list[Sample], img_size: int, backbone: str, input_scale: str, batch_size: int,
                workers: int) -> DataLoader:
    ds = EvalDataset(samples, eval_transform(img_size, backbone, input_scale), img_size)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=torch.cuda.is_available())
