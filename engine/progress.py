"""Progress of a long loop (evaluation, prediction, face extraction), for a reader on a terminal and of a log
file alike: a line every few seconds with done/total, rate, elapsed time and ETA, on stderr.

tqdm is not used here because off a terminal (slurm, nohup, `> log`) a bar is one line rewritten with carriage
returns, or nothing when disabled; these are plain lines a log keeps. SUPCON_PROGRESS_EVERY=SECONDS sets how
often (default: 2 s on a terminal, 30 s off one; 0: every update).
"""
from __future__ import annotations

import os
import sys
import time


def clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def interval(stream=None) -> float:
    """Seconds between progress lines: SUPCON_PROGRESS_EVERY, else 2 on a terminal and 30 off one."""
    env = os.environ.get("SUPCON_PROGRESS_EVERY")
    return float(env) if env else (2.0 if (stream or sys.stderr).isatty() else 30.0)


class Progress:
    """`with Progress("test images", total) as p: ... p.update(n)`: a line every `every` seconds and one at the
    end (a loop of no more than one update says nothing)."""

    def __init__(self, what: str, total: int, unit: str = "images", every: float | None = None, stream=None):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream or sys.stderr
        self.every = every if every is not None else interval(self.stream)
        self.done, self.updates = 0, 0
        self.start = self.last = time.time()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()

    def close(self) -> None:
        if self.updates > 1:
            self.line(final=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.updates += 1
        if time.time() - self.last >= self.every and self.done < self.total:
            self.line()

    def line(self, final: bool = False) -> None:
        self.last = now = time.time()
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 and not final else None
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        print(f"{self.what}: {self.done}/{self.total} {self.unit}{share}, {rate:.1f} {self.unit}/s, "
              f"{clock(elapsed)} elapsed" + (f", ETA {clock(left)}" if left is not None else ", done"),
              file=self.stream, flush=True)
