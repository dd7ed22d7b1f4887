"""The run's log: <run>/log.txt and the terminal for messages, <run>/train_log.jsonl and TensorBoard for
the scalars of logged steps. Only the main process (rank 0) writes."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from engine.dist import is_main_process


def host_memory_mb() -> dict[str, float]:
    """This process's host memory in MB (Linux /proc; {} elsewhere): rss_mb, all resident pages, and
    private_mb, its anonymous and shared-memory pages, i.e. without the file pages mapped from a pack or
    from the libraries, which the kernel can drop and reread. A leak shows as private_mb growing with steps."""
    try:
        fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Rss"))
    except OSError:
        return {}
    mb = {k: float(v.split()[0]) / 1024 for k, v in fields.items()}  # kB -> MB
    private = mb.get("RssAnon", 0.0) + mb.get("RssShmem", 0.0)
    return {"rss_mb": round(private + mb.get("RssFile", 0.0), 1), "private_mb": round(private, 1)}


class RunLogger:
    """Prints and appends to <run>/log.txt; writes one JSON line per logged step to <run>/train_log.jsonl."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.main = is_main_process()
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.start = time.time()
        self.writer = None

    def info(self, msg: str) -> None:
        if not self.main:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        try:
            from tqdm import tqdm
            tqdm.write(line, file=sys.stderr)
        except ImportError:  # pragma: no cover
            print(line, file=sys.stderr)
        with open(self.run_dir / "log.txt", "a") as f:
            f.write(line + "\n")

    def scalars(self, stage: str, step: int, values: dict[str, float]) -> None:
        """One JSON line in train_log.jsonl and TensorBoard scalars `<stage>/<name>` (events in <run>/tb)."""
        if not self.main:
            return
        row = {"stage": stage, "step": step, "time": round(time.time() - self.start, 3), **values}
        with open(self.run_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        writer = self._tensorboard()
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(f"{stage}/{key}", value, step)

    def _tensorboard(self):
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: the JSON-lines log still has everything
                self.writer = False
                return None
            self.writer = SummaryWriter(str(self.run_dir / "tb"), flush_secs=10)
        return self.writer or None

    def close(self) -> None:
        if self.writer:
            self.writer.close()
            self.writer = None
