"""Step-addressed sampling: the content of every training batch, and the seeds of its augmentation, are a
pure function of (seed, stream, step), so a resumed run sees exactly the batches of an uninterrupted one,
with any number of workers or processes."""
from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from utils import UserError


def stream_seed(*parts: Any) -> int:
    """A 63-bit seed from the run seed, a stream name and step/slot numbers (stable across processes)."""
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
