"""Configuration: loading (defaults <- YAML file <- `key=value` overrides) and validation against the declared
keys of engine/schema.py. Every problem is one UserError line."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable


from engine.schema import AUG_KEYS, AUG_ROLES, DEFAULTS, FREE_SECTIONS, RESUME_FREE, flat
from utils import UserError, parse_yaml

__all__ = ["DEFAULTS", "RESUME_FREE", "load_config", "config_changes"]

# ----------------------------------------------------------------------------------------------- validation
def _check_types(cfg: dict, ref: dict, prefix: str = "") -> None:
    for key, default in ref.items():
        name, value = f"{prefix}{key}", cfg[key]
        if isinstance(default, dict):
            if not _is_role_section(name):
                _check_types(value, default, name + ".")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"config key '{name}' must be true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            if isinstance(value, str):
                # YAML 1.1 reads 1e-4 (no dot) as a string; accept any number Python can parse.
                try:
                    value = cfg[key] = float(value) if isinstance(default, float) else int(value)
                except ValueError:
                    pass
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = cfg[key] = float(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"config key '{name}' must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise UserError(f"config key '{name}' must be an integer, got {value!r}")


def _get(cfg: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_aug(aug: dict, name: str) -> None:
    """The augmentation keys of `aug` (a role section holds some of them)."""
    ra = aug.get("randaugment", [0, 0])
    if not (isinstance(ra, list) and len(ra) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in ra)
            and 0 <= ra[0] <= 8 and 0 <= ra[1] <= 30):
        raise UserError(f"config key '{name}.randaugment' must be [ops 0-8, magnitude 0-30] integers, got {ra!r}")
    scale = aug.get("scale", [0.5, 1.0])
    if not (isinstance(scale, list) and len(scale) == 2 and all(map(_number, scale)) and 0 < scale[0] <= scale[1] <= 1):
        raise UserError(f"config key '{name}.scale' must be [min, max] with 0 < min <= max <= 1, got {scale!r}")
    quality = aug.get("jpeg_quality", [40, 100])
    if not (isinstance(quality, list) and len(quality) == 2 and all(isinstance(q, int) for q in quality)
            and 1 <= quality[0] <= quality[1] <= 100):
        raise UserError(f"config key '{name}.jpeg_quality' must be [min, max] integers with 1 <= min <= max <= 100, "
                        f"got {quality!r}")
    sigma = aug.get("blur_sigma", [0.1, 2.0])
    if not (isinstance(sigma, list) and len(sigma) == 2 and all(map(_number, sigma)) and 0 < sigma[0] <= sigma[1] <= 10):
        raise UserError(f"config key '{name}.blur_sigma' must be [min, max] with 0 < min <= max <= 10, got {sigma!r}")
    for key in ("hflip", "color_jitter_p", "grayscale_p", "jpeg_p", "blur_p"):
        value = aug.get(key, 0.5)
        if not (_number(value) and 0 <= value <= 1):
            raise UserError(f"config key '{name}.{key}' must be a probability in [0, 1], got {value!r}")
    jitter = aug.get("color_jitter", [0, 0, 0, 0])
    if not (isinstance(jitter, list) and len(jitter) == 4 and all(map(_number, jitter))
            and min(jitter[:3]) >= 0 and 0 <= jitter[3] <= 0.5):
        raise UserError(f"config key '{name}.color_jitter' must be [brightness, contrast, saturation, hue] with the "
                        f"first three >= 0 and hue in [0, 0.5], got {jitter!r}")


def _check_values(cfg: dict) -> None:
    for name, key in flat().items():
        if (key.choices or key.low is not None or key.high is not None) and not name.startswith("aug."):
            value = _get(cfg, name)
            if not key.allows(value):
                shown = repr(value) if key.choices else value
                raise UserError(f"config key '{name}' must be {key.bounds()}, got {shown}")
    if cfg["val"]["select"] == "best_val" and not cfg["val"]["enabled"]:
        raise UserError("config key 'val.select' is best_val but val.enabled is false: enable the validation set")
    batch = cfg["mpl_options"]["finetune_batch"]
    if batch is not None and not (isinstance(batch, int) and not isinstance(batch, bool) and batch > 0):
        raise UserError(f"config key 'mpl_options.finetune_batch' must be a positive integer or null, got {batch!r}")
    per_video = cfg["data"]["frames_per_video"]
    if per_video is not None and not (isinstance(per_video, int) and not isinstance(per_video, bool) and per_video > 0):
        raise UserError(f"config key 'data.frames_per_video' must be a positive integer or null, got {per_video!r}")
    _check_aug(cfg["aug"], "aug")
    for role in AUG_ROLES:
        section = cfg["aug"][role] or {}
        unknown = sorted(set(section) - set(AUG_KEYS)) if isinstance(section, dict) else []
        if not isinstance(section, dict) or unknown:
            keys = ", ".join(AUG_KEYS)
            raise UserError(f"config key 'aug.{role}' may only set {keys}"
                            f" (got {', '.join(unknown or list(section))})")
        _check_aug(section, f"aug.{role}")
    _check_run_name(cfg["run_name"])


def _check_run_name(name: Any) -> None:
    """A run name is one folder inside out_dir: a string, without path separators, not '.' or '..'."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"run_name must be a non-empty string (quote it in YAML), got {name!r}")
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise UserError(f"run_name must be a plain folder name inside out_dir (no '/', '..'), got {name!r}")


