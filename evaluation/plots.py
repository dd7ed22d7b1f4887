"""Plots written as PNG beside a run's metrics: ROC curves, training curves, 2-D embedding maps, robustness."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def roc_plot(curves: dict[str, tuple[str | None, np.ndarray, np.ndarray]], path: Path, title: str) -> Path | None:
    """ROC curve of every test set on one figure: known sets solid, unknown dashed, AUC in the legend."""
    from evaluation.metrics import roc_auc, roc_curve
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    drawn = 0
    for name, (split, labels, scores) in curves.items():
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        style = "--" if split == "unknown" else "-"
        ax.plot(fpr, tpr, style, lw=2, label=f"{name} ({split or 'test'}) AUC {100 * roc_auc(labels, scores):.1f}")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="chance")
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate (fake called fake)",
           xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


GROUPS = (  # a panel per kind of quantity: (title, y label, rule for a key, chance line and its label)
    ("losses", "cross-entropy", lambda k: "loss" in k or k.endswith("_cls"),
     (float(np.log(2)), "ln 2: a two-class guess's cross-entropy")),
    ("SupCon / Tar / DDT losses", "loss (no two-class chance level)", lambda k: False, None),  # OWN_LOSS
    ("MPL feedback h", "h (teacher's reward)", lambda k: k == "h" or k.startswith("h_"), (0.0, "no feedback")),
    ("accuracies and rates", "fraction", lambda k: any(w in k for w in ("acc", "auc", "fake", "ratio", "rate")),
     (0.5, "chance / balance")),
    ("other", "value", lambda k: True, None),
)
# The stages whose `loss` is not a two-class cross-entropy, by method: SupCon's contrastive loss (the teacher's
# stage, the SupCon-MPL student's fine-tuning), Tar's activation + reconstruction loss, DDT's distance to the
# class modes. A key naming SupCon (t_supcon, s_supcon) is one everywhere.
OWN_LOSS = {"supcon": {"supcon"}, "supconmpl": {"finetune"}, "tar": {"tar"}, "ddt": {"ddt"}}
OWN_PANEL = 1  # GROUPS' "SupCon / Tar / DDT losses": its rule matches nothing, _group puts those keys there


def _group(key: str, stage: str = "", method: str = "") -> int:
    key = key.removeprefix("val_")
    if "supcon" in key or (key == "loss" and stage in OWN_LOSS.get(method, ())):
        return OWN_PANEL  # the panel without the ln 2 line
    return next(i for i, (_, _, rule, _) in enumerate(GROUPS) if rule(key))


def training_curves(log_file: Path, path: Path, title: str, method: str = "") -> Path | None:
    """Every logged quantity of every stage against its step: a row per stage, a panel per kind of quantity
    (cross-entropy losses with the two-class chance line, SupCon's and Tar's / DDT's own losses apart (OWN_LOSS),
    MPL's h on its own axis, accuracies and rates on [0, 1])."""
    if not log_file.is_file():
        return None
    rows = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    if not stages:
        return None
    skip = {"stage", "step", "time", "steps_per_s", "images_per_s", "rss_mb", "private_mb"}
    keys = {st: list(dict.fromkeys(k for r in rows if r["stage"] == st for k in r
                                   if k not in skip and not k.startswith("lr_"))) for st in stages}
    used = sorted({_group(k, st, method) for st, ks in keys.items() for k in ks})
    plt = _pyplot()
    fig, axes = plt.subplots(len(stages), len(used), figsize=(4.6 * len(used), 3.3 * len(stages)), squeeze=False)
    for row, stage in zip(axes, stages):
        by_step: dict[int, dict] = {}
        for r in (r for r in rows if r["stage"] == stage):  # a resumed run logs some steps twice (the last wins)
            by_step.setdefault(r["step"], {}).update(r)
        steps = sorted(by_step)
        for ax, g in zip(row, used):
            name, ylabel, _, chance = GROUPS[g]
            mine = [k for k in keys[stage] if _group(k, stage, method) == g]
            for key in mine:
                points = [(st, by_step[st][key]) for st in steps if key in by_step[st]]
                ax.plot(*zip(*points), "o--" if key.startswith("val_") else "-", label=key, ms=3)
            if not mine:
                ax.set_axis_off()
                continue
            if chance is not None:
                ax.axhline(chance[0], color="grey", ls=":", lw=1, label=chance[1])
            if name == "accuracies and rates":
                ax.set_ylim(-0.02, 1.02)
            ax.set(title=f"{stage}: {name}", xlabel="step", ylabel=ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def embed_2d(features: np.ndarray, projection: str = "pca", seed: int = 0) -> np.ndarray:
    """[N, F] -> [N, 2]: PCA (linear; distances between clusters mean something) or t-SNE (neighbourhoods
    only; perplexity 30, or less for small N), both seeded."""
    if projection == "tsne":
        from sklearn.manifold import TSNE
        perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    from sklearn.decomposition import PCA
    return PCA(n_components=2, random_state=seed).fit_transform(features)


def embedding_plot(features: np.ndarray, labels: np.ndarray, domains: list[str], path: Path, title: str,
                   projection: str = "pca") -> Path:
    """Encoder features projected to 2-D (PCA or t-SNE), coloured by real/fake (left) and by manipulation
    (right). Both classes are drawn with as many points (a seeded choice of the larger one): 800 fakes over 160
    reals would hide where the reals are."""
    plt = _pyplot()
    per_class = min(int((labels == 0).sum()), int((labels == 1).sum()))
    if per_class:
        rng = np.random.default_rng(0)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == v))[:per_class] for v in (0, 1)]))
        features, labels, domains = features[keep], labels[keep], [domains[i] for i in keep]
        title = f"{title} ({per_class} of each class)"
    xy = embed_2d(features, projection)  # [N, 2]
    axis = "t-SNE " if projection == "tsne" else "PC "
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5.5))
    for value, name, colour in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        sel = labels == value
        a.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.6, c=colour, label=f"{name} ({sel.sum()})")
    a.set(title="real / fake", xlabel=axis + "1", ylabel=axis + "2")
    a.legend(markerscale=3)
    cmap = plt.get_cmap("tab10")
    for i, domain in enumerate(sorted(set(domains))):
        sel = np.array([d == domain for d in domains])
        b.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.6, color=cmap(i % 10), label=f"{domain} ({sel.sum()})")
    b.set(title="manipulation", xlabel=axis + "1", ylabel=axis + "2")
    b.legend(markerscale=3, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_plot(curves: dict[str, tuple[str | None, np.ndarray, np.ndarray]], path: Path, title: str,
                     temperature: float | None = None, bins: int = 10) -> Path | None:
    """Reliability diagrams, a panel per test set: the fraction of fakes against the mean P(fake) in `bins`
    equal-width score bins (the diagonal is perfect calibration), grey bars the images in each bin (right
    axis: a point of few images says little); dotted: after temperature scaling, when fitted."""
    from evaluation.metrics import scaled_scores
    plt = _pyplot()
    n = len(curves)
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.4 * cols, 4.2 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (name, (split, labels, scores)) in zip(axes.flat, curves.items()):
        idx = np.minimum((np.asarray(scores) * bins).astype(int), bins - 1)
        counts = ax.twinx()
        counts.bar((np.arange(bins) + 0.5) / bins, np.bincount(idx, minlength=bins), width=0.9 / bins, color="0.85",
                   zorder=0)
        counts.set_ylabel("images in the bin", color="0.45")
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
        versions = [(scores, "-o", "")] + ([(scaled_scores(scores, temperature), ":s", " (T)")] if temperature else [])
        for values, style, suffix in versions:
            b_idx = np.minimum((np.asarray(values) * bins).astype(int), bins - 1)
            used = [b for b in range(bins) if (b_idx == b).any()]
            ax.plot([values[b_idx == b].mean() for b in used], [labels[b_idx == b].mean() for b in used], style,
                    ms=3, label=f"P(fake){suffix}")
        ax.plot([0, 1], [0, 1], color="grey", lw=1, label="perfect calibration")
        ax.set(xlabel="mean predicted P(fake) in the bin", ylabel="fraction of fakes in the bin", xlim=(0, 1),
               ylim=(0, 1), title=f"{name} ({split or 'test'}, {len(labels)} images)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def robustness_plot(result: dict, path: Path, title: str) -> Path | None:
    """AUC against perturbation level: one panel per kind, one line per test set, the clean AUC dotted."""
    from datasets.perturb import KINDS
    kinds = list(dict.fromkeys(r["kind"] for r in result["perturbed"]))
    sets = [s for s, m in result["clean"].items() if m["auc"] is not None]
    if not kinds or not sets:
        return None
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rows = [r for r in result["perturbed"] if r["kind"] == kind]
        if KINDS[kind][1] is not None and all(r["level"] != KINDS[kind][1] for r in rows):
            rows.append({"level": KINDS[kind][1], "sets": result["clean"]})  # the clean point, at "none"
        rows.sort(key=lambda r: r["level"])
        for i, name in enumerate(sets):
            points = [(r["level"], r["sets"][name]["auc"]) for r in rows if r["sets"][name]["auc"] is not None]
            colour = cmap(i % 10)
            ax.axhline(100 * result["clean"][name]["auc"], color=colour, ls=":", lw=1)
            if points:
                ax.plot([p[0] for p in points], [100 * p[1] for p in points], "o-", color=colour, label=name)
        ax.set(title=kind, xlabel={"jpeg": "quality", "blur": "sigma (px)", "noise": "std",
                                   "resize": "scale"}.get(kind, "level"), ylabel="AUC (%)")
        if kind in ("jpeg", "resize"):
            ax.invert_xaxis()  # stronger degradation to the right
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{title} (dotted: clean)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
