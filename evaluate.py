"""Evaluate a trained model (baseline, SupCon or SupCon-MPL) on test sets: one full deterministic pass per
set; score = softmax P(fake); ACC (threshold 0.5), AUC, F1 (fake positive), EER, AP; known/unknown rows.

Weights default to the run folder of the config (<out_dir>/<run_name>/<method>/); the authors' released
.tar files work too (with --input-scale seed, the input scaling they were trained with).
Writes a JSON of metrics per test set and a per-image predictions CSV (set,path,video,label,score), prints the table.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from evaluation import robustness
from engine.cli import config_from_args, config_parser
from datasets.loaders import eval_loader
from datasets.perturb import parse_perturbations
from datasets.protocols import missing_sets, prepare_data, test_sets
from engine.amp import autocast
from engine.dist import get_device
from engine.release import (RELEASE, build_model, checkpoint_settings, release_calibration, release_paths, run_folder,
                            verify_release)
from engine.run import RunLock
from evaluation.metrics import (binary_metrics, deepfakebench_metrics, format_table, threshold_metrics,
                                video_metrics)
from utils import UserError, atomic_write_csv, atomic_write_text, parse_yaml, resolve_path, run_cli


@torch.no_grad()
def score(model: torch.nn.Module, loader, device: torch.device, amp: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """P(fake) for every image of the loader, in order, and whether the image could be read."""
    from engine.progress import Progress
    model.eval()
    scores, readable = [], []
    with Progress(f"evaluate: {desc}", len(loader.dataset)) as progress:
        for x, ok in loader:
            with autocast(device, amp):
                logits = model(x.to(device, non_blocking=True))
            scores.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
            readable.append(ok)
            progress.update(len(ok))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return torch.cat(scores).numpy(), torch.cat(readable).numpy().astype(bool)


def evaluate(model: torch.nn.Module, sets: dict, img_size: int, backbone: str, input_scale: str,
             device: torch.device, batch_size: int = 256, workers: int = 0, amp: bool = True,
             video_rule: str = "mean", perturb=None, calibration: dict | None = None):
    """Metrics per test set, the per-image predictions [(set, path, video, label, score)], the unreadable files
    (skipped: not scored, not counted in n) and {name: (split, labels, scores)} curves. Every distinct
    image is scored once, however many sets (pools) it belongs to. `perturb`: a test-time degradation
    (datasets/perturb.py) applied to every image first. `calibration`: the release file's validation
    threshold (engine/validate.py): each set gains the decisions at it (`val_threshold`)."""
    model.to(device)
    unique = list({s.path: s for _, samples in sets.values() for s in samples}.values())
    loader = eval_loader(unique, img_size, backbone, input_scale, batch_size, workers, perturb)
    scores, ok = score(model, loader, device, amp, "test images" + (f" ({perturb.name})" if perturb else ""))
    broken = ok & ~np.isfinite(scores)
    if broken.any():  # never a metric from them: NaN sorts as the highest score (a perfect AUC from nothing)
        first = unique[int(np.flatnonzero(broken)[0])].path
        raise UserError(f"the model gave {int(broken.sum())} of {int(ok.sum())} test images a non-finite score "
                        f"(NaN or inf), e.g. {first}: no metric is computed from such weights (diverged training, "
                        "or overflow: try amp=false)")
    score_of = {s.path: float(p) for s, p, good in zip(unique, scores, ok) if good}
    results, predictions, curves = {}, [], {}
    for name, (split, samples) in sets.items():
        kept = [s for s in samples if s.path in score_of]
        labels = np.array([s.label for s in kept])
        set_scores = np.array([score_of[s.path] for s in kept])
        results[name] = {**binary_metrics(labels, set_scores), "n": int(len(kept)), "split": split}
        curves[name] = (split, labels, set_scores)
        if calibration:
            results[name]["val_threshold"] = threshold_metrics(labels, set_scores, calibration)
        if any(s.video for s in kept):
            results[name]["video"] = video_metrics(kept, set_scores, video_rule)
        if kept and all(s.source.startswith("deepfakebench/") for s in kept):
            # a DeepfakeBench test set: also its own definitions, beside which its published numbers sit
            results[name]["deepfakebench"] = deepfakebench_metrics([s.path for s in kept], labels, set_scores)
        predictions += [(name, s.path, s.video or "", s.label, score_of[s.path]) for s in kept]
    bad = sorted(s.path for s in unique if s.path not in score_of)
    return results, predictions, bad, curves


@torch.no_grad()
def encoder_features(encoder: torch.nn.Module, samples: list, img_size: int, backbone: str, input_scale: str,
                     device: torch.device, limit: int = 2000, seed: int = 0) -> tuple[np.ndarray, list]:
    """Encoder features [N, F] of up to `limit` distinct test images (seeded choice) and their samples."""
    unique = list({s.path: s for s in samples}.values())
    if len(unique) > limit:
        keep = np.random.default_rng(seed).choice(len(unique), limit, replace=False)
        unique = [unique[i] for i in sorted(keep)]
    encoder.eval()
    feats, kept = [], []
    loader = eval_loader(unique, img_size, backbone, input_scale, 256, 0)
    offset = 0
    for x, ok in loader:
        f = encoder(x.to(device)).float().cpu()
        feats.append(f[ok])
        kept += [s for s, good in zip(unique[offset:offset + len(ok)], ok.tolist()) if good]
        offset += len(ok)
    return torch.cat(feats).numpy(), kept


def write_plots(method: str, model: torch.nn.Module, sets: dict, curves: dict, run_dir: Path | None, out_dir: Path,
                img_size: int, backbone: str, input_scale: str, device: torch.device, seed: int,
                projection: str = "pca", calibration: dict | None = None) -> list[Path]:
    """roc.png, training_curves.png (when the weights are `run_dir`'s own and its log is there), for SupCon
    models embedding.png (`projection`: pca or tsne), and for weights with a validation calibration
    reliability.png."""
    from evaluation import plots
    names = {"pt": "baseline", "supcon": "SupCon teacher", "supconmpl": "SupCon-MPL student", "mpl": "MPL student",
             "ddt": "DDT", "tar": "Tar"}
    written = [plots.roc_plot(curves, out_dir / "roc.png", f"ROC — {names[method]}"),
               plots.training_curves(run_dir / "train_log.jsonl", out_dir / "training_curves.png",
                                     f"training — {names[method]}", method) if run_dir else None]
    if calibration:
        written.append(plots.reliability_plot(curves, out_dir / "reliability.png", f"reliability — {names[method]}",
                                              calibration.get("temperature")))
    if "encoder" in RELEASE[method]:
        samples = [s for _, ss in sets.values() for s in ss]
        feats, kept = encoder_features(model.encoder, samples, img_size, backbone, input_scale, device, seed=seed)
        written.append(plots.embedding_plot(feats, np.array([s.label for s in kept]), [s.domain for s in kept],
                                            out_dir / "embedding.png",
                                            f"encoder features ({'t-SNE' if projection == 'tsne' else 'PCA'}) — "
                                            f"{names[method]}, test images", projection))
    return [p for p in written if p is not None]


def write_outputs(results: dict, predictions: list, json_path: Path, csv_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(results, indent=2, allow_nan=False) + "\n")
    atomic_write_csv(csv_path, ["set", "path", "video", "label", "score"],
                     ((name, p, video, lab, f"{sc:.6f}") for name, p, video, lab, sc in predictions))


def parse_args(argv):
    p = config_parser(
        "evaluate.py", __doc__,
        "python evaluate.py --method supconmpl --config configs/demo.yaml\n"
        "  python evaluate.py --method pt --weights W.tar --test folder:DIR --img-size 64 --json out.json\n"
        "  python evaluate.py --method supcon --encoder weights/supcon_encoder.tar "
        "--classifier weights/supcon_classifier.tar --input-scale seed --test folder:DIR",
        default_config=None, resume=False)
    p.add_argument("--method", required=True, choices=sorted(RELEASE), help="which kind of model")
    p.add_argument("--weights", help="baseline checkpoint (pt)")
    p.add_argument("--encoder", help="SupCon network checkpoint (supcon, supconmpl)")
    p.add_argument("--classifier", help="linear classifier checkpoint (supcon, supconmpl)")
    p.add_argument("--test", action="append", default=[], metavar="folder:DIR",
                   help="test set (repeatable); replaces the config's test sets")
    p.add_argument("--backbone", help="architecture (default: from the checkpoint, else the config, else resnet50)")
    p.add_argument("--img-size", type=int, help="input size (default: from the checkpoint or config)")
    p.add_argument("--input-scale", choices=("project", "seed", "unit"),
                   help="project: [0,1] + mean/std (default); seed: the reference code's x/255/255")
    p.add_argument("--json", help="metrics JSON (default: <run folder>/results.json)")
    p.add_argument("--csv", "--predictions", dest="predictions",
                   help="per-image CSV (default: <run folder>/predictions.csv)")
    p.add_argument("--video-rule", choices=("mean", "max"), default="mean",
                   help="how frame scores become a video score: mean (default) or max of P(fake)")
    p.add_argument("--batch-size", type=int, default=256, help="test images per model call")
    p.add_argument("--no-plots", action="store_true", help="skip roc.png / training_curves.png / embedding.png")
    p.add_argument("--embedding", choices=("pca", "tsne"), default="pca",
                   help="2-D projection of the encoder features in embedding.png (SupCon models): pca (default) or "
                        "tsne (scikit-learn; up to 2,000 test images, slower)")
    p.add_argument("--perturb", action="append", default=[], metavar="KIND:LEVELS",
                   help="robustness sweep (repeatable): re-score every test set with jpeg:Q,.. blur:SIGMA,.. "
                        "noise:STD,.. or resize:SCALE,.. applied to every image; writes robustness.json/.md/.png "
                        "beside the metrics JSON (e.g. --perturb jpeg:90,70,50,30 --perturb blur:1,2,3)")
    p.add_argument("--cam", type=int, default=0, metavar="N",
                   help="Grad-CAM heat maps of the N most confident right and N most confident wrong decisions on "
                        "every test set's fakes, and on the real images once: <out>/cam/<set>/*.png, "
                        "cam/real_images_every_set/*.png and cam/contact_sheet.png (default: 0, none)")
    args = p.parse_args(argv)
    args.perturb = parse_perturbations(args.perturb)
    if args.cam < 0:
        raise UserError(f"--cam must be >= 0, got {args.cam}")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    return args


def weight_paths(args: argparse.Namespace, cfg: dict) -> dict[str, Path]:
    """The checkpoint files to evaluate: --weights / --encoder / --classifier, else the run folder's."""
    paths = release_paths(cfg, args.method)
    if "weights" in paths:  # pt, mpl
        return {"weights": resolve_path(args.weights) if args.weights else paths["weights"]}
    if args.weights:
        raise UserError("--weights is for --method pt or mpl; use --encoder and --classifier")
    return {"encoder": resolve_path(args.encoder) if args.encoder else paths["encoder"],
            "classifier": resolve_path(args.classifier) if args.classifier else paths["classifier"]}


def check_run_exists(args: argparse.Namespace, cfg: dict) -> None:
    """The run folder these arguments name must hold a run; if it does not but runs of the same config with
    other settings do, the error names them and how they differ (train and evaluate with the same arguments)."""
    folder = run_folder(cfg, args.method)
    if folder.is_dir() and any(folder.glob("*.tar")):
        return
    from engine.config import config_changes
    from methods import trained_config
    base = Path(args.config).stem if args.config else str(cfg["run_name"]).split("-")[0]
    found = []
    for other in sorted(resolve_path(cfg["out_dir"]).glob(f"{base}*/{args.method}")):
        saved = other / "config.yaml"
        if other != folder and saved.is_file() and any(other.glob("*.tar")):
            changed = config_changes(parse_yaml(saved.read_text(), str(saved)) or {}, trained_config(args.method, cfg))
            settings = [c.split(" -> ")[0].replace(": ", "=", 1) for c in changed if not c.startswith("run_name")]
            found.append(f"{other} ({', '.join(settings[:3]) or 'the same settings'})")
    if found:
        raise UserError(f"no run in {folder} (these arguments name it); runs of the same config with other settings: "
                        f"{'; '.join(found[:3])}: evaluate with the arguments it was trained with, or --run-name")


def run_of(method: str, paths: dict[str, Path]) -> Path | None:
    """The run folder whose release files `paths` are (all in one folder that holds checkpoints/, under the
    release names of `method`), else None (the authors' files, a copy elsewhere)."""
    folders = {p.resolve().parent for p in paths.values()}
    folder = next(iter(folders))
    named = all(p.name == RELEASE[method][role] for role, p in paths.items())
    return folder if len(folders) == 1 and named and (folder / "checkpoints").is_dir() else None


def run_folder_holding(path: Path) -> Path | None:
    """The run folder `path` would be written into (one holding checkpoints/ or release files), else None."""
    folder = path.resolve().parent
    names = {name for files in RELEASE.values() for name in files.values()}
    if (folder / "checkpoints").is_dir() or any((folder / n).exists() for n in names):
        return folder
    return None


def output_paths(args: argparse.Namespace, cfg: dict, own_run: Path | None, paths: dict[str, Path],
                 weights: dict) -> tuple[Path, Path]:
    """Where results.json and predictions.csv go: the run folder whose own weights are scored; for other
    weights (the authors', a copy) <out_dir>/evaluations/<method>-<sha256[:8]>/. Never into a run folder of
    other weights: a run's results describe its own weights only (reproduce and report.py rely on it)."""
    if own_run is not None:
        default = own_run
    else:
        digest = next(iter(weights["files"].values()))[:8]
        default = resolve_path(cfg["out_dir"]) / "evaluations" / f"{args.method}-{digest}"
    json_path = resolve_path(args.json) if args.json else default / "results.json"
    csv_path = resolve_path(args.predictions) if args.predictions else default / "predictions.csv"
    for path in (json_path, csv_path):
        holder = run_folder_holding(path)
        if holder is not None and any(p.resolve().parent != holder for p in paths.values()):
            raise UserError(f"{path} is in the run folder {holder}, whose results must come from its own weights "
                            f"(not {', '.join(weights['files'])}): write them elsewhere (--json, --csv)")
    return json_path, csv_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args, args.config or (None if args.test else "configs/demo.yaml"))
    paths = weight_paths(args, cfg)
    if paths == release_paths(cfg, args.method):
        check_run_exists(args, cfg)
    own_run = run_of(args.method, paths)  # the run folder whose own files are scored: locked while scoring
    lock = RunLock(own_run).acquire(False, "evaluation") if own_run else None
    weights = verify_release(args.method, paths, own_run)
    first = next(iter(paths.values()))
    json_path, csv_path = output_paths(args, cfg, own_run, paths, weights)
    loaded, backbone, img_size, input_scale = checkpoint_settings(first, args, cfg)
    device = get_device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    if not args.test:
        prepare_data(cfg)
    sets = test_sets(cfg, args.test or None)
    missing = {} if args.test else missing_sets(cfg)  # optional test sets whose data are absent: named, not dropped
    model = build_model(args.method, backbone, paths, loaded)
    calibration = release_calibration(args.method, paths, loaded)
    run_eval = functools.partial(evaluate, model, sets, img_size, backbone, input_scale, device, args.batch_size,
                                 0 if device.type == "cpu" else cfg["workers"], cfg["amp"], args.video_rule,
                                 calibration=calibration)
    results, predictions, bad, curves = run_eval()
    for name in (name for name, m in results.items() if m["n"] == 0):
        print(f"warning: test set '{name}' has no (readable) images: its metrics are empty", file=sys.stderr)
    from engine.provenance import produced_by
    record = produced_by(args.method, backbone, img_size, input_scale, loaded.get("config"), device)
    write_outputs({"weights": weights, "produced_by": record, **({"missing": missing} if missing else {}), **results},
                  predictions, json_path, csv_path)
    if bad:
        bad_list = json_path.with_name(json_path.stem + "_unreadable.txt")
        atomic_write_text(bad_list, "".join(p + "\n" for p in bad))
        print(f"warning: skipped {len(bad)} unreadable test image(s), e.g. {bad[0]}; listed in {bad_list}",
              file=sys.stderr)
    figures = [] if args.no_plots else write_plots(args.method, model, sets, curves, own_run, json_path.parent,
                                                     img_size, backbone, input_scale, device, cfg["seed"],
                                                     args.embedding, calibration)
    if args.cam:
        from evaluation.cams import write_test_cams
        figures += write_test_cams(model, predictions, args.cam, json_path.parent, img_size, backbone, input_scale,
                                   device, calibration["threshold"] if calibration else 0.5)[-1:]
    if own_run is not None:  # the run's TensorBoard log gets its evaluation: metrics, plots, settings
        from evaluation.tensorboard import log_evaluation
        log_evaluation(own_run, args.method, loaded.get("config") or cfg, results, figures)
    title = f"{args.method} ({backbone}, {img_size}px"
    print(format_table(results, f"{title}, weights {first}) — metrics in %"), *(
        f"missing: test set '{name}' ({why})" for name, why in missing.items()), sep="\n")
    if args.perturb:
        sweep = robustness.sweep(lambda p: run_eval(perturb=p)[0], results, args.perturb)
        files = robustness.write({"weights": weights, **sweep}, json_path.parent, f"robustness — {title})",
                                 plot=not args.no_plots)
        print(f"\nrobustness (AUC / ACC in %):\n{robustness.table(sweep)}")
        print("robustness: " + ", ".join(str(p) for p in files))
    print(f"\nmetrics: {json_path}\npredictions: {csv_path}")
    if figures:
        print("plots: " + ", ".join(str(p) for p in figures))
    if lock is not None:
        lock.release()
    return 0


if __name__ == "__main__":
    run_cli(main)
