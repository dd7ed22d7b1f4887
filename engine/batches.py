"""Training batches as the step functions take them: `next_batch()` gives the next batch's tensors on the
device; the unreadable images a batch replaced are counted and listed (BadImages, resumable)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import torch

from utils import TrainingStopped


class BadImages:
    """Unreadable training images: each logged once, listed in <run>/bad_images.txt; above `limit` the run
    stops (data.max_bad_images)."""

    def __init__(self, run_dir: Path, limit: int, logger):
        self.file, self.limit, self.logger = run_dir / "bad_images.txt", limit, logger
        self.paths: set[str] = set()

    def take(self, batch: tuple) -> tuple:
        """The batch's tensors, without its last item (the unreadable files it replaced)."""
        *tensors, bad = batch
        new = {p for item in bad for p in item.split("\n") if p} - self.paths
        if new:
            self.paths |= new
            if self.logger.main:
                with open(self.file, "a", encoding="utf-8", errors="surrogateescape") as f:
                    f.writelines(p + "\n" for p in sorted(new))
            self.logger.info(f"skipped {len(new)} unreadable image(s), {len(self.paths)} so far "
                             f"(listed in {self.file}), e.g. {sorted(new)[0]!r}")
            if len(self.paths) > self.limit:
                raise TrainingStopped(f"stopping: {len(self.paths)} unreadable images, more than "
                                      f"data.max_bad_images={self.limit}; see {self.file}")
        return tuple(tensors)

    def state_dict(self) -> dict:
        return {"paths": sorted(self.paths)}

    def load_state_dict(self, state: dict) -> None:
        self.paths = set(state.get("paths", []))


def feed(batches: Iterator, bad: BadImages, device: torch.device) -> Callable[[], tuple[torch.Tensor, ...]]:
    """next_batch(): the next batch of `batches` (views..., labels) on `device`."""
    def next_batch() -> tuple[torch.Tensor, ...]:
        return tuple(t.to(device, non_blocking=True) for t in bad.take(next(batches)))
    return next_batch
