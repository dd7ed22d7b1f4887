"""An evaluation in the run's TensorBoard log (<run>/tb, beside its training scalars): every test set's metrics
(eval/<set>/<metric>), the plots as images, and the run's settings with its final metrics (add_hparams), so that
several runs compare in one view (`tensorboard --logdir runs`, HPARAMS tab)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

HPARAMS = ("backbone", "img_size", "seed", "pretrained", "input_scale", "pt.lr", "pt.steps", "supcon.lr",
           "supcon.temperature", "mpl.teacher_lr", "mpl.student_lr", "mpl.steps", "mpl.temperature",
           "data.labeled_fraction")
METRICS = ("acc", "auc", "auc_hard", "f1", "eer", "ap")


def _value(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg if isinstance(cfg, (int, float, str, bool)) else str(cfg)


def log_evaluation(run_dir: Path, method: str, cfg: dict, results: dict, figures: list[Path]) -> None:
    """Write one evaluation of a run's own weights into its TensorBoard log."""
    import cv2
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(run_dir / "tb"))
    try:
        final: dict[str, float] = {}
        for name, m in results.items():
            for key in METRICS:
                if m.get(key) is not None:
                    writer.add_scalar(f"eval/{name}/{key}", m[key], 0)
                    if key in ("acc", "auc"):
                        final[f"eval/{name}/{key}"] = float(m[key])
        for png in figures:
            image = cv2.imread(str(png))
            if image is not None:
                writer.add_image(f"eval/{png.stem}", np.ascontiguousarray(image[:, :, ::-1]), 0, dataformats="HWC")
        hparams = {"method": method, **{k: _value(cfg, k) for k in HPARAMS}}
        writer.add_hparams(hparams, final, run_name="hparams")
    finally:
        writer.close()
