"""A run's outputs: its folder, the release checkpoints it ends with (the authors' file names and
`model_state_dict` layout), and the loading of a detector from them for evaluate.py and predict.py."""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
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
    "ddt": {"weights": "ddt.tar"},   # Deep Distribution Transfer: models/ddt.py
    "tar": {"weights": "tar.tar"},   # Tar's residual autoencoder: models/tar.py
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
    if method in ("ddt", "tar"):
        return _single_network(method, backbone, paths, loaded)
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


def _single_network(method: str, backbone: str, paths: dict[str, Path], loaded: dict | None) -> torch.nn.Module:
    """DDT's or Tar's detector with its release file loaded (their sizes from the file's config)."""
    loaded = loaded if loaded is not None else load_checkpoint(paths["weights"])
    if method == "ddt":
        from models.ddt import DDTDetector, DDTNet
        dim = loaded["model_state_dict"]["net.mu.weight"].shape[0] if "net.mu.weight" in loaded["model_state_dict"] \
            else 16
        model = DDTDetector(DDTNet(backbone, "none", dim))
    else:
        from models.tar import ResAE, TarDetector
        model = TarDetector(ResAE())
    load_weights(model, paths["weights"], loaded)
    return model


def release_calibration(method: str, paths: dict[str, Path], loaded: dict | None = None) -> dict | None:
    """The `calibration` a run with a validation set stored in its final release file (the weights or the
    classifier): {"threshold", "rule", "temperature", ...} (engine/validate.py); None for files without."""
    last = "weights" if "weights" in RELEASE[method] else "classifier"
    state = loaded if last == "weights" and loaded is not None else load_checkpoint(paths[last])
    calibration = state.get("calibration")
    if calibration is not None:
        check_calibration(calibration, paths[last])
    return calibration


def check_calibration(cal, path: Path) -> None:
    """A stored calibration is used for verdicts only if it is one engine/validate.py can write: a threshold in
    [0, 1], a known rule, a positive finite temperature (or none); anything else is a one-line UserError."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    problem = None
    if not isinstance(cal, dict):
        problem = f"is a {type(cal).__name__}, not a mapping"
    elif not (number(cal.get("threshold")) and 0 <= cal["threshold"] <= 1):
        problem = f"has threshold {cal.get('threshold')!r} (must be a P(fake) in [0, 1])"
    elif cal.get("rule") not in ("eer", "balanced"):
        problem = f"has rule {cal.get('rule')!r} (eer or balanced)"
    elif cal.get("temperature") not in (None, False, 0) and not (number(cal["temperature"]) and cal["temperature"] > 0):
        problem = f"has temperature {cal.get('temperature')!r} (must be a positive number, or none)"
    if problem:
        raise UserError(f"checkpoint {path}: its validation calibration {problem}: the file is damaged or not "
                        "written by this project; pass --threshold (predict.py) or use the run's own files")


def checkpoint_settings(path: Path, args: argparse.Namespace, defaults: dict) -> tuple[dict, str, int, str]:
    """The checkpoint's contents and its backbone, image size and input scale: the command line first, then
    what our checkpoints record about their training (the authors' files record nothing), then `defaults`."""
    loaded = load_checkpoint(path)
    backbone = args.backbone or loaded.get("backbone") or defaults["backbone"]
    img_size = args.img_size or loaded.get("img_size") or defaults["img_size"]
    input_scale = args.input_scale or loaded.get("input_scale") or defaults["input_scale"]
    where = "--img-size" if args.img_size else f"checkpoint {path}: its img_size"
    if isinstance(img_size, bool) or not isinstance(img_size, int) or not MIN_SIZE <= img_size <= MAX_SIZE:
        raise UserError(f"{where} must be a whole number of pixels in [{MIN_SIZE}, {MAX_SIZE}], got {img_size!r}"[:300])
    if not isinstance(backbone, str) or not backbone:
        raise UserError(f"checkpoint {path}: its backbone must be a model name, got {backbone!r}"[:300])
    if input_scale not in ("project", "seed", "unit"):
        raise UserError(f"checkpoint {path}: its input_scale must be project, seed or unit, got {input_scale!r}"[:300])
    trained = loaded.get("img_size")
    if args.img_size and isinstance(trained, int) and trained != args.img_size:
        print(f"warning: scoring at {args.img_size} px weights trained at {trained} px (--img-size; without it, "
              f"{trained} px)", file=sys.stderr)
    return loaded, backbone, img_size, input_scale


MIN_SIZE, MAX_SIZE = 8, 2048  # input sizes a detector may be scored at (a larger one is another project's file)


def read_results(folder: Path) -> tuple[dict | None, str | None]:
    """(<folder>/results.json, None), or (None, why it cannot be used as the results of the weights in `folder`):
    unreadable or truncated, no predictions.csv beside it, or a weights record that does not name exactly the
    release files there as they are now (other weights were scored, or the run was trained again since)."""
    import json
    path = folder / "results.json"
    if not path.is_file():
        return None, f"no {path}"
    try:
        results = json.loads(path.read_text())
        record = results["weights"]["files"]
        recorded = {Path(p).name: h for p, h in record.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, f"{path} is damaged (not the JSON evaluate.py writes)"
    method = next((m for m, files in RELEASE.items() if set(files.values()) == set(recorded)), None)
    if method is None:
        return None, f"{path} scored {', '.join(record)}, not the release files of a run in {folder}"
    present = {name: folder / name for name in RELEASE[method].values()}
    if any(not p.is_file() for p in present.values()) or \
            any(sha256(present[name]) != recorded[name] for name in recorded):
        return None, f"{path} scored other weights than the release files now in {folder}"
    try:
        with open(folder / "predictions.csv", encoding="utf-8", errors="surrogateescape") as f:
            if f.readline().strip() != "set,path,video,label,score":
                raise ValueError
    except (OSError, ValueError):
        return None, f"{folder / 'predictions.csv'} is missing or damaged"
    return results, None


def verify_results_record(folder: Path, results: dict) -> None:
    """For a results.json outside a run folder (evaluate.py with other weights): every weights file it names
    must still be what was scored (UserError otherwise)."""
    try:
        record = results["weights"]["files"]
        items = list(record.items())
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{folder / 'results.json'} has no weights record: not written by evaluate.py") from None
    for name, digest in items:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"{folder / 'results.json'} scored {path}, which is no longer there: cannot tell "
                            "which weights these results are of")
        if sha256(path) != digest:
            raise UserError(f"{folder / 'results.json'} scored another {path} than the file now there: "
                            "evaluate it again")
