"""Small helpers shared by every module: one-line user errors, paths, atomic file writes, seeding.

Where the rest lives (README, "Code map"): config.py (configuration), engine/ (devices, the training loop,
updates, checkpoints, run folders), metrics.py, datasets/, models/, losses/, methods/.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import random
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parent


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2, no traceback."""


class TrainingStopped(UserError):
    """The run stopped on purpose (too many non-finite losses or unreadable images); one line, exit 2."""


def run_cli(main: Callable[[list[str] | None], int]) -> None:
    """Run an entry point; a UserError becomes `error: ...` on stderr and exit status 2."""
    try:
        code = main(None)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(f"error: disk full ({err.filename or 'writing'}): free some space, then run the command again "
              "(training: with --resume)", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def resolve_path(path: str | os.PathLike) -> Path:
    """Config paths are relative to the repository root (where the .sh scripts run), or absolute."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else Path.cwd() / p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    import torch  # here, not at the top: a command's --help and config errors need no torch
    torch.manual_seed(seed)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file, then rename it into place (readers never see half of it)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: ranks may write at once
    try:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")  # any file name survives
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_csv(path: Path, header: list[str], rows: Iterable[Iterable]) -> None:
    """A CSV file written whole, then renamed into place."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
