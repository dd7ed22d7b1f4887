"""Reproduce the paper's Table 1 or Table 2 in one command, with seeds and confidence intervals.

  python -m reproduce --table 1 [--seeds 3] [key=value ...]     # real data (configs/paths.yaml)
  python -m reproduce --table 2 --demo --seeds 1                # the embedded demo's analogues
  bash reproduce.sh --table 1 --dry-run                         # what would run, and what exists

It runs every training the table needs (Table 1: ff_wo_df/f2f/fs/nt x baseline and SupCon-MPL, whose run
also trains and evaluates the SupCon teacher; Table 2: sin x vanilla MPL and SupCon-MPL) once per seed
(777, 778, ...) through the train_*_model.sh scripts, each into its own run folder
<out_dir>/<protocol>-seed<seed>[-<hash of the overrides>]. Finished runs are skipped; unfinished ones are
resumed (--resume). Then it writes <out>/table<N>[-demo].md, .json and .png: every cell mean +- std over
seeds with the paper's value beside it, AUC in both definitions (from scores, and the paper's from hard
predictions), and SupCon-MPL minus each other method with a 95% confidence interval (paired bootstrap over
test videos, seeds pooled). A cell without a result is named, with the reason. The paper's numbers come
from reproduce/paper-tables.yaml (transcribed from the two result images of the authors' README).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from config import load_config
from engine.release import read_results, run_folder
from engine.run import move_aside
from metrics import test_results
from utils import ROOT, UserError, atomic_write_text, resolve_path, run_cli

NAMES = {"pt": "Pretrained", "mpl": "MPL", "supcon": "SupCon", "supconmpl": "SupCon-MPL"}
SCRIPT_NAMES = {"pt": "baseline", "mpl": "MPL", "supconmpl": "SupCon teacher + SupCon-MPL"}
FOLDERS = {"pt": ["pt"], "mpl": ["mpl"], "supconmpl": ["supcon", "supconmpl"]}  # script -> method folders it fills
LEFT_OUT = {"df": "Deepfakes", "f2f": "Face2Face", "fs": "FaceSwap", "nt": "NeuralTextures"}
SHORT = {"Deepfakes": "DF", "Face2Face": "F2F", "FaceSwap": "FS", "NeuralTextures": "NT"}
METRICS = {"acc": "ACC", "auc": "AUC (scores)", "auc_hard": "AUC (hard; the paper's)", "f1": "F1"}


@dataclass(frozen=True)
class Row:
    protocol: str   # config name
    test: str       # test set name in that config
    label: str      # the row as the paper names it
    paper: tuple    # where its numbers are in paper-tables.yaml


@dataclass(frozen=True)
class Job:
    protocol: str
    seed: int
    script: str     # pt, mpl or supconmpl: train_<script>_model.sh
    run_name: str


def table_spec(table: int, demo: bool) -> dict:
    """Rows, methods (columns), the scripts that train them, and the metrics of a table."""
    if table == 1:
        rows = []
        for key, name in LEFT_OUT.items():
            protocol = f"{'demo_wo' if demo else 'ff_wo'}_{key}"
            others = "+".join(SHORT[m] for m in LEFT_OUT.values() if m != name)
            rows += [Row(protocol, name, f"{SHORT[name]} (unknown)", ("table1", name, "unknown")),
                     Row(protocol, "Known", f"{others} (known)", ("table1", name, "known"))]
        return {"rows": rows, "methods": ["pt", "supcon", "supconmpl"], "scripts": ["pt", "supconmpl"],
                "metrics": ["acc", "auc", "auc_hard", "f1"]}
    protocol = "demo" if demo else "sin"
    rows = [Row(protocol, "Known", "Scenario Deepfakes (Known)", ("table2", 0)),
            Row(protocol, "NeuralTextures", "Current-Generation Deepfakes (Unknown)", ("table2", 1)),
            Row(protocol, "StyleGAN", "Post-Generation Deepfakes (Unknown)", ("table2", 2))]
    return {"rows": rows, "methods": ["mpl", "supcon", "supconmpl"], "scripts": ["mpl", "supconmpl"],
            "metrics": ["acc", "auc", "auc_hard"]}


def paper_value(paper: dict, row: Row, method: str, metric: str) -> float | None:
    """The paper's number for a cell (its AUC is the hard-prediction one), or None if it has none."""
    if row.paper[0] == "table1":
        entry = next(r for r in paper["table1"]["rows"] if r["left_out"] == row.paper[1] and r["split"] == row.paper[2])
        column = {"acc": 0, "auc_hard": 1, "f1": 2}.get(metric)
        values = entry.get("pretrained" if method == "pt" else method)
        return None if column is None or values is None else values[column]
    name = {"mpl": "MPL", "supcon": "SupCon", "supconmpl": "SupCon-MPL"}[method]
    return paper["table2"]["rows"][name][row.paper[1]] if metric == "acc" else None


