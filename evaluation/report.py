"""Collect runs into one report: per metric (ACC, AUC, F1) a table of methods by test set, the plots linked
(Markdown) or embedded (--html: one self-contained page with each run's metadata, config changes from the
defaults and weights record; evaluation/html.py).

  python -m evaluation.report runs/demo                          # the method folders of one run
  python -m evaluation.report runs/demo/pt runs/other/supconmpl --out reports   # reports/report.md
  python -m evaluation.report runs/demo --html runs/demo/report.html            # a page to share
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from evaluation.metrics import test_results
from utils import HelpFormatter, UserError, atomic_write_text, run_cli

# the paper's order: the baselines, then SupCon and SupCon-MPL
NAMES = {"pt": "Baseline", "tar": "Tar", "ddt": "DDT", "mpl": "MPL", "supcon": "SupCon", "supconmpl": "SupCon-MPL"}
METRICS = {"acc": "ACC", "auc": "AUC", "f1": "F1"}
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


def ordered(folders: list[Path]) -> list[Path]:
    """Method folders in the paper's order (NAMES), others last, each run's together."""
    rank = {m: i for i, m in enumerate(NAMES)}
    return sorted(folders, key=lambda f: (str(f.parent), rank.get(f.name, len(rank)), f.name))


def label(folder: Path, folders: list[Path]) -> str:
    name = NAMES.get(folder.name, folder.name)
    return f"{name} ({folder.parent.name})" if len({f.parent for f in folders}) > 1 else name


def tables(runs: list[tuple[Path, dict]]) -> list[str]:
    """Markdown: per metric, methods by test set (split in the header)."""
    folders = [f for f, _ in runs]
    tests = list(dict.fromkeys(name for _, res in runs for name in res))
    split = {t: next((r[t]["split"] for _, r in runs if t in r), None) or "test" for t in tests}
    pct = lambda v: "–" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = []
    for key, metric in METRICS.items():
        lines += [f"## {metric}", "", "| method | " + " | ".join(f"{t} ({split[t]})" for t in tests) + " |",
                  "|" + " --- |" * (len(tests) + 1)]
        lines += [f"| {label(f, folders)} | " + " | ".join(pct(res[t].get(key)) if t in res else "–" for t in tests)
                  + " |" for f, res in runs]
        lines.append("")
    return lines


def detail(results: dict) -> list[str]:
    """Markdown: one run's every metric per test set (video level and DeepfakeBench's definitions where there)."""
    pct = lambda v: "–" if v is None else f"{100 * v:.2f}"  # noqa: E731
    cols = [("ACC", "acc"), ("AUC", "auc"), ("AUC (hard)", "auc_hard"), ("F1", "f1"), ("EER", "eer"), ("AP", "ap")]
    dfb = any(m.get("deepfakebench") for m in results.values())  # their columns only where some set has them
    lines = ["| test set | split | " + " | ".join(c for c, _ in cols) + " | N | video AUC |"
             + (" DFB frame AUC | DFB video AUC |" if dfb else ""), "|" + " --- |" * (len(cols) + 4 + 2 * dfb)]
    for name, m in results.items():
        theirs = m.get("deepfakebench") or {}
        lines.append(f"| {name} | {m.get('split') or '–'} | " + " | ".join(pct(m.get(k)) for _, k in cols)
                     + f" | {m.get('n', 0)} | {pct((m.get('video') or {}).get('auc'))} |"
                     + (f" {pct(theirs.get('auc'))} | {pct(theirs.get('video_auc'))} |" if dfb else ""))
    return lines


def render(folders: list[Path], out_dir: Path) -> str:
    folders = ordered(folders)
    runs = [(f, test_results(checked_results(f))) for f in folders]
    lines = ["# Results", "", "Metrics in %, fake = positive class; known / unknown as configured.", "",
             *tables(runs), "## Plots", ""]
    for folder, _ in runs:
        links = [f"[{png}]({os.path.relpath(folder / png, out_dir)})" for png in
                 FIGURES if (folder / png).is_file()]
        lines.append(f"- {label(folder, folders)}: " + (", ".join(links) if links else "no plots"))
    return "\n".join(lines) + "\n"


def render_html(folders: list[Path]) -> str:
    """One page: the metric tables, then per run its metadata, config changes, weights record and plots."""
    from engine.config import config_changes, DEFAULTS
    from evaluation import html
    from utils import parse_yaml
    folders = ordered(folders)
    runs = [(f, checked_results(f)) for f in folders]
    body = [html.markdown("\n".join(["# Results", "", "Metrics in %, fake = positive class.", "",
                                     *tables([(f, test_results(r)) for f, r in runs])]))]
    for folder, results in runs:
        body.append(f"<h2>{html.escape(label(folder, folders))} <small>{html.escape(str(folder))}"
                    "</small></h2>")
        produced = results.get("produced_by") or {}
        machine = {k: v for k, v in (produced.get("machine") or {}).items() if k not in ("torch", "python")}
        body.append(html.meta_table({**{k: v for k, v in produced.items() if k not in ("versions", "machine")},
                                     **(produced.get("versions") or {}), **machine,
                                     "weights": ", ".join(f"{Path(p).name} (sha256 {h[:12]}…)" for p, h in
                                                          (results.get("weights") or {}).get("files", {}).items()),
                                     "missing test sets": results.get("missing")}))
        try:
            cfg = parse_yaml((folder / "config.yaml").read_text(), str(folder / "config.yaml"))
            changes = config_changes(DEFAULTS, cfg) if isinstance(cfg, dict) else []
            body.append("<p>config changes from the defaults (default -> this run):</p><pre>"
                        + html.escape("\n".join(changes) or "none") + "</pre>")
        except (OSError, UserError):
            body.append("<p>no config.yaml beside these results (not a run folder)</p>")
        body.append(html.markdown("\n".join(detail(test_results(results)))))
        body += [html.image(folder / png, png) for png in FIGURES if (folder / png).is_file()]
    return html.page("Results: " + ", ".join(label(f, folders) for f in folders), body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (runs/<name>) or method folders (runs/<name>/<method>)")
    p.add_argument("--out", help="folder to write report.md into (default: print it)")
    p.add_argument("--md", help="write the Markdown to this file instead")
    p.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page (plots embedded, each "
                                                  "run's metadata and config changes) to FILE")
    args = p.parse_args(argv)
    folders = method_folders(args.runs)
    if args.html:
        atomic_write_text(Path(args.html), render_html(folders))
        print(f"page: {args.html}", file=sys.stderr)
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
