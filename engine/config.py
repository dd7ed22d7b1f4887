"""Configuration: every key and its default, loading (YAML file + `key=value` overrides), validation, and the
common command line of the training scripts and evaluate.py. Every problem is one UserError line."""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from utils import UserError

# Every key a config may set. Values are the project's defaults: the authors' recipe (their .sh scripts and
# code, see README "Differences"); configs/*.yaml override them and `key=value` arguments override the file.
DEFAULTS: dict[str, Any] = {
    "seed": 777,
    "device": "auto",              # auto | cpu | cuda | cuda:N
    "out_dir": "runs",             # run folders go to <out_dir>/<run_name>/<method>
    "run_name": None,              # default: the config file's name
    "backbone": "resnet50",        # any timm model name (resnet50, resnet101, efficientnet_b4, ...)
    "pretrained": "imagenet",      # imagenet (the authors' weights; never downloaded: models/weights.py) |
                                   # none (random initialisation) | path to a state-dict file
    "weights_dir": "weights",      # where `python -m models.fetch_weights` stores ImageNet weights
    "img_size": 64,
    "input_scale": "project",      # project: [0, 1] + backbone mean/std; seed: the reference code's x/255/255
    "amp": True,                   # mixed precision on CUDA, a speed choice (ignored on CPU); false: the authors' fp32
    "amp_dtype": "auto",           # auto (bf16 where the GPU has it, else fp16 with a loss scaler) | bf16 | fp16
    "compile": False,              # torch.compile the networks (slow start, faster steps on GPUs)
    "cuda_graphs": True,           # replay each training step as a CUDA graph where possible (one CUDA device,
                                   # bf16/fp32, no compile; engine/graphs.py): the same updates, 2-3x faster
                                   # steps on an H200 (bench/results-h200-graphs.md); false: eager steps
    "sync_bn": False,              # multi-GPU: batch-norm statistics over the global batch (SyncBatchNorm)
    "workers": 4,                  # DataLoader worker processes
    "log_every": 50,               # steps between log lines
    "checkpoint_every": 200,       # steps between full (resumable) checkpoints
    "keep_checkpoints": 2,         # how many of them to keep
    "max_nonfinite_steps": 10,     # skipped non-finite updates tolerated before the run stops
    "aug": {                       # training augmentation of labeled images (and, by default, of unlabeled ones)
        "scale": [0.5, 1.0],       # RandomResizedCrop scale range
        "hflip": 0.5,
        "color_jitter": [0.4, 0.4, 0.4, 0.1],
        "color_jitter_p": 0.8,
        "grayscale_p": 0.2,
        "jpeg_p": 0.0,             # ours, opt-in (0: off, the authors): re-encode as JPEG with this probability
        "jpeg_quality": [40, 100],  # ... at a quality drawn from [min, max] (DeepfakeBench's ImageCompression)
        "blur_p": 0.0,             # ours, opt-in (0: off): Gaussian blur with this probability
        "blur_sigma": [0.1, 2.0],  # ... of a sigma (pixels of the stored image) drawn from [min, max]
        "unlabeled_weak": {},      # overrides of the keys above for the weak view of unlabeled images
        "unlabeled_strong": {},    # ... and for the strong view (the authors: both = the labeled augmentation)
    },
    "data": {
        "demo": None,              # path: generate the embedded demo benchmark there when missing
        "balance": False,          # true: sample real and fake labeled images equally often (ours; the
                                   # authors shuffled plainly, FF++ labeled data being ~3 fake : 1 real)
        "labeled_fraction": 0.5,   # share of train videos (by target id) in the labeled part
        "frames_per_video": None,  # keep at most this many frames per video (evenly spaced)
        "max_bad_images": 100,     # unreadable images skipped (and listed) before the run stops
        "paths_file": "configs/paths.yaml",  # dataset roots named as {key} in specs
        "paths": {},               # overrides of the paths file: data.paths.ff=/data/FF++
        "index_dir": ".cache/index",  # cached indexes of dataset trees (CSV); null: no cache
        "packed": None,            # a pack folder (python -m preprocess.pack): training batches from it,
                                   # augmented on the device; null: decode the image files per step
        "labeled": [],
        "unlabeled": [],
        "test": [],
    },
    "val": {                       # a validation set from the labeled training domain (off: the authors had none)
        "enabled": False,          # hold out `fraction` of the labeled identity groups as the `val` role
        "fraction": 0.1,
        "every": 200,              # steps between validation passes in each stage (and one at its end)
        "select": "last",          # last: release the final weights (the authors) | best_val: the best on val
        "threshold": "eer",        # decision threshold chosen on val, stored in the release file:
                                   # eer (FPR = FNR) | balanced (best balanced accuracy)
        "temperature": False,      # fit temperature scaling on val (ECE before/after in the release file)
        "batch_size": 256,         # evaluation batch of the validation passes
    },
    "pt": {"steps": 1000, "batch_size": 512, "lr": 1e-4, "weight_decay": 0.0},
    "supcon": {
        "steps": 1000, "batch_size": 512, "lr": 1e-4, "temperature": 0.1, "feat_dim": 128,
        "classifier_steps": 1000, "classifier_batch_size": 512, "classifier_lr": 1e-4,
    },
    "mpl": {
        "steps": 5000, "batch_labeled": 64, "batch_unlabeled": 448,   # --epochs 1000 --repeat 5
        "teacher_lr": 1e-4, "student_lr": 1e-4, "temperature": 0.1,
        "T": 1.0,                     # softmax temperature of the pseudo labels: no effect on hard labels
                                      # (argmax softmax(t / T) = argmax t), as in the authors' code
        "feedback": "new_minus_old",  # h = s_new - s_old (the authors' sign); or old_minus_new
        "teacher_encoder": None,      # default: <run>/supcon/supcon_encoder.tar
        "teacher_classifier": None,   # default: <run>/supcon/supcon_classifier.tar
        "student_pretrained": None,   # default: same as `pretrained`
        "finetune_steps": 1000, "finetune_classifier_steps": 1000, "finetune_lr": 1e-4,
    },
    "mpl_options": {                  # vanilla MPL (train_mpl.py) only; all off: Pham et al.'s plain MPL
        "uda": False,                 # UDA consistency on the teacher (soft targets from its weak view)
        "uda_threshold": 0.95,        # ... on unlabeled images whose weak-view confidence reaches this
        "uda_weight": 1.0,            # ... with this weight,
        "uda_warmup": 0,              # ... reached linearly over these steps
        "h_baseline": 0.0,            # > 0: subtract a moving average of h (this decay) from h
        "ema": 0.0,                   # > 0: keep an EMA of the student (this decay) and release it
    },
}

