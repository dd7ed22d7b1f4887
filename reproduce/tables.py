"""A table's results: per cell the mean +- std over seeds with the paper's value beside it, SupCon-MPL minus
each other method with a paired-bootstrap 95% interval, and the Markdown and figure of it all."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine.release import read_results
from evaluation.metrics import test_results
from reproduce.jobs import column_folder, job_config
from reproduce.spec import FOLDERS, METRICS, NAMES, Job, paper_value


def load_results(job: Job, method: str, overrides: list[str]) -> tuple[dict | None, Path, str | None]:
    """(test results, folder, None) of a method's run folder, or (None, folder, why they cannot be used):
    only results of the run's own release files, as they are now, count."""
    folder = column_folder(job_config(job, overrides), method)
    results, why = read_results(folder)
    return (test_results(results) if results is not None else None), folder, why


def predictions(folder: Path, test: str) -> dict[str, tuple[str, int, float]]:
    """path -> (video, label, score) of one test set in a run folder's predictions.csv."""
    with open(folder / "predictions.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        return {r["path"]: (r["video"] or r["path"], int(r["label"]), float(r["score"]))
                for r in csv.DictReader(f) if r["set"] == test}


def paired_bootstrap(pairs: list[tuple[dict, dict]], n_boot: int = 1000, seed: int = 0) -> dict:
    """SupCon-MPL minus another method, per metric: the mean over seeds of the difference and its 95% CI
    from resampling test videos (the same resample for both methods; seeds pooled by averaging).
    pairs: per seed, (predictions of SupCon-MPL, predictions of the other), as `predictions` returns."""
    from evaluation.metrics import roc_auc
    rng = np.random.default_rng(seed)
    diffs = {"acc": [], "auc": []}
    for ours, theirs in pairs:
        paths = sorted(set(ours) & set(theirs))
        videos = {v: i for i, v in enumerate(sorted({ours[p][0] for p in paths}))}
        vid = np.array([videos[ours[p][0]] for p in paths])
        y = np.array([ours[p][1] for p in paths])
        a, b = np.array([ours[p][2] for p in paths]), np.array([theirs[p][2] for p in paths])
        w = rng.multinomial(len(videos), np.full(len(videos), 1 / len(videos)), size=n_boot)[:, vid]  # [B, N]
        correct = ((a >= 0.5) == y).astype(float) - ((b >= 0.5) == y).astype(float)
        diffs["acc"].append(np.concatenate([[correct.mean()], (w @ correct) / w.sum(axis=1)]))
        two = len(np.unique(y)) == 2
        auc = [roc_auc(y, a) - roc_auc(y, b)] if two else []
        for k in range(min(n_boot, 200) if two else 0):  # AUC: fewer resamples (each is a full ROC)
            keep = w[k] > 0
            if len(np.unique(y[keep])) == 2:
                auc.append(roc_auc(y[keep], a[keep], sample_weight=w[k][keep])
                           - roc_auc(y[keep], b[keep], sample_weight=w[k][keep]))
        diffs["auc"].append(np.array(auc))
    out = {}
    for metric, per_seed in diffs.items():
        if not per_seed or any(len(d) < 2 for d in per_seed):
            continue
        n = min(len(d) for d in per_seed)
        pooled = np.mean([d[:n] for d in per_seed], axis=0)  # [1 + resamples]
        lo, hi = np.percentile(pooled[1:], [2.5, 97.5])
        out[metric] = {"diff": float(pooled[0]), "lo": float(lo), "hi": float(hi)}
    return out


def metric(result: dict, name: str) -> float | None:
    """A metric of one test set's results, by name or dotted path (deepfakebench.auc)."""
    for part in name.split("."):
        result = result.get(part) if isinstance(result, dict) else None
    return result


def cell(values: list[float]) -> dict:
    arr = np.array(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None, "n": len(arr),
            "values": [float(v) for v in arr]}


