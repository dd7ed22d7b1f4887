"""The data path alone (benchmark.py's data-path table): images/s delivered by each loader and worker count
(PIL per image as the reference-style steps load, our per-image path from files, the pack with batched
augmentation on the device), and per CPU core."""
from __future__ import annotations

import contextlib
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data_path(cfg: dict, items: list, samples: list, device: torch.device, workers: list[int], batches: int,
              batch: int) -> list[dict]:
    """Images/s delivered (two views per image counted as two) by each loader, with one torch thread."""
    from bench.reference import pil_batches
    from datasets.loaders import train_batches
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-core figures: one thread of arithmetic in the main process
    try:
        for w in workers:
            for name, make in (
                ("PIL per image (reference-style)", lambda: pil_batches(items, cfg, batch, 2, w)),
                ("files, cv2 + v2 per image (ours, no pack)",
                 lambda: train_batches(samples, {**cfg, "workers": w, "data": {**cfg["data"], "packed": None}},
                                       batch, 2, False, "bench", 0, device)),
            ):
                rows.append(_time_loader(name, w, make(), batches, batch, device))
        where = "GPU" if device.type == "cuda" else "CPU"
        rows.append(_time_loader(f"pack + batched augmentation on the {where} (ours)", 0,
                                 train_batches(samples, cfg, batch, 2, False, "bench", 0, device),
                                 batches, batch, device))
    finally:
        torch.set_num_threads(threads)
    return rows


def _time_loader(name: str, workers: int, it, batches: int, batch: int, device: torch.device) -> dict:
    """Images/s, and images per CPU-second: this process's CPU time (all its threads) with 0 workers;
    with workers, the wall rate per worker (their CPU time is not visible from here)."""
    next(it)  # start-up (workers, thread) not timed
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    sync(device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    images = 2 * batch * batches
    with contextlib.suppress(Exception):
        it.close()
    per_core = images / cpu if workers == 0 else images / wall / workers
    return {"name": name, "workers": workers, "images_per_s": images / wall, "per_core": per_core}
