"""A run's outputs: its folder, the release checkpoints it ends with (the authors' file names and
`model_state_dict` layout), and the loading of a detector from them for evaluate.py and predict.py."""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from engine.checkpoint import atomic_torch_save, load_checkpoint, load_weights
from engine.dist import is_main_process, unwrap
from utils import UserError, resolve_path

# The release files of each method, by role: what evaluate.py and predict.py load.
RELEASE = {
    "pt": {"weights": "pt.tar"},
    "supcon": {"encoder": "supcon_encoder.tar", "classifier": "supcon_classifier.tar"},
    "supconmpl": {"encoder": "mpl_supcon_encoder.tar", "classifier": "mpl_supcon_classifier.tar"},
    "mpl": {"weights": "mpl.tar"},   # vanilla MPL: the baseline's network
}


def run_folder(cfg: dict, method: str) -> Path:
    """<out_dir>/<run_name>/<method>: everything a run of `method` writes."""
    return resolve_path(cfg["out_dir"]) / str(cfg["run_name"]) / method


def release_paths(cfg: dict, method: str) -> dict[str, Path]:
    return {role: run_folder(cfg, method) / name for role, name in RELEASE[method].items()}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_release(path: Path, module: torch.nn.Module, cfg: dict, kind: str, step: int,
                 optimizer: torch.optim.Optimizer | None = None, **extra) -> None:
    """Write {'model_state_dict', ...} atomically, with what the weights are (kind, backbone, image size,
    input scale, step, config) and `extra` (the run id, the hash of a file it belongs with)."""
    if not is_main_process():
        return
    state = {
        "model_state_dict": {k: v.detach().cpu() for k, v in unwrap(module).state_dict().items()},
        "kind": kind, "backbone": cfg["backbone"], "img_size": cfg["img_size"],
        "input_scale": cfg["input_scale"], "step": step, "config": cfg, "metrics": {}, **extra,
    }
    if optimizer is not None:
        state["optimizer_state_dict"] = optimizer.state_dict()
    atomic_torch_save(state, path)


def verify_release(method: str, paths: dict[str, Path], run_dir: Path | None = None) -> dict:
    """Check that `paths` are the release files of one finished run, before anything is scored; returns what
    results.json records about them: {"files": {path: sha256}, "run_id"}.

    run_dir: the run folder, when its own files are evaluated: an unfinished run there is refused. Files of
    two runs (different run ids), or a classifier trained on another encoder than the one given, are
    refused. The authors' files carry neither, and pass."""
    if run_dir is not None and any((run_dir / "checkpoints").glob("ckpt-*.tar")) \
            and not (run_dir / "checkpoints" / "FINISHED").exists():
        raise UserError(f"{run_dir} holds an unfinished run, whose files may mix two runs: continue it with "
                        "--resume first (or name the weights files explicitly)")
    states = {role: load_checkpoint(path) for role, path in paths.items()}
    hashes = {role: sha256(path) for role, path in paths.items()}
    ids = {states[role].get("run_id") for role in paths} - {None}
    if len(ids) > 1:
        raise UserError(f"{' and '.join(str(p) for p in paths.values())} come from different runs "
                        f"({', '.join(sorted(ids))}): evaluate files of one run")
    belongs = states.get("classifier", {}).get("belongs_to")
    if belongs and "encoder" in paths and belongs.get("sha256") != hashes["encoder"]:
        raise UserError(f"classifier {paths['classifier']} was trained on another {belongs.get('file')} than "
                        f"{paths['encoder']}: evaluate files of one run")
    return {"files": {str(paths[role]): hashes[role] for role in paths}, "run_id": next(iter(ids), None)}


def build_model(method: str, backbone: str, paths: dict[str, Path], loaded: dict | None = None) -> torch.nn.Module:
    """The detector of `method` with its release checkpoints loaded (strict; a mismatch is a one-line
    error). `loaded`: the contents of the first file (weights or encoder), if already read."""
    from models import EncoderClassifier, LinearClassifier, SupConNet, build_baseline
    if "weights" in RELEASE[method]:  # pt, mpl: the baseline's network
        model = build_baseline(backbone, "none")
        load_weights(model, paths["weights"], loaded)
        return model
    loaded = loaded if loaded is not None else load_checkpoint(paths["encoder"])
    state = loaded["model_state_dict"]
    feat_dim = state["head.2.weight"].shape[0] if "head.2.weight" in state else 128
    net = SupConNet(backbone, "none", feat_dim)
    load_weights(net, paths["encoder"], loaded)
    cls = LinearClassifier(net.dim)
    load_weights(cls, paths["classifier"])
    return EncoderClassifier(net.encoder, cls)


def release_calibration(method: str, paths: dict[str, Path], loaded: dict | None = None) -> dict | None:
    """The `calibration` a run with a validation set stored in its final release file (the weights or the
    classifier): {"threshold", "rule", "temperature", ...} (engine/validate.py); None for files without."""
    last = "weights" if "weights" in RELEASE[method] else "classifier"
    state = loaded if last == "weights" and loaded is not None else load_checkpoint(paths[last])
    return state.get("calibration")


def checkpoint_settings(path: Path, args: argparse.Namespace, defaults: dict) -> tuple[dict, str, int, str]:
    """The checkpoint's contents and its backbone, image size and input scale: the command line first, then
    what our checkpoints record about their training (the authors' files record nothing), then `defaults`."""
    loaded = load_checkpoint(path)
    backbone = args.backbone or loaded.get("backbone") or defaults["backbone"]
    img_size = args.img_size or loaded.get("img_size") or defaults["img_size"]
    input_scale = args.input_scale or loaded.get("input_scale") or defaults["input_scale"]
    if img_size <= 0:
        raise UserError(f"--img-size must be positive, got {img_size}")
    return loaded, backbone, img_size, input_scale
