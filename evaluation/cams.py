"""Grad-CAM pictures for evaluate.py --cam N and predict.py --cam DIR (models/gradcam.py computes the maps).

evaluate.py: per test set, the N most confident right and the N most confident wrong decisions (P(fake) at
0.5, or at the validation threshold when the weights carry one), each written as
<out>/cam/<set>/<right|wrong>-<k>.png (the crop beside crop + heat map, with its score, label and decision
in the title), and one contact sheet <out>/cam/contact_sheet.png (a row per test set) that report.py links.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from datasets.augment import eval_transform
from datasets.images import BadImageError, read_image
from models.gradcam import GradCAM, overlay, save_cam_png


REAL_ROW = "real images (every set)"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "set"


def pick(rows: list[tuple[str, int, float]], n: int, threshold: float) -> list[tuple[str, str, int, float]]:
    """From (path, label, score) rows: the n most confident right and n most confident wrong decisions, as
    (kind, path, label, score); confidence = distance of the score from the threshold."""
    right = [r for r in rows if (r[2] >= threshold) == bool(r[1])]
    wrong = [r for r in rows if (r[2] >= threshold) != bool(r[1])]
    by_confidence = lambda r: (-abs(r[2] - threshold), r[0])  # noqa: E731 (ties: by path, deterministic)
    return [("right", *r) for r in sorted(right, key=by_confidence)[:n]] + \
           [("wrong", *r) for r in sorted(wrong, key=by_confidence)[:n]]


def title(score: float, label: int | None, threshold: float) -> str:
    decided = "FAKE" if score >= threshold else "real"
    truth = "" if label is None else f", label {'fake' if label else 'real'}"
    return f"P(fake) {score:.3f}{truth} -> {decided} (at {threshold:.3g})"


def crop_maps(cam: GradCAM, crops: list[np.ndarray], transform, device: torch.device,
              batch_size: int = 64) -> list[np.ndarray]:
    """Grad-CAM maps of RGB uint8 crops [h, w, 3], each resized to its crop's size [h, w], values in [0, 1]."""
    import cv2
    out = []
    for i in range(0, len(crops), batch_size):
        part = crops[i:i + batch_size]
        x = torch.stack([transform(torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1)) for c in part])
        maps, _, _ = cam(x.to(device))
        out += [cv2.resize(m.numpy(), (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LINEAR)
                for m, c in zip(maps, part)]
    return out


def write_test_cams(model: torch.nn.Module, predictions: list, n: int, out_dir: Path, img_size: int, backbone: str,
                    input_scale: str, device: torch.device, threshold: float = 0.5) -> list[Path]:
    """evaluate.py --cam N (see the module docstring); returns the PNGs written, contact sheet last."""
    cam = GradCAM(model.to(device), img_size)
    transform = eval_transform(img_size, backbone, input_scale)
    # per test set its fakes; the real images, which every set shares, once in a row of their own (else each
    # row would repeat the same most confident reals)
    by_set: dict[str, list] = {}
    reals: dict[str, tuple] = {}
    for name, path, _video, label, score in predictions:
        if int(label) == 1:
            by_set.setdefault(name, []).append((path, 1, float(score)))
        else:
            reals.setdefault(path, (path, int(label), float(score)))
    if reals:
        by_set[REAL_ROW] = list(reals.values())
    written, sheet = [], []
    for name, rows in by_set.items():
        chosen = pick(rows, n, threshold)
        crops = []
        for _, path, _, _ in chosen:
            try:
                crops.append(read_image(path).permute(1, 2, 0).numpy())
            except BadImageError:
                crops.append(np.zeros((img_size, img_size, 3), np.uint8))
        maps = crop_maps(cam, crops, transform, device)
        folder = out_dir / "cam" / safe_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        counts = {"right": 0, "wrong": 0}
        row = []
        for (kind, path, label, score), crop, heat in zip(chosen, crops, maps):
            counts[kind] += 1
            png = folder / f"{kind}-{counts[kind]}.png"
            save_cam_png(crop, heat, png, f"{name} {kind}: {title(score, label, threshold)}")
            written.append(png)
            row.append((kind, score, label, overlay(crop, heat)))
        sheet.append((name, row))
    if sheet:
        written.append(contact_sheet(sheet, out_dir / "cam" / "contact_sheet.png", f"Grad-CAM ({cam.stage})",
                                     img_size))
    return written


def contact_sheet(rows: list[tuple[str, list]], path: Path, heading: str, size: int) -> Path:
    """One figure: a row per test set of its fakes' heat-map overlays and one of the real images (right ones
    first), score above each, the colour scale of the maps beside."""
    import cv2
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from evaluation.plots import _pyplot
    plt = _pyplot()
    cols = max(len(r) for _, r in rows) or 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols + 1, 1.9 * len(rows)), squeeze=False)
    for ax_row, (name, row) in zip(axes, rows):
        for k, ax in enumerate(ax_row):
            ax.axis("off")
            if k < len(row):
                kind, score, label, image = row[k]
                ax.imshow(cv2.resize(image, (size * 2, size * 2), interpolation=cv2.INTER_NEAREST))
                ax.set_title(f"{kind} {score:.2f} ({'fake' if label else 'real'})", fontsize=7,
                             color="green" if kind == "right" else "red")
        ax_row[0].text(-0.1, 0.5, name, transform=ax_row[0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(heading + " — the most confident right and wrong decisions; score = P(fake), label in brackets",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), cax=fig.add_axes((0.945, 0.15, 0.015, 0.7)))
    bar.set_label("Grad-CAM (share of the map's peak)", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
