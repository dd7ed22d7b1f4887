"""Benchmark the training steps and the data path, ours against a reference-style implementation.

  python -m bench.benchmark                                    # reference settings: resnet50, 64 px, 64 + 448 (MPL), 512
  python -m bench.benchmark --config configs/demo.yaml         # the demo's backbone, image size and batch sizes
  python -m bench.benchmark --device cpu --pipelines mpl --steps 10

In one run it
- generates source images (PNG face-crop stand-ins, --source-size px) once under --data, and packs them;
- times the training step of each pipeline (pt = baseline, supcon, mpl) as the training scripts run it
  (packed batches, batched augmentation on the device, mixed precision on CUDA, channels_last, fused
  Adam), after --warmup steps: median step time over windows of --window steps, steps/s, images/s,
  FLOPs per step (counted by torch.utils.flop_counter) and their rate, peak device and host memory, and
  the memory in use after warm-up and at the end (nothing may grow with the number of steps);
- times the reference-style step of each pipeline (bench/reference.py: PIL per image in DataLoader
  workers, fp32, default memory format, non-fused Adam, three student-encoder passes in MPL) with the same
  models and batch sizes, and prints our speed-up over it;
- times the data path alone (images/s delivered, and per CPU core) for each configuration and
  worker count: PIL per image, our per-image path from files (cv2 + torchvision v2), and the pack with
  batched augmentation;
- writes a Markdown report (--out) and ends with `SupCon-MPL step speed-up over reference-style: <ratio>x`.

--profile OUT adds, per pipeline, where the step's time goes (bench/step_profile.py): a torch.profiler trace of
--profile-steps steps (OUT/<pipeline>.trace.json.gz), the device time by kernel class, the kernels launched
per step, the time no kernel runs, and a roofline bound from the step's FLOPs and bytes against the
device's measured bandwidth and matmul rate; the tables go to OUT/profile.md. On a GPU our steps are
replayed as CUDA graphs, as the training scripts run them by default (engine/graphs.py); --no-cuda-graphs
times them eager.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.config import load_config
from engine.amp import autocast, needs_loss_scaler
from engine.batches import BadImages, feed
from engine.dist import get_device
from engine.logger import RunLogger
from engine.update import Updater
from bench.data_path import data_path
from bench.report import peak_tflops, report
from engine.provenance import machine
from engine.graphs import stepper, use_cuda_graphs
from utils import HelpFormatter, UserError, run_cli

PIPELINES = ("pt", "supcon", "mpl")


# ----------------------------------------------------------------------------------------------- set-up
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.benchmark", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--config", help="take backbone, img_size, aug and batch sizes from this config")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--backbone", help="timm model (default: resnet50, or the config's)")
    p.add_argument("--img-size", type=int, help="training image size (default: 64, or the config's)")
    p.add_argument("--batch-labeled", type=int, help="MPL labeled batch (default 64, or the config's)")
    p.add_argument("--batch-unlabeled", type=int, help="MPL unlabeled batch (default 448, or the config's)")
    p.add_argument("--batch", type=int, help="baseline and SupCon batch (default 512, or the config's)")
    p.add_argument("--pipelines", default="pt,supcon,mpl", help="which steps to time (pt, supcon, mpl)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per pipeline")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--window", type=int, default=5, help="steps per timing window (median over windows)")
    p.add_argument("--ref-steps", type=int, default=10, help="timed reference-style steps per pipeline")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="DataLoader workers of the reference-style steps (default: all cores)")
    p.add_argument("--data-workers", default=None,
                   help="worker counts for the data-path table (default: 0 and --workers)")
    p.add_argument("--data-batches", type=int, default=10, help="batches per data-path measurement")
    p.add_argument("--images", type=int, default=2048, help="source images to generate")
    p.add_argument("--source-size", type=int, default=128, help="side of the generated source images (px)")
    p.add_argument("--data", default=".cache/bench", help="folder for the generated images and pack")
    p.add_argument("--amp-dtype", default="auto", choices=("auto", "bf16", "fp16"))
    p.add_argument("--compile", action="store_true", help="torch.compile our networks (not the reference's)")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                   help="replay our steps as CUDA graphs on a GPU, as the training scripts do by default "
                        "(cuda_graphs=true); --no-cuda-graphs: eager steps")
    p.add_argument("--profile", metavar="OUT", help="profile each pipeline's step: traces and OUT/profile.md")
    p.add_argument("--profile-steps", type=int, default=3, help="steps in each profiler trace")
    p.add_argument("--check-graphs", type=int, metavar="N", default=0,
                   help="only compare N steps of each pipeline: eager, eager again, CUDA graphs (same start, "
                        "same batches); writes --out")
    p.add_argument("--no-reference", action="store_true", help="skip the reference-style steps")
    p.add_argument("--no-data-path", action="store_true", help="skip the data-path table")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for the utilisation column")
    p.add_argument("--md", help="write the Markdown report to this file (default: bench/results-<device>.md)")
    return p.parse_args(argv)


def bench_config(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config) if args.config else load_config(None)
    if not args.config:
        cfg.update(backbone="resnet50", img_size=64)
        cfg["pt"]["batch_size"] = cfg["supcon"]["batch_size"] = 512
    for key, value in (("backbone", args.backbone), ("img_size", args.img_size)):
        if value is not None:
            cfg[key] = value
    if args.batch is not None:
        cfg["pt"]["batch_size"] = cfg["supcon"]["batch_size"] = args.batch
    if args.batch_labeled is not None:
        cfg["mpl"]["batch_labeled"] = args.batch_labeled
    if args.batch_unlabeled is not None:
        cfg["mpl"]["batch_unlabeled"] = args.batch_unlabeled
    cfg.update(pretrained="none", amp=True, amp_dtype=args.amp_dtype, compile=args.compile, device=args.device,
               cuda_graphs=args.cuda_graphs)
    return cfg


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> list[tuple[str, int]]:
    """n PNG images (half real/, half fake/): smooth colour fields plus sensor-like noise, so that they
    decode like photographs rather than flat colour. Written once; later runs reuse them."""
    import cv2
    marker = folder / f"images-{n}-{size}.done"
    items = [(str(folder / ("real" if i % 2 == 0 else "fake") / f"{i:06d}.png"), i % 2) for i in range(n)]
    if marker.is_file():
        return items
    rng = np.random.default_rng(seed)
    for sub in ("real", "fake"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for path, _ in items:
        low = rng.uniform(0, 255, (6, 6, 3)).astype(np.float32)
        img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 6, (size, size, 3))
        cv2.imwrite(path, np.clip(img, 0, 255).astype(np.uint8))
    marker.touch()
    return items


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb() -> float:
    """This process's resident memory now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux


