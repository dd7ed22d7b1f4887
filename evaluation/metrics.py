"""Metrics of a binary detector (fake = positive class, scores = P(fake)) and the results table.

ROC, AUC, AP and F1 are scikit-learn's; what it lacks is here: the EER, the paper's hard-prediction AUC,
per-class accuracies, the validation threshold and calibration error, video aggregation, the table.
"""
from __future__ import annotations

import numpy as np


def sk():
    """scikit-learn's metrics, imported where first used: a training process imports this module (validation)
    but computes no metric unless it validates, and the import costs its start about 2 s."""
    from sklearn import metrics
    return metrics


def roc_curve(labels, scores, sample_weight=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FPR, TPR and thresholds (the first +inf) of P(fake) scores (scikit-learn's). Needs both classes."""
    return sk().roc_curve(labels, scores, sample_weight=sample_weight)


def roc_auc(labels, scores, sample_weight=None) -> float:
    """The area under the ROC curve (scikit-learn's roc_auc_score). Needs both classes."""
    return float(sk().roc_auc_score(labels, scores, sample_weight=sample_weight))


def average_precision(labels, scores) -> float:
    """AP, not interpolated (scikit-learn's average_precision_score). Needs a fake image."""
    return float(sk().average_precision_score(labels, scores))


def f1(labels, pred) -> float:
    """F1 of the fake class from 0/1 predictions; 0 where there is no fake image nor fake prediction."""
    return float(sk().f1_score(labels, pred, zero_division=0))


RECORDS = ("weights", "produced_by", "missing")  # the keys of a results.json that are not test sets


def test_results(results: dict) -> dict[str, dict]:
    """The per-test-set entries of a results.json (without its weights, produced_by and missing records)."""
    return {name: m for name, m in results.items() if name not in RECORDS}


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
    """ACC at `threshold`, AUC, F1 (fake = positive), EER and AP from P(fake) scores; fractions in [0, 1];
    real_acc / fake_acc / bal_acc: the accuracy on each class at `threshold` and their mean.

    `auc_hard` is the paper's AUC: the authors computed roc_auc_score on hard 0/1 predictions, which is the
    balanced accuracy at `threshold` (why the paper's AUC and ACC nearly agree); `auc` is from the scores.
    AUC, AUC-hard, EER and AP need both classes: they are None for a one-class set.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():  # NaN would sort as the highest score: a perfect AUC from nothing
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} of {len(scores)} scores are not finite (NaN or inf)")
    pred = (scores >= threshold).astype(int)
    out: dict[str, float | None] = {
        "acc": float((pred == labels).mean()) if len(labels) else None,
        "f1": f1(labels, pred) if len(labels) else None,
        "auc": None, "auc_hard": None, "eer": None, "ap": None, **class_accuracies(labels, pred),
    }
    if len(np.unique(labels)) == 2:
        out["auc"] = roc_auc(labels, scores)
        out["auc_hard"] = roc_auc(labels, pred)
        out["ap"] = average_precision(labels, scores)
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


def class_accuracies(labels: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """Accuracy on real images, on fake images, and their mean (balanced accuracy; None unless both exist)."""
    real = float((pred[labels == 0] == 0).mean()) if (labels == 0).any() else None
    fake = float((pred[labels == 1] == 1).mean()) if (labels == 1).any() else None
    return {"real_acc": real, "fake_acc": fake,
            "bal_acc": (real + fake) / 2 if real is not None and fake is not None else None}


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, calibration: dict) -> dict:
    """The decisions at the validation set's threshold (and the calibration error before and after its
    temperature, when one was fitted): the `val_threshold` entry of a test set in results.json."""
    labels = np.asarray(labels).astype(int)
    t = calibration["threshold"]
    pred = (np.asarray(scores) >= t).astype(int)
    out = {"threshold": t, "rule": calibration["rule"],
           "acc": float((pred == labels).mean()) if len(labels) else None, **class_accuracies(labels, pred)}
    if calibration.get("temperature"):
        out["ece"] = expected_calibration_error(labels, np.asarray(scores, dtype=np.float64))
        out["ece_scaled"] = expected_calibration_error(labels, scaled_scores(scores, calibration["temperature"]))
    return out


def choose_threshold(labels: np.ndarray, scores: np.ndarray, rule: str) -> float:
    """The P(fake) threshold (predict fake at >= t) at the equal-error point (rule eer: the ROC point where
    FPR and FNR are closest) or at the best balanced accuracy (rule balanced). One class only: 0.5."""
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores)
    i = int(np.argmin(np.abs((1 - tpr) - fpr))) if rule == "eer" else int(np.argmax(tpr - fpr))
    return float(min(max(thresholds[i], 0.0), 1.0))  # the first ROC threshold is +inf


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 15) -> float | None:
    """ECE of P(fake) scores: over `bins` equal-width bins of the predicted class's confidence, the
    |accuracy - confidence| gap weighted by the bin's share of images (Guo et al., 2017)."""
    if len(labels) == 0:
        return None
    conf = np.maximum(scores, 1 - scores)
    correct = ((scores >= 0.5).astype(int) == labels).astype(float)
    idx = np.minimum(((conf - 0.5) * 2 * bins).astype(int), bins - 1)  # confidence in [0.5, 1]
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def scaled_scores(scores: np.ndarray, temperature: float) -> np.ndarray:
    """P(fake) after temperature scaling, from the P(fake) of the unscaled 2-way softmax:
    softmax(z / T)[1] = sigmoid((z1 - z0) / T) and z1 - z0 = logit(P(fake))."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    return 1 / (1 + np.exp(-np.log(p / (1 - p)) / temperature))


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
    lines += _class_table(results, name_w)
    lines += _deepfakebench_table(results, name_w)
    return "\n".join(lines)


def _deepfakebench_table(results: dict[str, dict], name_w: int) -> list[str]:
    """The DeepfakeBench test sets in its own metric definitions (deepfakebench_metrics)."""
    rows = {name: m["deepfakebench"] for name, m in results.items() if "deepfakebench" in m}
    if not rows:
        return []
    pct = lambda v: "-" if v is None else format(100 * v, ".2f")  # noqa: E731
    cols = ("auc", "video_auc", "eer", "ap", "acc")
    head = f"{'test set':<{name_w}}" + "".join(f"{c:>11}" for c in ("AUC", "video AUC", "EER", "AP", "ACC"))
    lines = ["", "in DeepfakeBench's definitions (its training/metrics/utils.py; docs/evaluation.md)", head,
             "-" * len(head)]
    return lines + [f"{name:<{name_w}}" + "".join(f"{pct(m.get(c)):>11}" for c in cols) for name, m in rows.items()]


def _class_table(results: dict[str, dict], name_w: int) -> list[str]:
    """Real / fake / balanced accuracy at 0.5 and, when the weights carry one, at the validation threshold."""
    pct = lambda v: "-" if v is None else format(100 * v, ".2f")  # noqa: E731
    at_val = next((m["val_threshold"] for m in results.values() if "val_threshold" in m), None)
    head = f"{'test set':<{name_w}}" + "".join(f"{c:>8}" for c in ("rACC", "fACC", "bACC"))
    if at_val:
        head += "  |" + "".join(f"{c:>8}" for c in ("ACC", "rACC", "fACC", "bACC"))
        if "ece" in at_val:
            head += f"{'ECE':>8}{'ECE-T':>8}"
    lines = ["", "per class at P(fake) 0.5" + (f"  |  at the validation threshold {at_val['threshold']:.4f} "
                                                 f"({at_val['rule']})" if at_val else ""), head, "-" * len(head)]
    for name, m in results.items():
        row = f"{name:<{name_w}}" + "".join(f"{pct(m.get(c)):>8}" for c in ("real_acc", "fake_acc", "bal_acc"))
        v = m.get("val_threshold")
        if v:
            row += "  |" + "".join(f"{pct(v.get(c)):>8}" for c in ("acc", "real_acc", "fake_acc", "bal_acc"))
            if "ece" in v:
                row += f"{pct(v['ece']):>8}{pct(v['ece_scaled']):>8}"
        lines.append(row)
    if at_val and "ece" in at_val:
        lines.append("ECE: expected calibration error of P(fake) (15 bins); ECE-T: after the validation temperature")
    return lines


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


def deepfakebench_metrics(paths: list[str], labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """ACC, AUC, EER, AP and video AUC as DeepfakeBench computes them (training/metrics/utils.py,
    get_test_metrics), so that a number sits beside its published ones. Where ours differ: its ACC counts
    P(fake) > 0.5 as fake (ours >= 0.5); its EER is the FPR at the ROC point where |FNR - FPR| is smallest (ours
    interpolates between the two points around the crossing); its videos are the frames' parent folder *names*
    (ours: video ids, which also tell apart two folders of one name), a video's label the floor of its frames'
    mean label. AUC and AP are scikit-learn's in both."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    acc = float(((scores > 0.5).astype(int) == labels).mean()) if len(labels) else None
    out: dict[str, float | None] = {"acc": acc, "auc": None, "eer": None, "ap": None, "video_auc": None}
    if len(np.unique(labels)) < 2:
        return out
    fpr, tpr, _ = roc_curve(labels, scores)
    out["auc"] = float(sk().auc(fpr, tpr))
    out["eer"] = float(fpr[np.nanargmin(np.abs((1 - tpr) - fpr))])
    out["ap"] = average_precision(labels, scores)
    per_folder: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        per_folder.setdefault(path.replace("\\", "/").split("/")[-2], []).append(i)
    v_scores = np.array([scores[idx].mean() for idx in per_folder.values()])
    v_labels = np.array([int(labels[idx].sum() / len(idx)) for idx in per_folder.values()])
    if len(np.unique(v_labels)) == 2:
        v_fpr, v_tpr, _ = roc_curve(v_labels, v_scores)
        out["video_auc"] = float(sk().auc(v_fpr, v_tpr))
    return out