# Settings that may change between a run and its resumption without changing its result (they also do not
# name the run folder).
RESUME_FREE = {"device", "weights_dir", "workers", "log_every", "checkpoint_every", "keep_checkpoints",
               "max_nonfinite_steps", "data.max_bad_images", "amp", "amp_dtype", "compile", "cuda_graphs"}
_FREE_SECTIONS = {"data.paths"}  # mappings whose keys the user chooses (dataset root names)
AUG_ROLES = ("unlabeled_weak", "unlabeled_strong")  # sections of `aug` that override its keys for a role
_CHOICES = {"input_scale": ("project", "seed"), "mpl.feedback": ("new_minus_old", "old_minus_new"),
            "amp_dtype": ("auto", "bf16", "fp16"), "val.select": ("last", "best_val"),
            "val.threshold": ("eer", "balanced")}


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
    for name, allowed in _CHOICES.items():
        if _get(cfg, name) not in allowed:
            raise UserError(f"config key '{name}' must be one of {', '.join(allowed)}, got {_get(cfg, name)!r}")
    positive = ["img_size", "checkpoint_every", "keep_checkpoints", "log_every", "supcon.temperature",
                "supcon.feat_dim", "mpl.temperature", "mpl.T", "val.every", "val.batch_size"]
    non_negative = ["seed", "workers", "max_nonfinite_steps", "data.max_bad_images", "pt.weight_decay"]
    for section in ("pt", "supcon", "mpl"):
        for key in cfg[section]:
            if key.endswith("lr") or "batch" in key:
                positive.append(f"{section}.{key}")
            elif key.endswith("steps"):
                non_negative.append(f"{section}.{key}")
    for names, ok, what in ((positive, lambda v: v > 0, "positive"), (non_negative, lambda v: v >= 0, ">= 0")):
        for name in names:
            if not ok(_get(cfg, name)):
                raise UserError(f"config key '{name}' must be {what}, got {_get(cfg, name)}")
    if not 0.0 <= cfg["data"]["labeled_fraction"] <= 1.0:
        raise UserError(f"config key 'data.labeled_fraction' must be in [0, 1], got {cfg['data']['labeled_fraction']}")
    if not 0.0 < cfg["val"]["fraction"] < 1.0:
        raise UserError(f"config key 'val.fraction' must be in (0, 1), got {cfg['val']['fraction']}")
    if cfg["val"]["select"] == "best_val" and not cfg["val"]["enabled"]:
        raise UserError("config key 'val.select' is best_val but val.enabled is false: enable the validation set")
    per_video = cfg["data"]["frames_per_video"]
    if per_video is not None and not (isinstance(per_video, int) and not isinstance(per_video, bool) and per_video > 0):
        raise UserError(f"config key 'data.frames_per_video' must be a positive integer or null, got {per_video!r}")
    options = cfg["mpl_options"]
    for key, hi in (("uda_threshold", 1.0), ("h_baseline", 0.999999), ("ema", 0.999999)):
        if not 0 <= options[key] <= hi:
            bound = "1]" if hi == 1.0 else "1)"
            raise UserError(f"config key 'mpl_options.{key}' must be in [0, {bound}, got {options[key]}")
    if options["uda_weight"] < 0 or options["uda_warmup"] < 0:
        raise UserError("config keys 'mpl_options.uda_weight' and 'mpl_options.uda_warmup' must be >= 0")
    _check_aug(cfg["aug"], "aug")
    for role in AUG_ROLES:
        section = cfg["aug"][role] or {}
        unknown = sorted(set(section) - set(DEFAULTS["aug"]) - set(AUG_ROLES))
        if not isinstance(section, dict) or unknown or set(section) & set(AUG_ROLES):
            keys = ", ".join(k for k in DEFAULTS["aug"] if k not in AUG_ROLES)
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
        if prefix.rstrip(".") in _FREE_SECTIONS:
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
        free = parent in _FREE_SECTIONS or _is_role_section(parent)
        if not isinstance(node, dict) or (key not in node and not free):
            raise UserError(f"unknown config key '{name}'")
        if i == len(keys) - 1:
            if isinstance(node.get(key), dict) and not free:
                raise UserError(f"config key '{name}' is a section; set one of its keys")
            # run_name is a folder name: never YAML (off, 007 and yes would become False, 7 and True)
            node[key] = raw if name == "run_name" else (yaml.safe_load(raw) if raw != "" else None)
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
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
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


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (ignoring RESUME_FREE)."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        if name in RESUME_FREE:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


