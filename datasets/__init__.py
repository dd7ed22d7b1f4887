"""Datasets: sources and protocols (datasets.sources), images, transforms and reproducible loaders.

See datasets/sources.py for the dataset specs a config can name (folder:PATH, ff, dfdc, celebdf, flat).
"""
from __future__ import annotations

import functools
from typing import Any, Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from utils import UserError

from datasets.sources import (FF_METHODS, IMG_EXTS, Sample, build_samples, build_set, build_source,
                              limit_frames, prepare_data, split_by_video, target_id, test_sets)

__all__ = ["FF_METHODS", "IMG_EXTS", "Sample", "build_samples", "build_set", "build_source", "limit_frames",
           "prepare_data", "split_by_video", "target_id", "test_sets", "read_image", "BadImageError",
           "ImageDataset", "EvalDataset", "StepBatchSampler", "train_transform", "eval_transform",
           "train_loader", "train_batches", "eval_loader"]


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
    from datasets.augment import norm_stats
    to_float = v2.ToDtype(torch.float32, scale=True)
    stats = norm_stats(backbone, input_scale)
    if stats is None:
        return v2.Compose([to_float, v2.Lambda(lambda x: x / 255.0)])
    return v2.Compose([to_float, v2.Normalize(mean=stats[0], std=stats[1])])


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


def stream_seed(*parts: Any) -> int:
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
                 start_step: int = 0, part: tuple[int, int] = (0, 1)):
        self.n, self.batch_size, self.seed, self.stream = len(labels), batch_size, seed, stream
        self.start_step = start_step
        # Distributed: batch_size is the global batch; rank r of w gets slots [r*B/w, (r+1)*B/w).
        rank, world = part
        if batch_size % world:
            raise UserError(f"batch size {batch_size} is not divisible by the number of processes ({world})")
        self.slots = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
        self.by_class = [np.flatnonzero(labels == c) for c in (0, 1)] if balance else None
        if self.by_class is not None and any(len(c) == 0 for c in self.by_class):
            self.by_class = None  # one class only: nothing to balance

    def indices(self, step: int) -> np.ndarray:
        """The global batch of `step`: sample indices [batch_size] (every rank draws the same)."""
        if self.by_class is not None:
            rng = np.random.default_rng(stream_seed(self.seed, self.stream, "step", step))
            cls = rng.integers(0, 2, self.batch_size)
            return np.array([self.by_class[c][rng.integers(len(self.by_class[c]))] for c in cls])
        first = step * self.batch_size
        positions = np.arange(first, first + self.batch_size)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(positions // self.n):
            perm = np.random.default_rng(stream_seed(self.seed, self.stream, "epoch", epoch)).permutation(self.n)
            sel = positions // self.n == epoch
            out[sel] = perm[positions[sel] % self.n]
        return out

    def __iter__(self):
        step = self.start_step
        while True:
            idx = self.indices(step)
            items = [(int(i), stream_seed(self.seed, self.stream, "aug", step, slot)) for slot, i in enumerate(idx)]
            yield items[self.slots]
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
    """Endless, reproducible training batches from `start_step` on (see StepBatchSampler), decoded and
    augmented per image in DataLoader workers. Distributed: this rank's slice of the global batch."""
    from datasets.packed import _rank_world
    ds = ImageDataset(samples, train_transform(cfg), views)
    labels = np.array([s.label for s in samples])
    sampler = StepBatchSampler(labels, batch_size, cfg["seed"], stream, balance, start_step, _rank_world())
    return DataLoader(ds, batch_sampler=sampler, num_workers=cfg["workers"], pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)


@functools.lru_cache(maxsize=4)
def open_pack(folder: str):
    from datasets.packed import Pack
    return Pack(folder)


def train_batches(samples: list[Sample], cfg: dict, batch_size: int, views: int, balance: bool, stream: str,
                  start_step: int = 0, device: torch.device | None = None) -> Iterator:
    """Endless training batches (*views, labels, bad); nothing (workers, loader thread) starts until the
    first batch is taken. With data.packed: from the pack, augmented on `device` (datasets/packed.py);
    otherwise from the image files through train_loader."""
    if cfg["data"].get("packed"):
        from datasets.packed import PackedBatches
        from utils import resolve_path
        pack = open_pack(str(resolve_path(cfg["data"]["packed"])))
        batches = PackedBatches(pack, samples, cfg, batch_size, views, balance, stream, start_step,
                                device or torch.device("cpu"), what=f"{stream} training")
        try:
            yield from batches
        finally:
            batches.close()
        return
    yield from train_loader(samples, cfg, batch_size, views, balance, stream, start_step)


def eval_loader(samples: list[Sample], img_size: int, backbone: str, input_scale: str, batch_size: int,
                workers: int) -> DataLoader:
    ds = EvalDataset(samples, eval_transform(img_size, backbone, input_scale), img_size)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=torch.cuda.is_available())