# ----------------------------------------------------------------------------------------------- runs
def run_name(protocol: str, seed: int, overrides: list[str]) -> str:
    digest = hashlib.sha1(json.dumps(sorted(overrides)).encode()).hexdigest()[:8]
    return f"{protocol}-seed{seed}" + (f"-{digest}" if overrides else "")


def job_config(job: Job, overrides: list[str]) -> dict:
    return load_config(str(ROOT / "configs" / f"{job.protocol}.yaml"),
                       [*overrides, f"seed={job.seed}", f"run_name={job.run_name}"])


def status(job: Job, overrides: list[str]) -> tuple[str, str]:
    """(state, why) of a job: finished (every method folder trained with this config and data, and evaluated on
    its own weights), unevaluated (trained so, but results.json/predictions.csv missing, damaged or of other
    weights: the job's next call evaluates again), conflict (a folder was trained with another config or other
    data: never averaged in, see --retrain), unfinished (checkpoints) or new."""
    cfg = job_config(job, overrides)
    folders = [run_folder(cfg, m) for m in FOLDERS[job.script]]
    if not all((f / "checkpoints" / "FINISHED").is_file() for f in folders):
        return ("unfinished" if any(f.is_dir() for f in folders) else "new"), ""
    for folder in folders:
        why = training_conflict(folder, cfg)
        if why:
            return "conflict", why
    problems = [why for f in folders for why in [read_results(f)[1]] if why]
    return ("unevaluated", problems[0]) if problems else ("finished", "")


def training_conflict(folder: Path, cfg: dict) -> str | None:
    """How the finished run in `folder` differs from what this command would train (its config.yaml, then the
    data its data.json records: the same roots, images and labels), or None."""
    from config import config_changes
    try:
        saved = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return f"{folder} has no readable config.yaml"
    changed = config_changes(saved if isinstance(saved, dict) else {}, cfg)
    if changed:
        return f"{folder} was trained with {', '.join(changed[:3])} (this command's config on the right)"
    recorded = recorded_data(folder)
    if recorded is None:
        return f"{folder} does not record its data (data.json), so it cannot be checked"
    now = current_data(cfg)
    if recorded != now:
        count = lambda fp, name: (fp.get(name) or {}).get("images", 0)  # noqa: E731
        names = [n for n in sorted(set(recorded) | set(now)) if recorded.get(n) != now.get(n)]
        changes = ", ".join(f"{n}: {count(recorded, n)} -> {count(now, n)} images" for n in names)
        return f"{folder} was trained on other data than the dataset roots give now ({changes})"
    return None


