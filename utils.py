"""The shared engine of the three training scripts and of evaluate.py.

Config (YAML + ``key=value`` overrides), one-line user errors, seeding, device and AMP set-up, run
folders, logging with progress bars, atomic self-describing checkpoints, and the metrics / results table.
Each ``train_*.py`` reads top to bottom and differs from the others mainly in its step function.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import io
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2, no traceback."""


def run_cli(main: Callable[[list[str] | None], int]) -> None:
    """Run an entry point; a UserError becomes `error: ...` on stderr and exit status 2."""
    try:
        code = main(None)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


# ----------------------------------------------------------------------------------------------- config
# Every key a config may set. Values are the project's defaults (the paper's settings where it gave them);
# configs/*.yaml override them and `key=value` arguments override the file.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",              # auto | cpu | cuda | cuda:N
    "out_dir": "runs",             # run folders go to <out_dir>/<run_name>/<method>
    "run_name": None,              # default: the config file's name
    "backbone": "resnet50",        # any timm model name (resnet50, resnet101, efficientnet_b4, ...)
    "pretrained": "imagenet",      # imagenet | none | path to a state-dict file
    "img_size": 64,
    "input_scale": "project",      # project: [0, 1] + backbone mean/std; seed: the reference code's x/255/255
    "amp": True,                   # mixed precision on CUDA (ignored on CPU)
    "amp_dtype": "auto",           # auto (bf16 where the GPU has it, else fp16 with a loss scaler) | bf16 | fp16
    "compile": False,              # torch.compile the networks (slow start, faster steps on GPUs)
    "sync_bn": False,              # multi-GPU: batch-norm statistics over the global batch (SyncBatchNorm)
    "workers": 4,                  # DataLoader worker processes
    "log_every": 50,               # steps between log lines
    "checkpoint_every": 200,       # steps between full (resumable) checkpoints
    "keep_checkpoints": 2,         # how many of them to keep
    "max_nonfinite_steps": 10,     # skipped non-finite updates tolerated before the run stops
    "aug": {
        "scale": [0.5, 1.0],       # RandomResizedCrop scale range
        "hflip": 0.5,
        "color_jitter": [0.4, 0.4, 0.4, 0.1],
        "color_jitter_p": 0.8,
        "grayscale_p": 0.2,
    },
    "data": {
        "demo": None,              # path: generate the embedded demo benchmark there when missing
        "balance": True,           # sample real and fake labeled images equally often
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
    "pt": {"steps": 2000, "batch_size": 512, "lr": 1e-4, "weight_decay": 0.0},
    "supcon": {
        "steps": 2000, "batch_size": 512, "lr": 1e-4, "temperature": 0.1, "feat_dim": 128,
        "classifier_steps": 500, "classifier_batch_size": 512, "classifier_lr": 1e-4,
    },
    "mpl": {
        "steps": 2000, "batch_labeled": 64, "batch_unlabeled": 448,
        "teacher_lr": 1e-4, "student_lr": 1e-4, "temperature": 0.1, "T": 1.0,
        "feedback": "new_minus_old",  # h = s_new - s_old (the authors' sign); or old_minus_new
        "teacher_encoder": None,      # default: <run>/supcon/supcon_encoder.tar
        "teacher_classifier": None,   # default: <run>/supcon/supcon_classifier.tar
        "student_pretrained": None,   # default: same as `pretrained`
        "finetune_steps": 500, "finetune_classifier_steps": 500, "finetune_lr": 1e-4,
    },
}

_FREE_SECTIONS = {"data.paths"}  # mappings whose keys the user chooses (dataset root names)
_CHOICES = {"input_scale": ("project", "seed"), "mpl.feedback": ("new_minus_old", "old_minus_new"),
            "amp_dtype": ("auto", "bf16", "fp16")}


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
            out[key] = _merge(base[key], value, name + ".")
        else:
            out[key] = value
    return out


def _set_dotted(cfg: dict, dotted: str, raw: str) -> None:
    node, keys = cfg, dotted.split(".")
    for i, key in enumerate(keys):
        name = ".".join(keys[: i + 1])
        free = ".".join(keys[:i]) in _FREE_SECTIONS
        if not isinstance(node, dict) or (key not in node and not free):
            raise UserError(f"unknown config key '{name}'")
        if i == len(keys) - 1:
            if isinstance(node.get(key), dict):
                raise UserError(f"config key '{name}' is a section; set one of its keys")
            node[key] = yaml.safe_load(raw) if raw != "" else None
        else:
            node = node[key]