# ----------------------------------------------------------------------------------------------- loading
def _merge(base: dict, override: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        name = f"{prefix}{key}"
        if prefix.rstrip(".") in FREE_SECTIONS:
            out[key] = value
            continue
        if key not in base:
            raise UserError(f"unknown config key '{name}'")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise UserError(f"config key '{name}' must be a mapping")
            out[key] = value if _is_role_section(name) else _merge(base[key], value, name + ".")
        else:
            out[key] = value
    return out


def _is_role_section(name: str) -> bool:
    return name in {f"aug.{role}" for role in AUG_ROLES}


def _set_dotted(cfg: dict, dotted: str, raw: str) -> None:
    node, keys = cfg, dotted.split(".")
    for i, key in enumerate(keys):
        name = ".".join(keys[: i + 1])
        parent = ".".join(keys[:i])
        free = parent in FREE_SECTIONS
        if not isinstance(node, dict) or (key not in node and not free):
            raise UserError(f"unknown config key '{name}'")
        if i == len(keys) - 1:
            if isinstance(node.get(key), dict) and not free:
                raise UserError(f"config key '{name}' is a section; set one of its keys")
            # run_name is a folder name: never YAML (off, 007 and yes would become False, 7 and True)
            node[key] = raw if name == "run_name" else (parse_yaml(raw, f"override {name}") if raw != "" else None)
        else:
            node = node[key]


def load_config(path: str | None, overrides: Iterable[str] = ()) -> dict:
    """DEFAULTS <- YAML file <- `key=value` overrides; unknown keys, wrong types and impossible values are
    UserErrors. The run name defaults to the file's name plus a hash of the result-changing overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file not found: {path}")
        loaded = parse_yaml(p.read_text(), f"config file {path}") or {}
        if not isinstance(loaded, dict):
            raise UserError(f"config file {path} must hold a mapping")
        cfg = _merge(cfg, loaded)
    named = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like key=value")
        key, raw = item.split("=", 1)
        _set_dotted(cfg, key.strip(), raw)
        if key.strip() not in RESUME_FREE | {"run_name", "out_dir"}:
            named[key.strip()] = raw
    if cfg["run_name"] is None:
        # The run folder follows the config and the overrides that change the result, so that runs with
        # other settings never replace each other: demo, demo-3f2a9c1e (hash of e.g. supcon.lr=1e-3).
        base = Path(path).stem if path else "default"
        digest = hashlib.sha1(json.dumps(sorted(named.items())).encode()).hexdigest()[:8]
        cfg["run_name"] = f"{base}-{digest}" if named else base
    _check_types(cfg, DEFAULTS)
    _check_values(cfg)
    return cfg


_ABSENT = object()


def config_changes(old: dict, new: dict, prefix: str = "", defaults: Any = DEFAULTS) -> list[str]:
    """Dotted keys whose values differ between two configs (ignoring RESUME_FREE). A key one side lacks counts
    as its default there: a run saved before the key existed trained with what its default does now."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        if name in RESUME_FREE:
            continue
        default = defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
        a, b = old.get(key, default), new.get(key, default)
        a, b = (None if a is _ABSENT else a), (None if b is _ABSENT else b)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, name + ".", default if isinstance(default, dict) else {})
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
