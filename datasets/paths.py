"""Dataset roots: `{key}` in a spec's root is a key of the paths file (configs/paths.yaml), of an
environment variable SUPCON_<KEY>, or of data.paths.<key>=... on the command line (latest wins)."""
from __future__ import annotations

import os
import re
from pathlib import Path


from utils import UserError, parse_yaml, resolve_path


def load_paths(data_cfg: dict) -> dict[str, str]:
    """Dataset roots: the paths file, then SUPCON_<KEY> environment variables, then data.paths overrides."""
    paths: dict[str, str] = {}
    file = data_cfg.get("paths_file")
    if file and resolve_path(file).is_file():
        loaded = parse_yaml(resolve_path(file).read_text(), f"paths file {file}") or {}
        if not isinstance(loaded, dict):
            raise UserError(f"paths file {file} must hold a mapping of names to folders")
        paths.update({k: v for k, v in loaded.items() if v})
    for key, value in os.environ.items():
        if key.startswith("SUPCON_") and value:
            paths[key[len("SUPCON_"):].lower()] = value
    paths.update({k: v for k, v in (data_cfg.get("paths") or {}).items() if v})
    return paths


def unset_keys(root: str, data_cfg: dict) -> list[str]:
    """The {key} references of a root that no paths file, variable or override sets."""
    keys = re.findall(r"\{(\w+)\}", str(root))
    return [k for k in keys if k not in load_paths(data_cfg)] if keys else []


def resolve_root(root: str, data_cfg: dict, layout: str) -> Path:
    """A spec's root with {key} references to the paths file filled in."""
    keys = re.findall(r"\{(\w+)\}", str(root))
    if keys:
        paths = load_paths(data_cfg)
        for key in keys:
            if key not in paths:
                raise UserError(f"dataset root '{key}' is not set: set it in {data_cfg.get('paths_file')}, with "
                                f"SUPCON_{key.upper()}=... or data.paths.{key}=... (expected layout: {layout})")
        root = str(root).format(**paths)
    return resolve_path(root)
