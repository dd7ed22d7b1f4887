"""The trainings a table needs (Job): their run folders and configs, their state (finished runs are checked
against this command's config and data, and their results against their weights), and running them through
the train_*_model.sh scripts."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from engine.config import load_config
from engine.release import read_results, run_folder
from engine.run import move_aside
from reproduce.spec import FOLDER_OF, FOLDERS, SCRIPT_NAMES, SCRIPT_OF, Job
from utils import ROOT, UserError


def run_name(protocol: str, seed: int, overrides: list[str]) -> str:
    digest = hashlib.sha1(json.dumps(sorted(overrides)).encode()).hexdigest()[:8]
    return f"{protocol}-seed{seed}" + (f"-{digest}" if overrides else "")


def job_config(job: Job, overrides: list[str]) -> dict:
    return load_config(str(ROOT / "configs" / f"{job.protocol}.yaml"),
                       [*overrides, *job.extra, f"seed={job.seed}", f"run_name={job.run_name}"])


def column_folder(cfg: dict, column: str) -> Path:
    """The run folder of a table column (few-shot columns: their method's folder, in their own run)."""
    return run_folder(cfg, FOLDER_OF.get(column, column))


def status(job: Job, overrides: list[str], seen: dict | None = None) -> tuple[str, str]:
    """(state, why) of a job: finished (every method folder trained with this config and data, and evaluated on
    its own weights), unevaluated (trained so, but results.json/predictions.csv missing, damaged or of other
    weights: the job's next call evaluates again), conflict (a folder was trained with another config or other
    data: never averaged in, see --retrain), unfinished (checkpoints) or new."""
    cfg = job_config(job, overrides)
    folders = trained_folders(job, cfg)
    if not all((f / "checkpoints" / "FINISHED").is_file() for f in folders):
        return ("unfinished" if any(f.is_dir() for f in folders) else "new"), ""
    for folder in folders:
        why = training_conflict(folder, cfg, {} if seen is None else seen)
        if why:
            return "conflict", why
    problems = [why for f in (column_folder(cfg, m) for m in FOLDERS[job.script]) for why in [read_results(f)[1]] if why]
    return ("unevaluated", problems[0]) if problems else ("finished", "")


def trained_folders(job: Job, cfg: dict) -> list[Path]:
    """The run folders a job trains: its methods' (FOLDERS), and for vanilla MPL the baseline its teacher
    starts from (mpl_options.teacher_start baseline, the default release)."""
    methods = list(FOLDERS[job.script])
    o = cfg["mpl_options"]
    if job.script == "mpl" and o["teacher_start"] == "baseline" and not o["teacher_weights"]:
        methods.insert(0, "pt")
    return [column_folder(cfg, m) for m in methods]


def training_conflict(folder: Path, cfg: dict, seen: dict) -> str | None:
    """How the finished run in `folder` differs from what this command would train (its config.yaml, then the
    data its data.json records: the same roots, images and labels), or None."""
    from engine.config import config_changes
    try:
        saved = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return f"{folder} has no readable config.yaml"
    from methods import trained_config
    cfg = trained_config(folder.name, cfg)  # Tar and DDT record their own input scaling / encoder
    changed = config_changes(saved if isinstance(saved, dict) else {}, cfg)
    if changed:
        return f"{folder} was trained with {', '.join(changed[:3])} (this command's config on the right)"
    recorded = recorded_data(folder)
    if recorded is None:
        return f"{folder} does not record its data (data.json), so it cannot be checked"
    now = current_data(cfg, seen)
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


def current_data(cfg: dict, seen: dict) -> dict:
    """The data fingerprint (engine.run.data_fingerprint) a training with `cfg` would record now; `seen`: those
    already computed by this command (the runs of a protocol and seed share their data)."""
    key = json.dumps({k: cfg[k] for k in ("seed", "data", "val")}, sort_keys=True, default=str)
    if key not in seen:
        from datasets.protocols import prepare_data, training_sets
        from engine.run import data_fingerprint
        prepare_data(cfg, training=True)
        seen[key] = data_fingerprint(training_sets(cfg))
    return seen[key]


def check_inputs(job: Job, overrides: list[str], seen: dict) -> str | None:
    """What would stop a job in its first seconds, found before anything trains: its dataset roots (the training
    and test sets it would build) and the ImageNet weights it starts from. None, or the one-line problem."""
    from datasets.protocols import test_sets
    from models.weights import imagenet_state_dict, find_weights, weights_source
    cfg = job_config(job, overrides)
    try:
        current_data(cfg, seen)
        key = ("tests", json.dumps(cfg["data"], sort_keys=True, default=str))
        if key not in seen:
            seen[key] = bool(test_sets(cfg))
        script = SCRIPT_OF.get(job.script, job.script)
        backbone = cfg["ddt"]["backbone"] if script == "ddt" else cfg["backbone"]
        if cfg["pretrained"] == "imagenet" and script != "tar" and not find_weights(weights_source(backbone),
                                                                                   cfg["weights_dir"]):
            imagenet_state_dict(backbone, cfg["weights_dir"])  # its one-line error says how to supply them
    except UserError as err:
        return str(err)
    return None


def last_error(log: Path) -> str:
    """The line of a failed run's log that says why: its `error:` line, else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "")[:300]


def execute(job: Job, overrides: list[str], logs: Path) -> tuple[bool, str]:
    """Train and evaluate one job through its .sh script (always --resume: an unfinished run continues, a
    new one starts); output to <logs>/<run>-<script>.log."""
    log = log_path(job, logs)
    args = ["bash", f"train_{SCRIPT_OF.get(job.script, job.script)}_model.sh", "--config",
            f"configs/{job.protocol}.yaml", "--seed", str(job.seed), "--run-name", job.run_name, "--resume", *overrides,
            *job.extra]
    with open(log, "w") as f:
        f.write("$ " + " ".join(args) + "\n")
        f.flush()
        # in reproduce's process group (Ctrl-C on a terminal, or a kill of the group, reaches the whole tree); a
        # signal to reproduce alone is forwarded to the tree
        proc = subprocess.Popen(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        try:
            code = follow(proc, log)
        except Signalled as stop:
            forward(proc, stop.signum)
            raise
    return code == 0, str(log)


def follow(proc: subprocess.Popen, log: Path) -> int:
    """Wait for a job, printing its log's newest line every few seconds (engine.progress.interval), so that
    reproduce's own output shows where each run is, on a terminal or in a file. Returns its exit status."""
    from engine.progress import interval
    every, shown, last = interval(), "", time.time()
    while True:
        try:
            return proc.wait(timeout=min(1.0, every) if every > 0 else 0.2)
        except subprocess.TimeoutExpired:
            pass
        if time.time() - last >= every:
            last = time.time()
            newest = last_line(log)
            if newest and newest != shown:
                print(f"    | {newest}", file=sys.stderr, flush=True)
                shown = newest


def last_line(log: Path) -> str:
    """The last complete, non-empty line of a log (its final 4 kB read)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.split("\n")[:-1] if line.strip()]
    return lines[-1][:200] if lines else ""


def log_path(job: Job, logs: Path) -> Path:
    return logs / f"{job.run_name}-{job.script}.log"


class Signalled(BaseException):
    """SIGINT or SIGTERM reached reproduce (see catch_signals)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def catch_signals():
    """While inside: SIGINT and SIGTERM raise Signalled in reproduce, so that the running job gets the signal
    too (execute forwards it); the previous handlers come back after."""
    def handler(signum, _frame):
        raise Signalled(signum)
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def forward(proc: subprocess.Popen, signum: int, grace: float = 300) -> None:
    """Send `signum` to the job's processes (the wrapper and its training, which saves a checkpoint and stops:
    --resume continues it) and wait for them; after `grace` seconds, kill what is left."""
    tree = [proc.pid, *descendants(proc.pid)]
    for pid in tree:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux /proc; none elsewhere)."""
    parent_of = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent_of[int(entry.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parent_of.items() if parent in frontier]
        found += children
        frontier = children
    return found


def run_jobs(jobs: list[Job], overrides: list[str], out: Path, dry_run: bool, retrain: bool = False) -> dict[Job, str]:
    """Runs what is not finished; returns {job: problem} for the jobs that failed. A finished run trained with
    other settings or data than this command's stops everything before it starts (one line), unless `retrain`:
    then its folders are moved aside (<method>.old-<time>) and it is trained again."""
    seen: dict = {}
    states = {job: status(job, overrides, seen) for job in jobs}
    conflicts = [(job, why) for job, (state, why) in states.items() if state == "conflict"]
    if conflicts and not retrain and not dry_run:
        raise UserError(f"{len(conflicts)} finished run(s) of this table were trained differently from what this "
                        f"command would train, e.g. {conflicts[0][1]}: a table never averages such runs; pass "
                        "--retrain to train them again (the old folders are moved aside), or give these runs "
                        "other names (an override)")
    # what would stop a run in its first seconds stops the command now, before anything trains
    blocked = {job: why for job in jobs if states[job][0] != "finished"
               for why in [check_inputs(job, overrides, seen)] if why}
    if blocked and not dry_run:
        job, why = next(iter(blocked.items()))
        raise UserError(f"{job.protocol} seed {job.seed}, {SCRIPT_NAMES[job.script]}: {why}"
                        + (f" ({len(blocked) - 1} more run(s) blocked; --dry-run lists them)" if len(blocked) > 1 else ""))
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    failed = {}
    for i, job in enumerate(jobs, 1):
        state, why = states[job]
        line = f"[{i}/{len(jobs)}] {job.protocol} seed {job.seed}: {SCRIPT_NAMES[job.script]} ({state})"
        if dry_run or state == "finished":
            print(line + (" - skipped" if state == "finished" else
                          f" - cannot run: {blocked[job]}" if job in blocked else
                          f" - would run{f' ({why})' if why else ''}"), file=sys.stderr)
            continue
        if state == "conflict":
            for folder in trained_folders(job, job_config(job, overrides)):
                if folder.is_dir():
                    print(f"    --retrain: {folder} -> {move_aside(folder, 'reproduce --retrain')}", file=sys.stderr)
        start = time.time()
        print(line + (f" ({why})" if state == "unevaluated" else "") + f" ... (log: {log_path(job, logs)})",
              file=sys.stderr, flush=True)
        ok, log = execute(job, overrides, logs)
        print(f"    {'done' if ok else 'FAILED'} in {time.time() - start:.0f} s"
              + ("" if ok else f": {last_error(Path(log))}"), file=sys.stderr, flush=True)
        if not ok:
            failed[job] = f"training or evaluation failed ({last_error(Path(log))}), see {log}"
    return failed