# ----------------------------------------------------------------------------------------------- command line
def config_parser(prog: str, description: str, example: str, default_config: str | None = "configs/demo.yaml",
                  resume: bool = True) -> argparse.ArgumentParser:
    """The common command line: --config FILE, shortcuts, and key=value overrides."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"examples:\n  {example}\n\nOverrides use dotted keys of the config (see configs/*.yaml), "
               "e.g. supcon.steps=100 data.balance=false.")
    parser.add_argument("--config", default=default_config,
                        help=f"YAML config (default: {default_config or 'configs/demo.yaml unless --test is given'})")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (same as device=...)")
    parser.add_argument("--seed", type=int, help="random seed (same as seed=...)")
    parser.add_argument("--out", help="folder for run folders (same as out_dir=...)")
    parser.add_argument("--run-name", help="run folder name (same as run_name=...; default: the config's name)")
    # evaluate.py accepts the training flags without using them: the .sh scripts pass them through
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the run folder from its latest checkpoint" if resume
                        else argparse.SUPPRESS)
    parser.add_argument("--allow-data-change", action="store_true",
                        help="with --resume: continue even if the data sets differ from the checkpoint's" if resume
                        else argparse.SUPPRESS)
    parser.add_argument("--overwrite", action="store_true",
                        help="the run folder holds a run: move it aside to <method>.old-<time> (nothing is "
                             "deleted) and train a new one there" if resume else argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def config_from_args(args: argparse.Namespace, config: str | None = None) -> dict:
    """The config of a parsed command line: --config (or `config`), the shortcuts, then the overrides."""
    overrides = list(args.overrides)
    for key, value in (("device", args.device), ("seed", args.seed), ("out_dir", args.out),
                       ("run_name", args.run_name)):
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(config or args.config, overrides)


def train_command(prog: str, doc: str, example: str, method: str, argv: list[str] | None) -> int:
    """A training script's main: parse the command line, build the config, then import the method's module
    (`method`, e.g. "methods.pt": torch, timm and torchvision take seconds to import, which --help and a
    config error need not wait for) and train."""
    import importlib
    args = config_parser(prog, doc, example).parse_args(argv)
    cfg = config_from_args(args)
    from engine.run import RunFinished, RunOptions
    try:
        importlib.import_module(method).train(cfg, RunOptions(args.resume, args.allow_data_change, args.overwrite))
    except RunFinished as done:
        print(done, file=sys.stderr)
    return 0