def _check_types(cfg: dict, ref: dict, prefix: str = "") -> None:
    for key, default in ref.items():
        name, value = f"{prefix}{key}", cfg[key]
        if isinstance(default, dict):
            _check_types(value, default, name + ".")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"config key '{name}' must be true or false, got {value!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
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


def _check_values(cfg: dict) -> None:
    for name, allowed in _CHOICES.items():
        node = cfg
        for part in name.split("."):
            node = node[part]
        if node not in allowed:
            raise UserError(f"config key '{name}' must be one of {', '.join(allowed)}, got {node!r}")
    positive = ["img_size", "checkpoint_every", "keep_checkpoints"]
    non_negative = ["workers", "max_nonfinite_steps", "data.max_bad_images"]
    for section in ("pt", "supcon", "mpl"):
        for key, value in cfg[section].items():
            name = f"{section}.{key}"
            if key.endswith("lr") or "batch" in key:
                positive.append(name)
            elif key.endswith("steps"):
                non_negative.append(name)
    for names, ok, what in ((positive, lambda v: v > 0, "positive"), (non_negative, lambda v: v >= 0, ">= 0")):
        for name in names:
            node = cfg
            for part in name.split("."):
                node = node[part]
            if not ok(node):
                raise UserError(f"config key '{name}' must be {what}, got {node}")
    if not 0.0 <= cfg["data"]["labeled_fraction"] <= 1.0:
        raise UserError(f"config key 'data.labeled_fraction' must be in [0, 1], got {cfg['data']['labeled_fraction']}")


def load_config(path: str | None, overrides: Iterable[str] = ()) -> dict:
    """DEFAULTS <- YAML file <- `key=value` overrides; unknown keys and wrong types are UserErrors."""
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
        if key.strip() not in _RESUME_FREE | {"run_name", "out_dir"}:
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


def config_parser(prog: str, description: str, example: str) -> argparse.ArgumentParser:
    """The common command line: --config FILE, shortcuts, and key=value overrides."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"examples:\n  {example}\n\nOverrides use dotted keys of the config (see configs/*.yaml), "
               "e.g. supcon.steps=100 data.balance=false.")
    parser.add_argument("--config", default="configs/demo.yaml", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (same as device=...)")
    parser.add_argument("--seed", type=int, help="random seed (same as seed=...)")
    parser.add_argument("--out", help="folder for run folders (same as out_dir=...)")
    parser.add_argument("--run-name", help="run folder name (same as run_name=...; default: the config's name)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the run folder from its latest checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def config_from_args(args: argparse.Namespace) -> dict:
    overrides = list(args.overrides)
    for key, value in (("device", args.device), ("seed", args.seed), ("out_dir", args.out),
                       ("run_name", args.run_name)):
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(args.config, overrides)


def resolve_path(path: str | os.PathLike) -> Path:
    """Config paths are relative to the repository root (where the .sh scripts run), or absolute."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else Path.cwd() / p


# ----------------------------------------------------------------------------------------------- run set-up
def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def get_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for, but CUDA is not available on this machine")
    return device


