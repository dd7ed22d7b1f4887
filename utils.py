"""Small helpers shared by every module: one-line user errors, paths, atomic file writes, seeding.

Where the rest lives (README, "Code map"): config.py (configuration), engine/ (devices, the training loop,
updates, checkpoints, run folders), metrics.py, datasets/, models/, losses/, methods/.
"""
from __future__ import annotations

import argparse
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
    """Run an entry point as a command: its exit status (see exit_code)."""
    sys.exit(exit_code(main))


def exit_code(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """main(argv)'s exit status as a command's: a UserError becomes `error: ...` on stderr and 2, no traceback;
    a full or read-only disk, or an exceeded quota, one line and 2; Ctrl-C 130. The tests call this in-process."""
    try:
        return main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        hint = _DISK_ERRORS.get(err.errno)
        if hint is None:
            raise
        print(f"error: {hint} ({err.filename or 'writing'}): {_DISK_FIX[err.errno]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


_DISK_ERRORS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
                errno.EACCES: "permission denied"}
_DISK_FIX = {errno.ENOSPC: "free some space, then run the command again (training: with --resume)",
             errno.EDQUOT: "free some of your quota, then run the command again (training: with --resume)",
             errno.EROFS: "write to a writable folder (--out, out_dir=...), then run the command again",
             errno.EACCES: "check the folder's permissions, or write elsewhere (--out, out_dir=...)"}


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


MAX_YAML_NODES = 100_000  # a config or paths file expands to far fewer; an alias bomb to billions


def parse_yaml(text: str, what: str):
    """YAML text (safe_load) whose expanded size is bounded: an alias bomb (a few hundred bytes whose aliases
    expand to gigabytes) or a document nested thousands deep is a one-line UserError, as invalid YAML is."""
    import yaml
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_nodes(node, {}) > MAX_YAML_NODES:
            raise UserError(f"{what}: its aliases expand to more than {MAX_YAML_NODES:,} values: not a config")
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{what} is not valid YAML: {str(err).splitlines()[0][:200]}") from None
    except RecursionError:
        raise UserError(f"{what} is nested too deeply to be a config") from None


def _expanded_nodes(node, memo: dict) -> int:
    """Values of a composed YAML node once its aliases are expanded (each distinct node counted once, memo)."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # (a node that contains itself counts once)
        children = node.value if isinstance(node.value, list) else []
        total = 1
        for child in children:
            for part in (child if isinstance(child, tuple) else (child,)):
                total += _expanded_nodes(part, memo)
                if total > MAX_YAML_NODES:
                    break
        memo[key] = total
    return memo[key]


def parse_json(text: str, what: str):
    """JSON text; invalid or absurdly nested JSON is a one-line UserError naming `what`."""
    import json
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{what} is not valid JSON: {str(err).splitlines()[0][:200]}") from None
    except RecursionError:
        raise UserError(f"{what} is nested too deeply to be an index") from None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help with the description as written and every option's default shown (where it has one and its help
    does not already say it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and text and text != argparse.SUPPRESS and "default" not in text
                and default not in (None, False, [], argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text