def recorded_data(folder: Path) -> dict | None:
    """The data fingerprint a run recorded: data.json, or (runs from before it) its newest checkpoint's."""
    try:
        return json.loads((folder / "data.json").read_text())["data"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = sorted((folder / "checkpoints").glob("ckpt-*.tar"))
    if not found:
        return None
    import torch
    try:
        return torch.load(found[-1], map_location="cpu", weights_only=True, mmap=True).get("data")
    except Exception:  # noqa: BLE001 (a damaged checkpoint: nothing recorded)
        return None


_DATA: dict[str, dict] = {}


def current_data(cfg: dict) -> dict:
    """The data fingerprint (engine.run.data_fingerprint) a training with `cfg` would record now."""
    key = json.dumps({k: cfg[k] for k in ("seed", "data", "val")}, sort_keys=True, default=str)
    if key not in _DATA:
        from datasets.protocols import prepare_data, training_sets
        from engine.run import data_fingerprint
        prepare_data(cfg, training=True)
        _DATA[key] = data_fingerprint(training_sets(cfg))
    return _DATA[key]


def execute(job: Job, overrides: list[str], logs: Path) -> tuple[bool, str]:
    """Train and evaluate one job through its .sh script (always --resume: an unfinished run continues, a
    new one starts); output to <logs>/<run>-<script>.log."""
    log = logs / f"{job.run_name}-{job.script}.log"
    args = ["bash", f"train_{job.script}_model.sh", "--config", f"configs/{job.protocol}.yaml", "--seed",
            str(job.seed), "--run-name", job.run_name, "--resume", *overrides]
    with open(log, "w") as f:
        f.write("$ " + " ".join(args) + "\n")
        f.flush()
        code = subprocess.call(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    return code == 0, str(log)


def run_jobs(jobs: list[Job], overrides: list[str], out: Path, dry_run: bool, retrain: bool = False) -> dict[Job, str]:
    """Runs what is not finished; returns {job: problem} for the jobs that failed. A finished run trained with
    other settings or data than this command's stops everything before it starts (one line), unless `retrain`:
    then its folders are moved aside (<method>.old-<time>) and it is trained again."""
    states = {job: status(job, overrides) for job in jobs}
    conflicts = [(job, why) for job, (state, why) in states.items() if state == "conflict"]
    if conflicts and not retrain and not dry_run:
        raise UserError(f"{len(conflicts)} finished run(s) of this table were trained differently from what this "
                        f"command would train, e.g. {conflicts[0][1]}: a table never averages such runs; pass "
                        "--retrain to train them again (the old folders are moved aside), or give these runs "
                        "other names (an override)")
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    failed = {}
    for i, job in enumerate(jobs, 1):
        state, why = states[job]
        line = f"[{i}/{len(jobs)}] {job.protocol} seed {job.seed}: {SCRIPT_NAMES[job.script]} ({state})"
        if dry_run or state == "finished":
            print(line + (" - skipped" if state == "finished" else f" - would run{f' ({why})' if why else ''}"),
                  file=sys.stderr)
            continue
        if state == "conflict":
            cfg = job_config(job, overrides)
            for folder in (run_folder(cfg, m) for m in FOLDERS[job.script]):
                if folder.is_dir():
                    print(f"    --retrain: {folder} -> {move_aside(folder, 'reproduce --retrain')}", file=sys.stderr)
        start = time.time()
        print(line + (f" ({why})" if state == "unevaluated" else "") + " ...", file=sys.stderr, flush=True)
        ok, log = execute(job, overrides, logs)
        print(f"    {'done' if ok else 'FAILED'} in {time.time() - start:.0f} s (log: {log})", file=sys.stderr)
        if not ok:
            failed[job] = f"training or evaluation failed, see {log}"
    return failed


# ----------------------------------------------------------------------------------------------- results
def load_results(job: Job, method: str, overrides: list[str]) -> tuple[dict | None, Path, str | None]:
    """(test results, folder, None) of a method's run folder, or (None, folder, why they cannot be used):
    only results of the run's own release files, as they are now, count."""
    folder = run_folder(job_config(job, overrides), method)
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
    from metrics import roc_auc
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
            entry["cells"][method] = {m: {**(cell([r[m] for r, _ in found if r.get(m) is not None])
                                             if any(r.get(m) is not None for r, _ in found) else {}),
                                          "paper": paper_value(paper, row, method, m)} for m in spec["metrics"]}
        ours = [folder for _, folder in per_method["supconmpl"]]
        for other in spec["methods"][:-1]:
            theirs = [folder for _, folder in per_method[other]]
            pairs = [(predictions(a, row.test), predictions(b, row.test)) for a, b in zip(ours, theirs)]
            entry["diffs"][other] = paired_bootstrap(pairs) if pairs else {}
        rows.append(entry)
    return rows


def fmt(c: dict) -> str:
    text = "–" if "mean" not in c else f"{100 * c['mean']:.2f}" + (
        f" ± {100 * c['std']:.2f}" if c.get("std") is not None else "")  # one seed: no spread to show
    return text + (f" ({c['paper']:.2f})" if c.get("paper") is not None else "")


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
    if table == 2:
        lines += ["Tar [34] and DDT [31] of the paper's Table 2 are not implemented (no code in the authors' "
                  "repository).", ""]
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


def figure(rows: list[dict], methods: list[str], path: Path, title: str) -> None:
    """ACC per row and method: bars mean +- std over seeds, the paper's values as black marks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        x = np.arange(len(rows)) + (k - (len(methods) - 1) / 2) * width
        cells = [r["cells"][method]["acc"] for r in rows]
        ax.bar(x, [100 * c.get("mean", np.nan) for c in cells], width, yerr=[100 * (c.get("std") or 0) for c in cells],
               label=NAMES[method], capsize=3)
        ax.scatter(x, [c["paper"] if c.get("paper") is not None else np.nan for c in cells], color="black",
                   marker="_", s=200, zorder=3, label="paper" if k == 0 else None)
    ax.set_xticks(np.arange(len(rows)), [r["row"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("ACC (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  python -m reproduce --table 1 --demo --seeds 3\n"
                                       "  python -m reproduce --table 2 --seeds 3 data.paths_file=my_paths.yaml")
    p.add_argument("--table", type=int, choices=(1, 2), required=True, help="the paper's Table 1 or Table 2")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds (777, 778, ...; default 3)")
    p.add_argument("--demo", action="store_true", help="the embedded demo's analogues (configs/demo*.yaml)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they exist; train nothing")
    p.add_argument("--retrain", action="store_true",
                   help="train again the finished runs whose config or data differ from this command's (their "
                        "folders are moved aside to <method>.old-<time>); without it such runs stop the command")
    p.add_argument("--out", default="reproduce", help="folder for the table, its figure and the logs")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = p.parse_args(argv)
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    start = time.time()
    spec = table_spec(args.table, args.demo)
    seeds = [777 + i for i in range(args.seeds)]
    protocols = list(dict.fromkeys(r.protocol for r in spec["rows"]))
    jobs = [Job(pr, s, script, run_name(pr, s, args.overrides)) for pr in protocols for s in seeds
            for script in spec["scripts"]]
    for job in jobs[:1]:
        job_config(job, args.overrides)  # a bad override stops here, before anything runs
    out = resolve_path(args.out)
    failed = run_jobs(jobs, args.overrides, out, args.dry_run, args.retrain)
    if args.dry_run:
        return 0
    paper = yaml.safe_load((ROOT / "reproduce" / "paper-tables.yaml").read_text())
    rows = collect(spec, jobs, args.overrides, failed, paper)
    stem = f"table{args.table}" + ("-demo" if args.demo else "")
    text = render(args.table, spec, rows, seeds, args.demo)
    atomic_write_text(out / f"{stem}.md", text)
    atomic_write_text(out / f"{stem}.json", json.dumps({"table": args.table, "demo": args.demo, "seeds": seeds,
                                                        "overrides": args.overrides, "rows": rows,
                                                        "wall_s": round(time.time() - start, 1)}, indent=1) + "\n")
    figure(rows, spec["methods"], out / f"{stem}.png", f"Table {args.table}{' (demo)' if args.demo else ''}: ACC")
    print(text)
    print(f"written: {out / stem}.md, .json, .png ({time.time() - start:.0f} s)", file=sys.stderr)
    return 1 if failed or any(r["missing"] for r in rows) else 0


if __name__ == "__main__":
    run_cli(main)