def amp_dtype(device: torch.device, name: str = "auto") -> torch.dtype:
    """The mixed-precision type: bf16 where the GPU has it (no loss scaling needed), else fp16."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if name == "bf16" else torch.float16


def autocast(device: torch.device, enabled: bool, dtype: str = "auto"):
    """Mixed-precision autocast on CUDA (bf16, or fp16 where bf16 is missing: see Run.update's loss
    scaler); a no-op elsewhere (CPU runs stay fp32 and deterministic)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=amp_dtype(device, dtype))
    return contextlib.nullcontext()


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ----------------------------------------------------------------------------------------------- processes
# One code path for 1 or N processes: torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without it, these
# helpers are identities. Batch sizes in configs are global: each of N ranks trains on 1/N of every batch.
def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def setup_device(cfg: dict) -> torch.device:
    """This process's device; under torchrun also joins the process group (NCCL on GPUs, gloo on CPUs)."""
    device = get_device(cfg["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest convolutions
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return device


def distribute(module: torch.nn.Module, device: torch.device, cfg: dict) -> torch.nn.Module:
    """Move a trainable module to its device (channels_last), compile its backbone if asked, and wrap it
    in DistributedDataParallel when there are several processes. unwrap() gives the module back."""
    module = module.to(device).to(memory_format=torch.channels_last)
    if cfg["compile"]:
        # In place (Module.compile): parameter names, and so checkpoints, stay as they are.
        getattr(module, "encoder", module).compile()
    if world_size() == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    if cfg["sync_bn"] and device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if world_size() > 1:
        torch.distributed.barrier()


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's t along dim 0 (rank order), keeping the gradient to this rank's part:
    the backward sums the gradients of all ranks' losses, so with DDP's averaging a loss on gathered
    features trains exactly like the single-process loss on the whole batch. Equal sizes on every rank."""
    if world_size() == 1:
        return t
    if not t.requires_grad:  # labels, detached tensors
        return _all_gather(t)
    return _GatherWithGrad.apply(t)


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(world_size())]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)  # [world * n, ...]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: the sum over ranks of the gradient, this rank's rows (a reduce-scatter
    written with all_reduce, which every backend has)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        ctx.rows = t.shape[0]
        return _all_gather(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        start = torch.distributed.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) tensor over ranks: the same value on every rank."""
    if world_size() == 1:
        return t
    t = t.detach().clone()
    torch.distributed.all_reduce(t)
    return t / world_size()


def all_ranks_true(flag: torch.Tensor) -> torch.Tensor:
    """A bool tensor that is True only where it is True on every rank (no host sync)."""
    if world_size() == 1:
        return flag
    f = flag.to(torch.int32)
    torch.distributed.all_reduce(f, op=torch.distributed.ReduceOp.MIN)
    return f.bool()


class RunLogger:
    """Prints and appends to <run>/log.txt; writes one JSON line per logged step to <run>/train_log.jsonl."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.main = is_main_process()
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.start = time.time()
        self.writer = None

    def info(self, msg: str) -> None:
        if not self.main:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        try:
            from tqdm import tqdm
            tqdm.write(line, file=sys.stderr)
        except ImportError:  # pragma: no cover
            print(line, file=sys.stderr)
        with open(self.run_dir / "log.txt", "a") as f:
            f.write(line + "\n")

    def scalars(self, stage: str, step: int, values: dict[str, float]) -> None:
        """One JSON line in train_log.jsonl and TensorBoard scalars `<stage>/<name>` (events in <run>/tb)."""
        if not self.main:
            return
        row = {"stage": stage, "step": step, "time": round(time.time() - self.start, 3), **values}
        with open(self.run_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        writer = self._tensorboard()
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(f"{stage}/{key}", value, step)

    def _tensorboard(self):
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: the JSON-lines log still has everything
                self.writer = False
                return None
            self.writer = SummaryWriter(str(self.run_dir / "tb"), flush_secs=10)
        return self.writer or None

    def close(self) -> None:
        if self.writer:
            self.writer.close()
            self.writer = None


def check_batch(n_images: int, batch_size: int, key: str, what: str) -> None:
    """Batches are drawn without repeats within a pass: a batch larger than the data set is impossible."""
    if batch_size > n_images:
        raise UserError(f"config key '{key}' = {batch_size} is larger than the {what} set ({n_images} images)")


def prepare_run(cfg: dict, method: str) -> tuple[Path, RunLogger]:
    """Create <out_dir>/<run_name>/<method> and a logger writing there (Run.restore saves the config)."""
    run_dir = run_folder(cfg, method)
    return run_dir, RunLogger(run_dir)


def run_folder(cfg: dict, method: str) -> Path:
    return resolve_path(cfg["out_dir"]) / str(cfg["run_name"]) / method


class TrainingStopped(UserError):
    """The run stopped on purpose (too many non-finite losses or unreadable images); one line, exit 2."""


class Run:
    """Where a training run stands, and everything needed to continue it after a crash.

    Scripts register every module and optimizer up front, then call `stage(i, ...)` for each of their
    stages in order. Every `checkpoint_every` steps and at the end of each stage, a full checkpoint
    (modules, optimizers, RNG states of Python/NumPy/torch, stage and step; the data position is the step,
    since batches are a pure function of it) is written atomically to <run>/checkpoints/, keeping the last
    `keep_checkpoints`. With resume=True the newest checkpoint is loaded and finished steps are skipped.
    SIGINT/SIGTERM finish the current step, save a checkpoint and exit.
    """

    def __init__(self, run_dir: Path, cfg: dict, logger: RunLogger, resume: bool = False):
        self.run_dir, self.cfg, self.logger = run_dir, cfg, logger
        self.ckpt_dir = run_dir / "checkpoints"
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.resume_requested = resume
        self.start_stage, self.start_step = 0, 0
        self.nonfinite = 0
        self.pending_nonfinite: dict[str, torch.Tensor] = {}  # updates skipped on the device, not yet reported
        self.scalers: dict[torch.optim.Optimizer, Any] = {}
        self.scaler_states: dict[str, dict] = {}
        self.bad_images: set[str] = set()
        self.signal: int | None = None

    def register(self, **objects: torch.nn.Module | torch.optim.Optimizer) -> None:
        for name, obj in objects.items():
            (self.optimizers if isinstance(obj, torch.optim.Optimizer) else self.modules)[name] = obj

    # -- checkpoints
    def checkpoints(self) -> list[Path]:
        return sorted(self.ckpt_dir.glob("ckpt-*.tar")) if self.ckpt_dir.is_dir() else []

    def save(self, stage: int, step: int) -> Path | None:
        if not is_main_process():
            return None
        state = {
            "stage": stage, "step": step, "config": self.cfg,
            "modules": {k: unwrap(m).state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "rng": _rng_state(), "nonfinite": self.nonfinite, "bad_images": sorted(self.bad_images),
            "scalers": {k: self.scalers[o].state_dict() for k, o in self.optimizers.items()
                        if self.scalers.get(o) is not None},
        }
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"ckpt-{stage:02d}-{step:08d}.tar"
        atomic_torch_save(state, path)
        for old in self.checkpoints()[: -self.cfg["keep_checkpoints"]]:
            old.unlink(missing_ok=True)
        return path

    def restore(self) -> None:
        """Continue from the newest checkpoint (resume=True), else start a new run in the folder; then save
        the resolved config beside the run's outputs."""
        self._restore()
        if self.logger.main:
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))

    def _restore(self) -> None:
        found = self.checkpoints()
        finished = self.ckpt_dir / "FINISHED"
        if not self.resume_requested:
            if found and not finished.exists():
                raise UserError(f"{self.run_dir} holds an unfinished run (latest checkpoint {found[-1].name}): "
                                "pass --resume to continue it, --run-name NAME to start another, or delete "
                                f"{self.ckpt_dir} to start over")
            barrier()  # every rank has looked before rank 0 deletes anything
            if found:
                self.logger.info(f"starting a new run in {self.run_dir}: the finished run's checkpoints are replaced")
                for path in found:
                    if is_main_process():
                        path.unlink(missing_ok=True)
            if is_main_process():
                finished.unlink(missing_ok=True)
            return
        if not found:
            self.logger.info(f"--resume: no checkpoint in {self.ckpt_dir}; starting from the beginning")
            return
        path = found[-1]
        state = load_checkpoint(path, key="modules")
        changed = _config_changes(state.get("config", {}), self.cfg)
        if changed:
            raise UserError(f"--resume: the config differs from the one checkpoint {path} was written with "
                            f"({', '.join(changed[:5])}); resume with the same settings or start a new "
                            "run with --run-name")
        for name, module in self.modules.items():
            if name not in state["modules"]:
                raise UserError(f"checkpoint {path} has no state for '{name}' (written by another script?)")
            unwrap(module).load_state_dict(state["modules"][name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        _set_rng_state(state["rng"])
        self.start_stage, self.start_step = state["stage"], state["step"]
        self.nonfinite, self.bad_images = state.get("nonfinite", 0), set(state.get("bad_images", []))
        self.scaler_states = state.get("scalers", {})
        self.logger.info(f"resuming from {path} (stage {self.start_stage}, step {self.start_step})")

    def finish(self) -> None:
        """Mark the run complete: a later run without --resume may then start over in this folder."""
        if is_main_process():
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            (self.ckpt_dir / "FINISHED").touch()
        self.logger.close()

    def start_of(self, stage: int) -> int:
        """The step stage `stage` starts at: 0, its checkpointed step, or past its end if it is finished."""
        if stage < self.start_stage:
            return 1 << 40  # finished
        return self.start_step if stage == self.start_stage else 0

    # -- the loop
    def stage(self, index: int, name: str, steps: int, step_fn: Callable[[int], dict[str, torch.Tensor]]) -> None:
        """Run steps [start_of(index), steps) of a stage, with progress bar, logging and checkpoints."""
        from tqdm import tqdm

        start = min(self.start_of(index), steps)
        if start >= steps and steps > 0:
            return
        every, log_every = self.cfg["checkpoint_every"], self.cfg["log_every"]
        # Not a terminal (CI, nohup, a log file): no bar, only the periodic log lines.
        bar = tqdm(range(start, steps), desc=name, initial=start, total=steps, dynamic_ncols=True,
                   disable=not self.logger.main or steps == 0 or not sys.stderr.isatty(), mininterval=1.0,
                   file=sys.stderr)
        with _signals_to(self):
            clock, since, images = time.time(), start, 0
            for step in bar:
                out = step_fn(step)
                images += int(out.pop("images", 0)) * world_size()  # every rank trains on its part
                done = step + 1
                if done % log_every == 0 or done == steps:
                    self.check_nonfinite(done)
                    values = {k: float(v) for k, v in out.items()}  # host sync only when logging
                    elapsed = max(time.time() - clock, 1e-9)
                    rates = {"steps_per_s": (done - since) / elapsed, "images_per_s": images / elapsed}
                    lrs = {f"lr_{k}": o.param_groups[0]["lr"] for k, o in self.optimizers.items()}
                    clock, since, images = time.time(), done, 0
                    self.logger.scalars(name, done, {**values, **rates, **lrs})
                    bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
                    self.logger.info(f"{name} step {done}/{steps} " +
                                     " ".join(f"{k}={v:.4f}" for k, v in values.items()) +
                                     f" ({rates['images_per_s']:.0f} img/s)")
                if done % every == 0 or done == steps or self.signal is not None:
                    self.check_nonfinite(done)
                    self.save(index, done)
                if self.signal is not None:
                    raise SystemExit(self._stopped_by_signal(name, done))
        if steps == 0:
            self.save(index, 0)

    def _stopped_by_signal(self, name: str, step: int) -> int:
        self.logger.info(f"received signal {self.signal}: checkpoint saved at {name} step {step}; "
                         "continue with --resume")
        return 128 + int(self.signal)

    # -- faults
    def update(self, opt: torch.optim.Optimizer, loss: torch.Tensor, name: str, step: int) -> bool:
        """backward + optimizer step, unless the loss is non-finite (on any rank): then the update is
        skipped, logged, and the run stops after `max_nonfinite_steps` such losses (the last checkpoint
        stays good).

        With a fused optimizer (make_optimizer's) the skip happens on the device, through the optimizer's
        found_inf flag as under a loss scaler, with no host sync: skipped updates are counted on the device
        and reported when the loop next logs or saves (check_nonfinite). Other optimizers check at once.
        fp16 autocast: the loss is scaled by a per-optimizer GradScaler (which skips overflows itself).
        Returns False when the update is known at once to be skipped (host check), else True.
        """
        opt.zero_grad(set_to_none=True)
        finite = all_ranks_true(torch.isfinite(loss.detach()))
        scaler = self._scaler(opt)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        elif opt.defaults.get("fused"):
            loss.backward()
            opt.found_inf = (~finite).float()
            try:
                opt.step()
            finally:
                del opt.found_inf
        else:
            return self._host_update(opt, loss, bool(finite), name, step)
        count = self.pending_nonfinite.get(name)
        skipped = (~finite).to(torch.int64)
        self.pending_nonfinite[name] = skipped if count is None else count + skipped
        return True

    def _host_update(self, opt: torch.optim.Optimizer, loss: torch.Tensor, finite: bool, name: str, step: int) -> bool:
        if not finite:
            self.nonfinite += 1
            self.logger.info(f"non-finite {name} ({float(loss.detach())}) at step {step + 1}: update skipped "
                             f"({self.nonfinite}/{self.cfg['max_nonfinite_steps']})")
            self._stop_if_too_many(f"{name} at step {step + 1}")
            return False
        loss.backward()
        opt.step()
        return True

    def check_nonfinite(self, step: int) -> None:
        """Report the updates skipped on the device since the last check (one host sync)."""
        pending, self.pending_nonfinite = self.pending_nonfinite, {}
        for name, count in pending.items():
            n = int(count)
            if n:
                self.nonfinite += n
                self.logger.info(f"non-finite {name}: {n} update(s) skipped up to step {step} "
                                 f"({self.nonfinite}/{self.cfg['max_nonfinite_steps']})")
                self._stop_if_too_many(f"{name} up to step {step}")

    def _stop_if_too_many(self, last: str) -> None:
        if self.nonfinite > self.cfg["max_nonfinite_steps"]:
            found = self.checkpoints()
            raise TrainingStopped(f"stopping: {self.nonfinite} non-finite losses (last: {last}); "
                                  f"last good checkpoint: {found[-1] if found else 'none'}")

    def _scaler(self, opt: torch.optim.Optimizer):
        """A GradScaler for fp16 autocast on CUDA (one per optimizer), else None."""
        if opt in self.scalers:
            return self.scalers[opt]
        param = next((p for g in opt.param_groups for p in g["params"]), None)
        device = param.device if param is not None else torch.device("cpu")
        fp16 = self.cfg["amp"] and device.type == "cuda" and amp_dtype(device, self.cfg["amp_dtype"]) == torch.float16
        scaler = torch.amp.GradScaler("cuda") if fp16 else None
        names = [k for k, o in self.optimizers.items() if o is opt]
        if scaler is not None and names and names[0] in self.scaler_states:
            scaler.load_state_dict(self.scaler_states[names[0]])  # resumed run: the scale it had reached
        self.scalers[opt] = scaler
        return scaler

    def batch(self, batches: Iterator) -> tuple:
        """The next batch without its list of unreadable files; those are counted and listed."""
        *tensors, bad = next(batches)
        new = {p for item in bad for p in item.split("\n") if p} - self.bad_images
        if new:
            self.bad_images |= new
            if self.logger.main:
                with open(self.run_dir / "bad_images.txt", "a") as f:
                    f.writelines(p + "\n" for p in sorted(new))
            self.logger.info(f"skipped {len(new)} unreadable image(s), {len(self.bad_images)} so far "
                             f"(listed in {self.run_dir / 'bad_images.txt'}), e.g. {sorted(new)[0]}")
            if len(self.bad_images) > self.cfg["data"]["max_bad_images"]:
                raise TrainingStopped(f"stopping: {len(self.bad_images)} unreadable images, more than "
                                      f"data.max_bad_images={self.cfg['data']['max_bad_images']}; "
                                      f"see {self.run_dir / 'bad_images.txt'}")
        return tuple(tensors)


# Settings that may change between a run and its resumption without changing its result.
_RESUME_FREE = {"device", "workers", "log_every", "checkpoint_every", "keep_checkpoints", "max_nonfinite_steps",
                "data.max_bad_images", "amp", "amp_dtype", "compile"}


def _config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (ignoring _RESUME_FREE)."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        if name in _RESUME_FREE:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_changes(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


@contextlib.contextmanager
def _signals_to(run: Run):
    """SIGINT/SIGTERM set run.signal (the loop saves and exits after the current step)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from there
        yield
        return

    def handler(signum, _frame):
        run.signal = signum

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------- checkpoints
def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: ranks may write at once
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_csv(path: Path, header: list[str], rows: Iterable[Iterable]) -> None:
    """A CSV file written whole, then renamed into place."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def save_checkpoint(path: Path, module: torch.nn.Module, cfg: dict, kind: str, step: int,
                    optimizer: torch.optim.Optimizer | None = None, metrics: dict | None = None) -> None:
    """Write {'model_state_dict', ...} atomically: a crash mid-write leaves the previous file intact."""
    if not is_main_process():
        return
    state = {
        "model_state_dict": {k: v.detach().cpu() for k, v in unwrap(module).state_dict().items()},
        "kind": kind, "backbone": cfg["backbone"], "img_size": cfg["img_size"],
        "input_scale": cfg["input_scale"], "step": step, "config": cfg, "metrics": metrics or {},
    }
    if optimizer is not None:
        state["optimizer_state_dict"] = optimizer.state_dict()
    atomic_torch_save(state, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: ranks may write at once
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, key: str = "model_state_dict") -> dict:
    """Load a checkpoint (ours or the authors' .tar) safely; returns the whole dict with 'model_state_dict'."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or holds objects other than tensors
        raise UserError(f"cannot read checkpoint {p}: {str(err).splitlines()[0][:200]}") from None
    if isinstance(state, dict) and key == "model_state_dict" and key not in state and state and all(
            isinstance(v, torch.Tensor) for v in state.values()):
        state = {key: state}  # a bare state dict
    if not isinstance(state, dict) or key not in state:
        raise UserError(f"checkpoint {p} has no '{key}'")
    if key == "model_state_dict":
        # Checkpoints saved from nn.DataParallel/DDP prefix every key with 'module.'.
        state[key] = {k.removeprefix("module."): v for k, v in state[key].items()}
    return state


def load_weights(module: torch.nn.Module, path: str | os.PathLike, state: dict | None = None) -> dict:
    """Load a checkpoint's weights into module (strict); a mismatch is one UserError line naming the file.
    `state`: the file's contents if the caller has already loaded them (load_checkpoint)."""
    state = state if state is not None else load_checkpoint(path)
    incoming, own = state["model_state_dict"], unwrap(module).state_dict()
    missing = [k for k in own if k not in incoming]
    unexpected = [k for k in incoming if k not in own]
    wrong = [k for k in own if k in incoming and tuple(incoming[k].shape) != tuple(own[k].shape)]
    problems = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("keys of another shape", wrong)) if keys]
    if problems:
        raise UserError(f"checkpoint {path} does not fit {type(unwrap(module)).__name__} (another architecture "
                        f"or head size?): " + "; ".join(problems))
    unwrap(module).load_state_dict(incoming)
    return state


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if hasattr(module, "module") else module


