"""python -m reproduce: see reproduce/__init__.py."""
from __future__ import annotations

import argparse
import json
import sys
import time

import yaml

import reproduce
from reproduce import bench
from engine.run import RunLock
from reproduce.jobs import Signalled, catch_signals, job_config, run_jobs, run_name
from reproduce.spec import Job, table_spec
from reproduce.tables import collect, fewshot_form, figure, mpl_form, render, rows_form
from utils import HelpFormatter, ROOT, UserError, atomic_write_text, resolve_path, run_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reproduce", description=reproduce.__doc__,
                                formatter_class=HelpFormatter,
                                epilog="examples:\n  python -m reproduce --table 1 --demo --seeds 3\n"
                                       "  python -m reproduce --table 2 --seeds 3 data.paths_file=my_paths.yaml")
    p.add_argument("--table", choices=("1", "2", "dfb", "df40", "adapt"), required=True,
                   help="the paper's Table 1 or Table 2; dfb: DeepfakeBench's cross-dataset protocol beside its "
                        "published rows; df40: DF40's methods by family; adapt: SupCon-MPL without and with a new "
                        "generator's unlabeled images (data.paths.unlabeled=DIR; the demo's: NeuralTextures)")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds (777, 778, ...; default 3)")
    p.add_argument("--demo", action="store_true", help="the embedded demo's analogues (configs/demo*.yaml)")
    p.add_argument("--fewshot", type=int, default=0, metavar="K",
                   help="Table 2: also Tar and DDT transferred with K labeled images of each class of NeuralTextures "
                        "(FF++ training videos; reproduce/spec.py fewshot_target); default 0: the zero-shot rows only")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they exist; train nothing")
    p.add_argument("--retrain", action="store_true",
                   help="train again the finished runs whose config or data differ from this command's (their "
                        "folders are moved aside to <method>.old-<time>); without it such runs stop the command")
    p.add_argument("--out", default="reproduce", help="folder for the table, its figure and the logs (default: "
                                                      "reproduce)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.table == "adapt" and not args.demo and not any(o.startswith("data.paths.unlabeled=") and
                                                           o.partition("=")[2] for o in args.overrides):
        raise UserError("--table adapt needs the new generator's images: data.paths.unlabeled=DIR (a folder of "
                        "images without labels, or a DeepfakeBench JSON's list)")
    if args.fewshot < 0 or (args.fewshot and args.table != "2"):
        raise UserError(f"--fewshot K needs --table 2 and K >= 1, got --table {args.table} --fewshot {args.fewshot}")
    out = resolve_path(args.out)
    # one reproduce per --out folder: two would overwrite each other's logs and tables
    lock = RunLock(out).acquire(True, "python -m reproduce", "wait until it ends, or choose another --out", "folder")
    try:
        with catch_signals():
            return reproduce_table(args, out)
    except Signalled as stop:
        print(f"stopped by signal {stop.signum}: the running training saved a checkpoint; the same command "
              "continues it", file=sys.stderr)
        return 128 + stop.signum
    finally:
        lock.release()


def reproduce_table(args: argparse.Namespace, out) -> int:
    start = time.time()
    spec = (bench.bench_spec(args.table, args.demo) if args.table in bench.BENCH_TABLES
            else table_spec(int(args.table), args.demo, args.fewshot))
    seeds = [777 + i for i in range(args.seeds)]
    protocols = list(dict.fromkeys(r.protocol for r in spec["rows"]))
    extra = spec.get("extra", {})
    jobs = [Job(pr, s, script, run_name(pr, s, [*args.overrides, *extra.get(script, ())]), extra.get(script, ()))
            for pr in protocols for s in seeds for script in spec["scripts"]]
    for job in jobs[:1]:
        job_config(job, args.overrides)  # a bad override stops here, before anything runs
    failed = run_jobs(jobs, args.overrides, out, args.dry_run, args.retrain)
    if args.dry_run:
        return 0
    paper = yaml.safe_load((ROOT / "reproduce" / "paper-tables.yaml").read_text())
    rows = collect(spec, jobs, args.overrides, failed, paper)
    stem = bench.stem(args.table, args.demo)
    spec["notes"] = [line for line in (
        rows_form(job_config(next(j for j in jobs if j.script == "ddt"), args.overrides))
        if "ddt" in spec["scripts"] else None,
        fewshot_form(job_config(next(j for j in jobs if j.script == "ddt_fewshot"), args.overrides))
        if "ddt_fewshot" in spec["scripts"] else None,
        mpl_form(job_config(next(j for j in jobs if j.script == "mpl"), args.overrides))
        if "mpl" in spec["methods"] else None) if line]
    from datasets.protocols import missing_sets  # the protocol's absent optional datasets: named columns
    missing = missing_sets(job_config(jobs[0], args.overrides)) if args.table in bench.BENCH_TABLES else {}
    if args.table in bench.BENCH_TABLES:
        text = bench.render_bench(args.table, spec, rows, seeds, args.demo, missing)
    else:
        text = render(int(args.table), spec, rows, seeds, args.demo)
    atomic_write_text(out / f"{stem}.md", text)
    number = int(args.table) if args.table in ("1", "2") else args.table
    atomic_write_text(out / f"{stem}.json", json.dumps({"table": number, "demo": args.demo, "seeds": seeds,
                                                        "overrides": args.overrides, "rows": rows,
                                                        "wall_s": round(time.time() - start, 1)}, indent=1) + "\n")
    name = f"Table {args.table}" if args.table in ("1", "2") else args.table
    figure(rows, spec["methods"], out / f"{stem}.png", f"{name}{' (demo)' if args.demo else ''}", spec["metrics"][0],
           args.demo)
    from evaluation.html import table_page  # the same, as one page to share (the figure embedded)
    atomic_write_text(out / f"{stem}.html", table_page(text, out / f"{stem}.png", f"{name}{' (demo)' * args.demo}",
                                                          len(seeds)))
    print(text)
    print(f"written: {out / stem}.md, .json, .png, .html ({time.time() - start:.0f} s)", file=sys.stderr)
    # an absent optional dataset is a named column, not a failure
    return 1 if failed or any(r["missing"] for r in rows if r["test"] not in missing) else 0


if __name__ == "__main__":
    run_cli(main)