def time_steps(step: Callable[[int], object], warmup: int, steps: int, window: int, device: torch.device) -> dict:
    """Median seconds per step over windows of `window` steps (synchronised at window ends), and the
    memory in use after warm-up and at the end."""
    for i in range(warmup):
        step(i)
    sync(device)
    mem0 = (rss_mb(), torch.cuda.memory_allocated(device) / 1e6 if device.type == "cuda" else 0.0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, i = [], warmup
    while i < warmup + steps:
        n = min(window, warmup + steps - i)
        start = time.perf_counter()
        for _ in range(n):
            step(i)
            i += 1
        sync(device)
        times.append((time.perf_counter() - start) / n)
    mem1 = (rss_mb(), torch.cuda.memory_allocated(device) / 1e6 if device.type == "cuda" else 0.0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "rss_start_mb": mem0[0], "rss_end_mb": mem1[0], "dev_start_mb": mem0[1], "dev_end_mb": mem1[1],
            "dev_peak_mb": torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else 0.0,
            "rss_peak_mb": peak_rss_mb()}


def count_syncs(step: Callable[[int], object], steps: int = 3) -> float | None:
    """CUDA: host-device synchronisations per step (torch.cuda.set_sync_debug_mode), else None."""
    if not torch.cuda.is_available():
        return None
    import warnings
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for i in range(steps):
                step(i)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # (The first use of the mode also warns that it is a prototype: not a synchronisation.)
    found = [str(w.message).splitlines()[0] for w in caught if "called a synchronizing" in str(w.message)]
    if found:
        print(f"host syncs: {len(found)} in {steps} steps, e.g. {found[0]}", file=sys.stderr)
    return len(found) / steps


def count_flops(step: Callable[[int], object]) -> float:
    """FLOPs of one step (matrix products and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        step(10 ** 6)
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------- steps
def our_step(pipeline: str, cfg: dict, samples: list, device: torch.device, tmp: Path) -> tuple[Callable, int, Updater]:
    """The training scripts' step for `pipeline` on packed data, the images it consumes, and its Updater."""
    from datasets.loaders import train_batches
    from engine.dist import distribute
    from engine.update import make_optimizer
    from losses import SupConLoss
    from methods import pt, supcon, supconmpl
    from models import LinearClassifier, SupConNet, build_baseline
    logger = RunLogger(tmp)
    graphs, note = use_cuda_graphs(cfg, device)
    if cfg["cuda_graphs"] and device.type == "cuda":
        print(note, file=sys.stderr)
    amp = autocast(device, cfg["amp"], cfg["amp_dtype"], cache=not graphs)
    bad = BadImages(tmp, cfg["data"]["max_bad_images"], logger)
    batches = lambda n, views, stream, role="labeled": feed(  # noqa: E731
        train_batches(samples, cfg, n, views, stream != "mpl-unlabeled", stream, 0, device, role), bad, device)
    if pipeline == "pt":
        model = distribute(build_baseline(cfg["backbone"], "none"), device, cfg)
        opt = make_optimizer(model.parameters(), 1e-4)
        update = Updater({"opt": opt}, needs_loss_scaler(device, cfg["amp"], cfg["amp_dtype"]), 10, logger.info)
        step = stepper(lambda x, y: pt.pt_step(model, opt, x, y, update, amp),
                       batches(cfg["pt"]["batch_size"], 1, "pt"), [opt], graphs)
        return step, cfg["pt"]["batch_size"], update
    if pipeline == "supcon":
        net = distribute(SupConNet(cfg["backbone"], "none"), device, cfg)
        opt, criterion = make_optimizer(net.parameters(), 1e-4), SupConLoss(0.1)
        update = Updater({"opt": opt}, needs_loss_scaler(device, cfg["amp"], cfg["amp_dtype"]), 10, logger.info)
        step = stepper(lambda v1, v2, y: supcon.supcon_step(net, opt, criterion, v1, v2, y, update, amp),
                       batches(cfg["supcon"]["batch_size"], 2, "supcon"), [opt], graphs)
        return step, 2 * cfg["supcon"]["batch_size"], update
    mc = cfg["mpl"]
    teacher, student = SupConNet(cfg["backbone"], "none"), SupConNet(cfg["backbone"], "none")
    mods = (teacher, LinearClassifier(teacher.dim), student, LinearClassifier(student.dim))
    pair = supconmpl.MPLPair(*(distribute(mod, device, cfg) for mod in mods), mc, amp)
    update = Updater(pair.optimizers(), needs_loss_scaler(device, cfg["amp"], cfg["amp_dtype"]), 10, logger.info)
    lab, unl = batches(mc["batch_labeled"], 2, "mpl-labeled"), batches(mc["batch_unlabeled"], 2, "mpl-unlabeled",
                                                                       "unlabeled")
    step = stepper(lambda *b: supconmpl.mpl_step(pair, *b, update=update), lambda: (*lab(), *unl()),
                   list(pair.optimizers().values()), graphs)
    return step, 2 * (mc["batch_labeled"] + mc["batch_unlabeled"]), update


def reference_step(pipeline: str, cfg: dict, items: list, device: torch.device, workers: int) -> Callable:
    from bench import reference
    from losses import SupConLoss
    from models import LinearClassifier, SupConNet, build_baseline
    adam = lambda mod: torch.optim.Adam(mod.parameters(), lr=1e-4)  # noqa: E731  (default: not fused)
    if pipeline == "pt":
        model = build_baseline(cfg["backbone"], "none").to(device).train()
        opt, batches = adam(model), reference.pil_batches(items, cfg, cfg["pt"]["batch_size"], 1, workers)
        return lambda i: reference.pt_step(model, opt, batches, device)
    if pipeline == "supcon":
        net = SupConNet(cfg["backbone"], "none").to(device).train()
        opt, pairs = adam(net), reference.pil_batches(items, cfg, cfg["supcon"]["batch_size"], 2, workers)
        crit = SupConLoss(0.1)
        return lambda i: reference.supcon_step(net, opt, pairs, device, crit)
    from methods.supconmpl import MPLPair
    mc = cfg["mpl"]
    teacher, student = SupConNet(cfg["backbone"], "none"), SupConNet(cfg["backbone"], "none")
    pair = MPLPair(teacher.to(device), LinearClassifier(teacher.dim).to(device), student.to(device),
                   LinearClassifier(student.dim).to(device), mc, contextlib.nullcontext())
    pair.opt_t, pair.opt_t_cls, pair.opt_s, pair.opt_s_cls = (adam(mod) for mod in (pair.teacher, pair.t_cls,
                                                                                    pair.student, pair.s_cls))
    lab = reference.pil_batches(items, cfg, mc["batch_labeled"], 2, workers)
    unl = reference.pil_batches(items, cfg, mc["batch_unlabeled"], 2, workers)
    return lambda i: reference.mpl_step(pair, lab, unl, device)


def check_graphs(pipelines: list[str], cfg: dict, samples: list, device: torch.device, steps: int, tmp: Path) -> str:
    """Markdown: the logged values of `steps` steps of each pipeline run three times from the same initial
    weights on the same batches: eager, eager again (the run-to-run spread of the GPU's kernels), and
    replayed as a CUDA graph; the largest relative difference of each against the first eager run."""
    rows = ["| pipeline | value | step 1 eager | step N eager | max rel. diff, eager again | "
            "max rel. diff, CUDA graphs |", "|---|---|---|---|---|---|"]
    for name in pipelines:
        runs = []
        for k, graphs in enumerate((False, False, True)):
            torch.manual_seed(0)
            step, _, update = our_step(name, {**cfg, "cuda_graphs": graphs}, samples, device, tmp / f"{name}-{k}")
            outs = [{key: float(v) for key, v in step(i).items() if key != "images"} for i in range(steps)]
            update.check(steps)
            runs.append(outs)
            del step, update
        for key in runs[0][0]:
            first = [o[key] for o in runs[0]]
            diff = [max(abs(o[key] - f) / max(abs(f), 1e-6) for o, f in zip(run, first)) for run in runs[1:]]
            rows.append(f"| {name} | {key} | {first[0]:.5g} | {first[-1]:.5g} | {diff[0]:.2e} | {diff[1]:.2e} |")
    return "\n".join(rows) + "\n"


def bench_data(args: argparse.Namespace, cfg: dict) -> tuple[list, list]:
    """The generated images and their pack (cfg's data.packed is set to it): (items, samples)."""
    from datasets.index import Sample
    from datasets.packed import build_pack
    data = Path(args.data)
    items = make_images(data / f"src{args.source_size}", args.images, args.source_size)
    pack_dir = data / f"pack-src{args.source_size}-{cfg['img_size']}"
    start = time.time()
    build_pack([p for p, _ in items], pack_dir, cfg["img_size"], workers=min(8, os.cpu_count() or 1), quiet=True)
    print(f"images and pack ready in {time.time() - start:.1f} s: {pack_dir}", file=sys.stderr)
    cfg["data"]["packed"] = str(pack_dir)
    samples = [Sample(p, y, "real" if y == 0 else "fake", None, "folder") for p, y in items]
    need = max(cfg["pt"]["batch_size"], cfg["supcon"]["batch_size"], cfg["mpl"]["batch_unlabeled"])
    if need > len(items):
        raise UserError(f"--images {args.images} is smaller than the largest batch ({need})")
    return items, samples


def write(text: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


def measure(name: str, args, cfg: dict, items: list, samples: list, device: torch.device, tmp: Path, flops: dict,
            results: dict, ref: dict, prof: tuple | None) -> None:
    """Time our step of one pipeline (its FLOPs, host syncs, and with --profile its trace) and the reference-style
    one; fills flops, results and ref. prof: (step_profile module, ceilings, tables, folder, graphed) or None."""
    step, images, update = our_step(name, cfg, samples, device, tmp / name)
    # Counted first: these calls run eagerly (with CUDA graphs: before the graph is captured).
    flops[name] = count_flops(step)
    roof = prof[0].roofline(step, prof[1]) if prof else None
    results[name] = {**time_steps(step, args.warmup, args.steps, args.window, device), "images": images}
    if prof:
        profile, ceil, tables, folder, graphed = prof
        timeline = profile.trace_steps(step, device, args.profile_steps, folder / f"{name}.trace.json.gz")
        tables.append(profile.profile_table(name + (" (CUDA graphs)" if graphed else ""), results[name]["median_s"],
                                            timeline, roof, ceil, device.type))
        print(tables[-1], file=sys.stderr, flush=True)
    if device.type == "cuda":
        results[name]["syncs"] = count_syncs(step)
    update.check(0)
    print(f"{name}: ours {1e3 * results[name]['median_s']:.1f} ms/step", file=sys.stderr, flush=True)
    del step
    if not args.no_reference:
        rstep = reference_step(name, cfg, items, device, args.workers)
        ref[name] = {**time_steps(rstep, min(args.warmup, 3), args.ref_steps, args.window, device), "images": images}
        print(f"{name}: reference-style {1e3 * ref[name]['median_s']:.1f} ms/step", file=sys.stderr, flush=True)
        del rstep
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = get_device(args.device)
    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    if not pipelines or set(pipelines) - set(PIPELINES):
        raise UserError(f"--pipelines takes pt, supcon and/or mpl, got {args.pipelines!r}")
    cfg = bench_config(args)
    items, samples = bench_data(args, cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    info, results, ref, flops = machine(device), {}, {}, {}
    if args.check_graphs:
        with tempfile.TemporaryDirectory() as tmp:
            table = check_graphs(pipelines, cfg, samples, device, args.check_graphs, Path(tmp))
        write(f"# CUDA graphs against eager steps\n\nCommand: `python {' '.join(sys.argv)}`\n\n" +
              "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n" + table,
              Path(args.md or f"bench/graph-check-{device.type}.md"))
        return 0
    graphed = use_cuda_graphs(cfg, device)[0]
    prof = None
    if args.profile:
        from bench import step_profile as profile
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        prof = (profile, profile.ceilings(device), [], Path(args.profile), graphed)
    with tempfile.TemporaryDirectory() as tmp:
        for name in pipelines:
            measure(name, args, cfg, items, samples, device, Path(tmp), flops, results, ref, prof)
    workers = sorted({0, args.workers} if args.data_workers is None else
                     {int(w) for w in args.data_workers.split(",") if w.strip()})
    data_rows = [] if args.no_data_path else data_path(cfg, items, samples, device, workers, args.data_batches,
                                                        cfg["mpl"]["batch_unlabeled"])
    text = report(args, cfg, device, info, results, ref, data_rows, flops, peak_tflops(args.peak_tflops, device))
    if prof:
        info = {**info, "compile": cfg["compile"], "CUDA graphs": graphed}
        (prof[3] / "profile.md").write_text(prof[0].profile_report(f"python {' '.join(sys.argv)}", info, prof[1],
                                                                  prof[2]))
        print(f"profile written to {prof[3] / 'profile.md'}")
    out = Path(args.md or f"bench/results-{device.type}.md")
    write(text, out)
    print(f"report written to {out}")
    if "mpl" in ref:
        print(f"SupCon-MPL step speed-up over reference-style: {ref['mpl']['median_s'] / results['mpl']['median_s']:.2f}x")
    return 0


if __name__ == "__main__":
    run_cli(main)
