"""Loaders: reproducible endless training batches (from image files or from a pack) and evaluation batches."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datasets.augment import eval_transform, train_transform, view_specs
from datasets.images import BadImageError, read_image
from datasets.index import Sample
from datasets.packed import Pack, PackedBatches
from datasets.sampling import StepBatchSampler
from engine.dist import rank_world
from utils import TrainingStopped, resolve_path


class ImageDataset(Dataset):
    """Samples -> (view_1, ..., view_V, label, bad): one independent draw of each view's transform.

    Items are (index, augmentation seed) pairs from StepBatchSampler, so augmentation is reproducible.
    An unreadable file is replaced by the next readable sample (deterministically) and its path returned
    in `bad` ("" when none) so that the training loop can count and list it.
    """

    def __init__(self, samples: list[Sample], transforms: list[v2.Transform]):
        self.samples, self.transforms = samples, transforms  # one transform per view

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
        else:
            raise TrainingStopped(f"no training image can be read (all {len(self.samples)}, e.g. {bad[0]!r})")
        # torchvision's transforms draw from torch's global CPU generator: seeding it per item makes the
        # augmentation a function of (seed, stream, step, slot), whatever the number of workers. (With
        # workers=0 this re-seeds the training process's generator too; what a step draws from it is then
        # still a function of the step, so runs stay reproducible and resumable.)
        if aug_seed is not None:
            torch.default_generator.manual_seed(aug_seed)
        views = [transform(img) for transform in self.transforms]
        return (*views, s.label, "\n".join(bad))


class EvalDataset(Dataset):
    """Samples -> (image, ok): unreadable files give ok=False (and a zero image) instead of an error.
    `perturb(image, path)` (datasets/perturb.py), if given, degrades the decoded image first."""

    def __init__(self, samples: list[Sample], transform: v2.Transform, img_size: int, perturb=None):
        self.samples, self.transform, self.img_size, self.perturb = samples, transform, img_size, perturb

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path = self.samples[i].path
        try:
            img = read_image(path)
            return self.transform(self.perturb(img, path) if self.perturb else img), True
        except BadImageError:
            return torch.zeros(3, self.img_size, self.img_size), False


def train_loader(samples: list[Sample], cfg: dict, batch_size: int, views: int, balance: bool, stream: str,
                 start_step: int = 0, role: str = "labeled") -> DataLoader:
    """Endless, reproducible training batches from `start_step` on (see StepBatchSampler), decoded and
    augmented per image in DataLoader workers. Distributed: this rank's slice of the global batch."""
    ds = ImageDataset(samples, [train_transform(spec) for spec in view_specs(cfg, role, views)])
    labels = np.array([s.label for s in samples])
    sampler = StepBatchSampler(labels, batch_size, cfg["seed"], stream, balance, start_step, rank_world())
    return DataLoader(ds, batch_sampler=sampler, num_workers=cfg["workers"], pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)


def open_pack(folder: str) -> Pack:
    """The pack in `folder`, opened once per version of it (the stages of a run share it; a pack that grew
    since is opened again)."""
    meta = Path(folder) / "meta.json"
    return _open_pack(folder, meta.stat().st_mtime_ns if meta.is_file() else 0)


@functools.lru_cache(maxsize=4)
def _open_pack(folder: str, version: int) -> Pack:
    return Pack(folder)


def train_batches(samples: list[Sample], cfg: dict, batch_size: int, views: int, balance: bool, stream: str,
                  start_step: int = 0, device: torch.device | None = None, role: str = "labeled") -> Iterator:
    """Endless training batches (*views, labels, bad); nothing (workers, loader thread) starts until the
    first batch is taken. `role`: labeled or unlabeled (its two views: weak, strong; datasets.augment).
    With data.packed: from the pack, augmented on `device` (datasets/packed.py); otherwise from the image
    files through train_loader."""
    if cfg["data"].get("packed"):
        pack = open_pack(str(resolve_path(cfg["data"]["packed"])))
        batches = PackedBatches(pack, samples, cfg, batch_size, views, balance, stream, start_step,
                                device or torch.device("cpu"), what=f"{stream} training", role=role)
        try:
            yield from batches
        finally:
            batches.close()
        return
    yield from train_loader(samples, cfg, batch_size, views, balance, stream, start_step, role)


def mpl_streams(labeled: list[Sample], unlabeled: list[Sample], cfg: dict, labeled_views: int, start_step: int,
                device: torch.device) -> tuple[Iterator, Iterator]:
    """The two endless streams of an MPL stage, from `start_step` on: labeled batches (mpl.batch_labeled,
    `labeled_views` views each) and unlabeled ones (mpl.batch_unlabeled; weak and strong views)."""
    mc, balance = cfg["mpl"], cfg["data"]["balance"]
    lab = train_batches(labeled, cfg, mc["batch_labeled"], labeled_views, balance, "mpl-labeled", start_step, device)
    unl = train_batches(unlabeled, cfg, mc["batch_unlabeled"], 2, False, "mpl-unlabeled", start_step, device,
                        role="unlabeled")
    return lab, unl


def eval_loader(samples: list[Sample], img_size: int, backbone: str, input_scale: str, batch_size: int,
                workers: int, perturb=None) -> DataLoader:
    ds = EvalDataset(samples, eval_transform(img_size, backbone, input_scale), img_size, perturb)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=torch.cuda.is_available())
