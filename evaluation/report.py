"""Collect runs into one Markdown table in the paper's format (ACC / AUC / F1 per test set and method),
with the plots linked.

  python -m evaluation.report runs/demo                          # the pt, supcon and supconmpl folders of one run
  python -m evaluation.report runs/demo/pt runs/other/supconmpl --out reports   # reports/report.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from evaluation.metrics import test_results
from utils import HelpFormatter, UserError, atomic_write_text, run_cli

NAMES = {"pt": "Baseline", "supcon": "SupCon", "supconmpl": "SupCon-MPL", "mpl": "MPL", "ddt": "DDT", "tar": "Tar"}
# What evaluate.py may leave beside results.json (plots, --perturb, --cam): linked when present.
FIGURES = ("roc.png", "training_curves.png", "embedding.png", "reliability.png", "robustness.png",
           "cam/contact_sheet.png")


def method_folders(paths: list[str]) -> list[Path]:
    """Each path is a method folder (holding results.json) or a run folder holding method folders."""
    out = []
    for raw in paths:
        p = Path(raw)
        if (p / "results.json").is_file():
            out.append(p)
        elif p.is_dir() and any((p / m / "results.json").is_file() for m in NAMES):
            out += [p / m for m in NAMES if (p / m / "results.json").is_file()]
        else:
            raise UserError(f"no results.json in {p} or its {'/'.join(NAMES)} folders (run evaluate.py first)")
    return out


def checked_results(folder: Path) -> dict:
    """A folder's results.json, once its weights record is checked: a run folder's must be of the release files
    there as they are now; an evaluation of other weights (evaluate.py's evaluations/ folders) must name files
    that are still what it scored. Anything else is a one-line UserError."""
    from engine.release import RELEASE, read_results, verify_results_record
    results, problem = read_results(folder)
    if results is not None:
        return results
    if any((folder / name).exists() for files in RELEASE.values() for name in files.values()):
        raise UserError(f"{problem}: evaluate the run again (python evaluate.py ...)")
    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{folder / 'results.json'} is damaged (not the JSON evaluate.py writes)") from None
    verify_results_record(folder, results)
    return results


def render(folders: list[Path], out_dir: Path) -> str:
    runs = [(f, test_results(checked_results(f))) for f in folders]
    label = lambda f: f"{NAMES.get(f.name, f.name)} ({f.parent.name})" if len({x.parent for x, _ in runs}) > 1 \
        else NAMES.get(f.name, f.name)  # noqa: E731
    tests = list(dict.fromkeys(name for _, res in runs for name in res))
    pct = lambda v: "–" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = ["# Results", "", "Metrics in %, fake = positive class; known / unknown as configured.", ""]
    head = "| method | " + " | ".join(f"{t} ({next((r[t]['split'] for _, r in runs if t in r), None) or 'test'}) "
                                      "ACC / AUC / F1" for t in tests) + " |"
    lines += [head, "|" + " --- |" * (len(tests) + 1)]
    for folder, res in runs:
        cells = [" / ".join(pct(res[t].get(k)) for k in ("acc", "auc", "f1")) if t in res else "–" for t in tests]
        lines.append(f"| {label(folder)} | " + " | ".join(cells) + " |")
    lines += ["", "## Plots", ""]
    for folder, _ in runs:
        links = [f"[{png}]({os.path.relpath(folder / png, out_dir)})" for png in
                 FIGURES if (folder / png).is_file()]
        lines.append(f"- {label(folder)}: " + (", ".join(links) if links else "no plots"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (runs/<name>) or method folders (runs/<name>/<method>)")
    p.add_argument("--out", help="folder to write report.md into (default: print it)")
    p.add_argument("--md", help="write the Markdown to this file instead")
    args = p.parse_args(argv)
    folders = method_folders(args.runs)
    out = Path(args.md) if args.md else Path(args.out) / "report.md" if args.out else None
    text = render(folders, out.parent if out else Path.cwd())
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
        print(f"report: {out}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    run_cli(main)