def collect(spec: dict, jobs: list[Job], overrides: list[str], failed: dict, paper: dict) -> list[dict]:
    """Per row: per method and metric the mean +- std over seeds (with the paper's value), the cells that
    are missing (and why), and SupCon-MPL minus each other method with its 95% CI."""
    rows = []
    for row in spec["rows"]:
        entry = {"row": row.label, "protocol": row.protocol, "test": row.test, "cells": {}, "missing": [], "diffs": {}}
        per_method: dict[str, list] = {m: [] for m in spec["methods"]}
        for job in (j for j in jobs if j.protocol == row.protocol):
            for method in FOLDERS[job.script]:
                if method not in per_method:
                    continue
                results, folder, unusable = load_results(job, method, overrides)
                if results is None or row.test not in results:
                    why = failed.get(job) or unusable or f"no results for '{row.test}' in {folder / 'results.json'}"
                    entry["missing"].append(f"{NAMES[method]}, seed {job.seed}: {why}")
                    continue
                per_method[method].append((results[row.test], folder))
        for method, found in per_method.items():
            entry["cells"][method] = {m: {**(cell([metric(r, m) for r, _ in found if metric(r, m) is not None])
                                             if any(metric(r, m) is not None for r, _ in found) else {}),
                                          "paper": paper_value(paper, row, method, m)} for m in spec["metrics"]}
        ours = [folder for _, folder in per_method[spec.get("ours", "supconmpl")]]
        for other in (m for m in spec["methods"] if m != spec.get("ours", "supconmpl")):
            theirs = [folder for _, folder in per_method[other]]
            pairs = [(predictions(a, row.test), predictions(b, row.test)) for a, b in zip(ours, theirs)]
            entry["diffs"][other] = paired_bootstrap(pairs) if pairs else {}
        rows.append(entry)
    return rows


def fmt(c: dict) -> str:
    text = "–" if "mean" not in c else f"{100 * c['mean']:.2f}" + (
        f" ± {100 * c['std']:.2f}" if c.get("std") is not None else "")  # one seed: no spread to show
    return text + (f" ({c['paper']:.2f})" if c.get("paper") is not None else "")


def mpl_form(cfg: dict) -> str:
    """What the MPL column is, from a run's config (issue 33: the paper's comparison depends on it)."""
    o = cfg["mpl_options"]
    teacher = ("from the baseline's release (labeled training)" if o["teacher_start"] == "baseline"
               else f"from `pretrained` ({cfg['pretrained']}), no labeled training")
    uda = f"UDA on (λ_u {o['uda_weight']:g}, threshold {o['uda_threshold']:g})" if o["uda"] else "no UDA"
    ra = cfg["aug"]["unlabeled_strong"].get("randaugment", cfg["aug"]["randaugment"])
    strong = f"RandAugment {ra} on the strong view" if ra and ra[0] else "the strong view drawn as the weak one"
    return (f"MPL [24] here: vanilla MPL, {uda}, the teacher {teacher}, the student fine-tuned at batch "
            f"{o['finetune_batch'] or cfg['supcon']['batch_size']} for {cfg['mpl']['finetune_steps']} steps, {strong} "
            "(docs/differences.md: kekmodel's and the MPL paper's forms).")


def rows_form(cfg: dict) -> str:
    """What the Tar and DDT columns are, from a run's config."""
    t, d = cfg["tar"], cfg["ddt"]
    shown = "the label's half of the latent (the paper)" if t["mask_latent"] else "the whole latent (the released code)"
    return (f"Tar [34] and DDT [31] here: zero-shot, trained on the labeled sets only (neither uses unlabeled data); "
            f"Tar's decoder sees {shown}, inputs {t['input_scale']}, {t['steps']} steps at batch {t['batch_size']}; "
            f"DDT's {d['backbone']} up to layer3, d = {d['dim']}, {d['steps']} steps at batch {d['batch_size']}, its "
            "score softmax(-W) over the two modes (docs/methods.md). The paper's values for them are of its own, "
            "unstated form.")


