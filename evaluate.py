"""Evaluate a trained model (baseline, SupCon or SupCon-MPL) on test sets: one full deterministic pass per
set; score = softmax P(fake); ACC (threshold 0.5), AUC, F1 (fake positive), EER, AP; known/unknown rows.

Weights default to the run folder of the config (<out_dir>/<run_name>/<method>/); the authors' released
.tar files work too (with --input-scale seed, the input scaling they were trained with).
Writes a JSON of metrics per test set and a per-image predictions CSV (path,label,score), prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from datasets import eval_loader, prepare_data, test_sets
from models import EncoderClassifier, LinearClassifier, SupConNet, build_baseline
from utils import (UserError, atomic_write_csv, atomic_write_text, autocast, binary_metrics, format_table, get_device,
                   load_checkpoint, load_config, load_weights, resolve_path, run_cli, run_folder)

CHECKPOINTS = {"pt": ("pt.tar", None), "supcon": ("supcon_encoder.tar", "supcon_classifier.tar"),
               "supconmpl": ("mpl_supcon_encoder.tar", "mpl_supcon_classifier.tar")}


def build_model(method: str, backbone: str, weights: Path | None, encoder: Path | None,
                classifier: Path | None, loaded: dict | None = None) -> torch.nn.Module:
    """The model of `method` with its checkpoints loaded (strict; a mismatch is a one-line error).
    `loaded`: the contents of `weights` (pt) or `encoder`, if already read (see checkpoint_settings)."""
    if method == "pt":
        model = build_baseline(backbone, "none")
        load_weights(model, weights, loaded)
        return model
    loaded = loaded if loaded is not None else load_checkpoint(encoder)
    state = loaded["model_state_dict"]
    feat_dim = state["head.2.weight"].shape[0] if "head.2.weight" in state else 128
    net = SupConNet(backbone, "none", feat_dim)
    load_weights(net, encoder, loaded)
    cls = LinearClassifier(net.dim)
    load_weights(cls, classifier)
    return EncoderClassifier(net.encoder, cls)


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


@torch.no_grad()
def score(model: torch.nn.Module, loader, device: torch.device, amp: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """P(fake) for every image of the loader, in order, and whether the image could be read."""
    from tqdm import tqdm
    model.eval()
    scores, readable = [], []
    for x, ok in tqdm(loader, desc=desc, leave=False, file=sys.stderr, mininterval=1.0,
                      disable=not sys.stderr.isatty()):
        with autocast(device, amp):
            logits = model(x.to(device, non_blocking=True))
        scores.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
        readable.append(ok)
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return torch.cat(scores).numpy(), torch.cat(readable).numpy().astype(bool)


def video_metrics(samples: list, scores: np.ndarray, rule: str = "mean") -> dict:
    """Video-level metrics: frame scores aggregated per video id by `rule` (mean: the average P(fake) of its
    frames; max: the largest). Frames without a video id count as one-frame videos."""
    per_video: dict[str, list[float]] = {}
    label_of: dict[str, int] = {}
    for s, p in zip(samples, scores):
        key = s.video or s.path
        per_video.setdefault(key, []).append(float(p))
        label_of[key] = s.label
    agg = np.mean if rule == "mean" else np.max
    keys = sorted(per_video)
    video_scores = np.array([agg(per_video[k]) for k in keys])
    labels = np.array([label_of[k] for k in keys])
    return {**binary_metrics(labels, video_scores), "n": len(keys), "rule": rule}


def evaluate(model: torch.nn.Module, sets: dict, img_size: int, backbone: str, input_scale: str,
             device: torch.device, batch_size: int = 256, workers: int = 0, amp: bool = True,
             video_rule: str = "mean"):
    """Metrics per test set, the per-image predictions [(path, label, score)] (each path once), the
    unreadable files (skipped: not scored, not counted in n) and {name: (split, labels, scores)} curves."""
    results, predictions, bad, curves = {}, {}, set(), {}
    model.to(device)
    for name, (split, samples) in sets.items():
        loader = eval_loader(samples, img_size, backbone, input_scale, batch_size, workers)
        scores, ok = score(model, loader, device, amp, name)
        kept = [s for s, good in zip(samples, ok) if good]
        bad |= {s.path for s, good in zip(samples, ok) if not good}
        labels = np.array([s.label for s in kept])
        results[name] = {**binary_metrics(labels, scores[ok]), "n": int(len(kept)), "split": split}
        curves[name] = (split, labels, scores[ok])
        if any(s.video for s in kept):
            results[name]["video"] = video_metrics(kept, scores[ok], video_rule)
        for s, p in zip(kept, scores[ok]):
            predictions[s.path] = (s.label, float(p))
    return results, [(p, lab, sc) for p, (lab, sc) in predictions.items()], sorted(bad), curves


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


def write_plots(method: str, model: torch.nn.Module, sets: dict, curves: dict, run_dir: Path, out_dir: Path,
                img_size: int, backbone: str, input_scale: str, device: torch.device, seed: int) -> list[Path]:
    """roc.png, training_curves.png (if the run's log is there) and, for SupCon models, embedding.png."""
    import plots
    names = {"pt": "baseline", "supcon": "SupCon teacher", "supconmpl": "SupCon-MPL student"}
    written = [plots.roc_plot(curves, out_dir / "roc.png", f"ROC — {names[method]}"),
               plots.training_curves(run_dir / "train_log.jsonl", out_dir / "training_curves.png",
                                     f"training — {names[method]}")]
    if method != "pt":
        samples = [s for _, ss in sets.values() for s in ss]
        feats, kept = encoder_features(model.encoder, samples, img_size, backbone, input_scale, device, seed=seed)
        written.append(plots.embedding_plot(feats, np.array([s.label for s in kept]), [s.domain for s in kept],
                                            out_dir / "embedding.png",
                                            f"encoder features (PCA) — {names[method]}, test images"))
    return [p for p in written if p is not None]


def write_outputs(results: dict, predictions: list, json_path: Path, csv_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(results, indent=2) + "\n")
    atomic_write_csv(csv_path, ["path", "label", "score"], ((p, lab, f"{sc:.6f}") for p, lab, sc in predictions))


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="evaluate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python evaluate.py --method supconmpl --config configs/demo.yaml\n"
               "  python evaluate.py --method pt --weights W.tar --test folder:DIR --img-size 64 --json out.json\n"
               "  python evaluate.py --method supcon --encoder weights/supcon_encoder.tar "
               "--classifier weights/supcon_classifier.tar --input-scale seed --test folder:DIR")
    p.add_argument("--method", required=True, choices=sorted(CHECKPOINTS), help="which kind of model")
    p.add_argument("--config", help="config whose test sets and run folder to use (default: configs/demo.yaml "
                                    "unless --test is given)")
    p.add_argument("--weights", help="baseline checkpoint (pt)")
    p.add_argument("--encoder", help="SupCon network checkpoint (supcon, supconmpl)")
    p.add_argument("--classifier", help="linear classifier checkpoint (supcon, supconmpl)")
    p.add_argument("--test", action="append", default=[], metavar="folder:DIR",
                   help="test set (repeatable); replaces the config's test sets")
    p.add_argument("--backbone", help="architecture (default: from the checkpoint, else the config, else resnet50)")
    p.add_argument("--img-size", type=int, help="input size (default: from the checkpoint or config)")
    p.add_argument("--input-scale", choices=("project", "seed"),
                   help="project: [0,1] + mean/std (default); seed: the reference code's x/255/255")
    p.add_argument("--json", help="metrics JSON (default: <run folder>/results.json)")
    p.add_argument("--predictions", help="per-image CSV (default: <run folder>/predictions.csv)")
    p.add_argument("--video-rule", choices=("mean", "max"), default="mean",
                   help="how frame scores become a video score: mean (default) or max of P(fake)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-plots", action="store_true", help="skip roc.png / training_curves.png / embedding.png")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--out", help="folder of run folders (same as out_dir=...)")
    p.add_argument("--seed", type=int, help="seed (same as seed=...; picks the images of embedding.png)")
    p.add_argument("--run-name", help="run folder name (same as run_name=...)")
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # passed through by the .sh scripts
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (as for training)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = args.config or (None if args.test else "configs/demo.yaml")
    overrides = list(args.overrides)
    for key, value in (("device", args.device), ("out_dir", args.out), ("run_name", args.run_name),
                       ("seed", args.seed)):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(config, overrides)
    run_dir = run_folder(cfg, args.method)
    enc_name, cls_name = CHECKPOINTS[args.method]
    if args.method == "pt":
        weights = resolve_path(args.weights) if args.weights else run_dir / enc_name
        first, encoder, classifier = weights, None, None
    else:
        if args.weights:
            raise UserError("--weights is for --method pt; use --encoder and --classifier")
        encoder = resolve_path(args.encoder) if args.encoder else run_dir / enc_name
        classifier = resolve_path(args.classifier) if args.classifier else run_dir / cls_name
        first, weights = encoder, None
    loaded, backbone, img_size, input_scale = checkpoint_settings(first, args, cfg)

    device = get_device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    if not args.test:
        prepare_data(cfg)
    sets = test_sets(cfg, args.test)
    model = build_model(args.method, backbone, weights, encoder, classifier, loaded)
    results, predictions, bad, curves = evaluate(model, sets, img_size, backbone, input_scale, device, args.batch_size,
                                         0 if device.type == "cpu" else cfg["workers"], cfg["amp"], args.video_rule)
    json_path = resolve_path(args.json) if args.json else run_dir / "results.json"
    csv_path = resolve_path(args.predictions) if args.predictions else run_dir / "predictions.csv"
    write_outputs(results, predictions, json_path, csv_path)
    if bad:
        bad_list = json_path.with_name(json_path.stem + "_unreadable.txt")
        atomic_write_text(bad_list, "".join(p + "\n" for p in bad))
        print(f"warning: skipped {len(bad)} unreadable test image(s), e.g. {bad[0]}; listed in {bad_list}",
              file=sys.stderr)
    figures = [] if args.no_plots else write_plots(args.method, model, sets, curves, run_dir, json_path.parent,
                                                     img_size, backbone, input_scale, device, cfg["seed"])
    title = f"{args.method} ({backbone}, {img_size}px, weights {first}) — metrics in %"
    print(format_table(results, title))
    print(f"\nmetrics: {json_path}\npredictions: {csv_path}")
    if figures:
        print("plots: " + ", ".join(str(p) for p in figures))
    return 0


if __name__ == "__main__":
    run_cli(main)
