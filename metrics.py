"""Metrics of a binary detector (fake = positive class, scores = P(fake)) and the results table."""
from __future__ import annotations

import numpy as np


def test_results(results: dict) -> dict[str, dict]:
    """The per-test-set entries of a results.json (without its "weights" record)."""
    return {name: m for name, m in results.items() if name != "weights"}


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
    """ACC at `threshold`, AUC, F1 (fake = positive), EER and AP from P(fake) scores; fractions in [0, 1].

    `auc_hard` is the paper's AUC: the authors computed roc_auc_score on hard 0/1 predictions, which is the
    balanced accuracy at `threshold` (why the paper's AUC and ACC nearly agree); `auc` is from the scores.
    AUC, AUC-hard, EER and AP need both classes: they are None for a one-class set.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    pred = (scores >= threshold).astype(int)
    out: dict[str, float | None] = {
        "acc": float((pred == labels).mean()) if len(labels) else None,
        "f1": float(f1_score(labels, pred, zero_division=0)) if len(labels) else None,
        "auc": None, "auc_hard": None, "eer": None, "ap": None,
    }
    if len(np.unique(labels)) == 2:
        out["auc"] = float(roc_auc_score(labels, scores))
        out["auc_hard"] = float(roc_auc_score(labels, pred))
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
    cols = ("acc", "auc", "auc_hard", "f1", "eer", "ap")
    names = {"auc_hard": "AUCh"}
    videos = any("video" in m for m in results.values())
    pct = lambda v: "-" if v is None else format(100 * v, ".2f")  # noqa: E731
    name_w = max([len("test set")] + [len(n) for n in results]) + 2
    head = f"{'test set':<{name_w}}{'split':<9}" + "".join(f"{names.get(c, c.upper()):>8}" for c in cols) + f"{'N':>8}"
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
    lines.append("AUCh: the paper's AUC, from hard 0/1 predictions (= balanced accuracy); AUC is from the scores")
    if videos:
        lines.append("vACC/vAUC: video level, frame scores averaged per video (evaluate.py --video-rule)")
    return "\n".join(lines)


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