def fewshot_form(cfg: dict) -> str:
    """What the few-shot columns are, from one of their runs' configs."""
    f = cfg["fewshot"]
    target = "; ".join(f"{s.get('root')} {s.get('subset', '')} {'+'.join(s.get('methods', []))}".replace("  ", " ")
                       if isinstance(s, dict) else str(s) for s in f["sources"])
    return (f"Few-shot columns: Tar and DDT, then fine-tuned on K = {f['k']} labeled images of each class of {target} "
            f"(training videos; Adam {f['lr']:g}, up to {f['steps']} steps, ending after {f['patience']} steps without "
            "a lower training loss). These use labels of an unknown domain, which the other columns never see.")


def render(table: int, spec: dict, rows: list[dict], seeds: list[int], demo: bool) -> str:
    methods = spec["methods"]
    over = "Mean ± std over seeds" if len(seeds) > 1 else "One seed,"
    lines = [f"# Table {table}{' (demo analogue)' if demo else ''}", "",
             f"{over} {', '.join(map(str, seeds))}, in %; the paper's value in parentheses "
             "(its AUC is computed from hard 0/1 predictions, i.e. balanced accuracy: compare it with "
             "AUC (hard)). Generated by `python -m reproduce`.", ""]
    for metric in spec["metrics"]:
        lines += [f"## {METRICS[metric]}", "", "| test | " + " | ".join(NAMES[m] for m in methods) + " |",
                  "|---" * (len(methods) + 1) + "|"]
        lines += [f"| {r['row']} | " + " | ".join(fmt(r["cells"][m][metric]) for m in methods) + " |" for r in rows]
        lines.append("")
    lines += [*spec.get("notes", []), ""] if spec.get("notes") else []
    lines += ["## SupCon-MPL minus each other method", "",
              "Difference of means over seeds, in points, with a 95% confidence interval (paired bootstrap over "
              "test videos, seeds pooled).", "",
              "| test | " + " | ".join(f"vs {NAMES[m]}: ACC / AUC" for m in methods[:-1]) + " |",
              "|---" * len(methods) + "|"]
    for r in rows:
        cells = []
        for other in methods[:-1]:
            d = r["diffs"].get(other, {})
            cells.append(" / ".join(f"{100 * d[k]['diff']:+.2f} [{100 * d[k]['lo']:+.2f}, {100 * d[k]['hi']:+.2f}]"
                                    if k in d else "–" for k in ("acc", "auc")))
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    missing = [f"- {r['row']}: {m}" for r in rows for m in r["missing"]]
    if missing:
        lines += ["", "## Missing cells", "", *missing]
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], methods: list[str], path: Path, title: str, metric: str = "acc",
           demo: bool = False) -> None:
    """A metric (ACC) per row and method: bars mean +- std over seeds, the paper's values as black marks (on the
    demo, labelled as the real-data figures they are: the bars are the demo's, the marks are not)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)) + 2.5, 4))  # + the legend, right of the bars
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        x = np.arange(len(rows)) + (k - (len(methods) - 1) / 2) * width
        cells = [r["cells"][method][metric] for r in rows]
        spread = [100 * c["std"] if c.get("std") is not None else np.nan for c in cells]  # none with one seed
        ax.bar(x, [100 * c.get("mean", np.nan) for c in cells], width, label=NAMES[method], capsize=3,
               yerr=None if np.isnan(spread).all() else spread)
        ax.scatter(x, [c["paper"] if c.get("paper") is not None else np.nan for c in cells], color="black",
                   marker="_", s=200, zorder=3,
                   label=("the paper, on real data\n(not comparable with\nthe demo's bars)" if demo else "the paper")
                   if k == 0 and any(c.get("paper") is not None for c in cells) else None)
    for i, r in enumerate(rows):  # a row without any result (an absent optional dataset) says so
        if all(r["cells"][m][metric].get("mean") is None for m in methods):
            ax.text(i, 3, "missing", ha="center", fontsize=8, color="dimgray")
    ax.set_xticks(np.arange(len(rows)), [r["row"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(rows) - 0.5)  # every row's place, an empty one too
    ax.set_ylabel(f"{METRICS.get(metric, metric)} (%)")
    title = f"{title}: {METRICS.get(metric, metric)}"
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: never over a bar
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