# ----------------------------------------------------------------------------------------------- metrics
def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
    """ACC at `threshold`, AUC, F1 (fake = positive), EER and AP from P(fake) scores; fractions in [0, 1].

    AUC, EER and AP need both classes: they are None for a one-class set.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    pred = (scores >= threshold).astype(int)
    out: dict[str, float | None] = {
        "acc": float((pred == labels).mean()) if len(labels) else None,
        "f1": float(f1_score(labels, pred, zero_division=0)) if len(labels) else None,
        "auc": None, "eer": None, "ap": None,
    }
    if len(np.unique(labels)) == 2:
        out["auc"] = float(roc_auc_score(labels, scores))
        out["ap"] = float(average_precision_score(labels, scores))
        fpr, tpr, _ = roc_curve(labels, scores)
        fnr = 1 - tpr
        i = int(np.nanargmin(np.abs(fnr - fpr)))
        # Interpolate between the two ROC points around the crossing of FPR and FNR.
        j = min(i + 1, len(fpr) - 1)
        d_i, d_j = fpr[i] - fnr[i], fpr[j] - fnr[j]
        if i != j and d_i * d_j < 0:
            t = d_i / (d_i - d_j)
            out["eer"] = float(fpr[i] + t * (fpr[j] - fpr[i]))
        else:
            out["eer"] = float((fpr[i] + fnr[i]) / 2)
    return out


def format_table(results: dict[str, dict], title: str) -> str:
    """The paper's table shape: one row per test set (known/unknown), metrics in percent; video-level
    ACC/AUC beside them where the test sets have video ids."""
    cols = ("acc", "auc", "f1", "eer", "ap")
    videos = any("video" in m for m in results.values())
    pct = lambda v: "-" if v is None else format(100 * v, ".2f")  # noqa: E731
    name_w = max([len("test set")] + [len(n) for n in results]) + 2
    head = f"{'test set':<{name_w}}{'split':<9}" + "".join(f"{c.upper():>8}" for c in cols) + f"{'N':>8}"
    if videos:
        head += f"{'vACC':>8}{'vAUC':>8}{'videos':>8}"
    lines = [title, head, "-" * len(head)]
    for name, m in results.items():
        row = f"{name:<{name_w}}{str(m.get('split') or '-'):<9}" + "".join(f"{pct(m.get(c)):>8}" for c in cols)
        row += f"{m.get('n', 0):>8}"
        if videos and "video" in m:
            v = m["video"]
            row += f"{pct(v.get('acc')):>8}{pct(v.get('auc')):>8}{v.get('n', 0):>8}"
        lines.append(row)
    if videos:
        lines.append("vACC/vAUC: video level, frame scores averaged per video (evaluate.py --video-rule)")
    return "\n".join(lines)


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, as in the paper, with the fused implementation (one kernel for all parameters, on CUDA and
    CPU), which also lets Run.update skip a non-finite update without a host sync."""
    if lr <= 0:
        raise UserError(f"learning rate must be positive, got {lr}")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
