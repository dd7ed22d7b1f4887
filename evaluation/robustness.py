"""Robustness sweep (evaluate.py --perturb): every test set re-scored under each perturbation and level
(datasets/perturb.py), written as robustness.json, robustness.md (rows perturbation x level, columns AUC / ACC
per test set) and robustness.png (AUC against level, one line per test set, one panel per kind)."""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from datasets.perturb import Perturbation
from utils import atomic_write_text

KEPT = ("auc", "acc", "auc_hard", "f1", "eer", "n")  # the metrics kept per set and level


def sweep(score: Callable[[Perturbation | None], dict], clean: dict, perturbations: list[Perturbation]) -> dict:
    """{"clean": {set: metrics}, "perturbed": [{"name", "kind", "level", "sets": {set: metrics}}]}.
    `score(p)` returns evaluate()'s per-set metrics with perturbation p applied."""
    def keep(results: dict) -> dict:
        return {name: {k: m.get(k) for k in KEPT} for name, m in results.items()}

    out = {"clean": keep(clean), "perturbed": []}
    for i, p in enumerate(perturbations, 1):
        print(f"[{i}/{len(perturbations)}] scoring the test sets under {p.name}", file=sys.stderr)
        out["perturbed"].append({"name": p.name, "kind": p.kind, "level": p.level, "sets": keep(score(p))})
    return out


def _cell(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def table(result: dict) -> str:
    """Markdown: one row per perturbation and level (clean first), AUC and ACC (%) per test set."""
    sets = list(result["clean"])
    head = "| perturbation | " + " | ".join(f"{s} AUC | {s} ACC" for s in sets) + " |"
    rows = [head, "|" + " --- |" * (1 + 2 * len(sets))]
    for name, per_set in [("clean", result["clean"])] + [(r["name"], r["sets"]) for r in result["perturbed"]]:
        cells = [f"{_cell(per_set[s]['auc'])} | {_cell(per_set[s]['acc'])}" for s in sets]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write(result: dict, folder: Path, title: str, plot: bool = True) -> list[Path]:
    """robustness.json, robustness.md and (with `plot`) robustness.png in `folder`."""
    from evaluation import plots
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "robustness.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(folder / "robustness.md", f"# {title}\n\nAUC and ACC (threshold 0.5) in %.\n\n{table(result)}")
    written = [folder / "robustness.json", folder / "robustness.md"]
    figure = plots.robustness_plot(result, folder / "robustness.png", title) if plot else None
    return written + ([figure] if figure else [])
