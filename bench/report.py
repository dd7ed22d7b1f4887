"""The Markdown report of benchmark.py: machine, training-step table, data-path table."""
from __future__ import annotations

import sys

import torch

from engine.graphs import use_cuda_graphs


# Dense bf16 tensor-core peaks (vendor datasheets, SXM parts), TFLOP/s, by device-name fragment.
BF16_PEAK = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0, "L4": 121.0}


def peak_tflops(given: float | None, device: torch.device) -> float | None:
    """The device's dense bf16 peak: `given`, else looked up by the GPU's name."""
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def report(args, cfg, device, info, results, ref, data_rows, flops, peak) -> str:
    mc = cfg["mpl"]
    lines = ["# Benchmark", "", f"Command: `python {' '.join(sys.argv)}`", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- device: {device}; precision: {'bf16/fp16 autocast' if device.type == 'cuda' else 'fp32'} (ours), "
              f"fp32 (reference-style); compile: {cfg['compile']}; CUDA graphs (ours): "
              f"{use_cuda_graphs(cfg, device)[0]}",
              f"- backbone {cfg['backbone']}, {cfg['img_size']} px; batches: pt {cfg['pt']['batch_size']}, supcon "
              f"{cfg['supcon']['batch_size']} x 2 views, mpl {mc['batch_labeled']} labeled + {mc['batch_unlabeled']} "
              f"unlabeled x 2 views; source images {args.images} x {args.source_size} px PNG; reference-style "
              f"DataLoader workers: {args.workers}",
              f"- timing: {args.warmup} warm-up steps, then median over windows of {args.window} steps "
              f"({args.steps} ours, {args.ref_steps} reference-style)", "",
              "## Training steps", "",
              "| pipeline | impl | ms/step | steps/s | images/s | speed-up | TFLOP/step | TFLOP/s | % bf16 peak "
              "| peak dev MB | dev MB start→end | peak host MB | host MB start→end |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rr = ref.get(name)
        for impl, x in (("ours", r), ("reference-style", rr)):
            if x is None:
                continue
            ms = 1e3 * x["median_s"]
            speed = f"{rr['median_s'] / r['median_s']:.2f}x" if (impl == "ours" and rr) else ""
            tf = flops.get(name, 0) / 1e12
            rate = tf / x["median_s"] if tf else 0
            util = f"{100 * rate / peak:.1f}" if (peak and impl == "ours" and tf) else "-"
            lines.append(f"| {name} | {impl} | {ms:.1f} | {1 / x['median_s']:.2f} | {x['images'] / x['median_s']:.0f} "
                         f"| {speed} | {tf:.3f} | {rate:.1f} | {util} | {x['dev_peak_mb']:.0f} "
                         f"| {x['dev_start_mb']:.0f}→{x['dev_end_mb']:.0f} | {x['rss_peak_mb']:.0f} "
                         f"| {x['rss_start_mb']:.0f}→{x['rss_end_mb']:.0f} |")
    lines += ["", "FLOPs: matrix products and convolutions of one step, forward and backward (torch.utils.flop_counter); "
              "the reference-style MPL step does the same plus one more student-encoder pass on the labeled batch. "
              f"% bf16 peak: against {peak} TFLOP/s dense." if peak else "", "",
              "## Data path", "", "| loader | workers | images/s | images/s per core |", "|---|---|---|---|"]
    for row in data_rows:
        lines.append(f"| {row['name']} | {row['workers']} | {row['images_per_s']:.0f} | {row['per_core']:.0f} |")
    syncs = {k: r["syncs"] for k, r in results.items() if r.get("syncs") is not None}
    if syncs:
        lines.insert(lines.index("## Data path"), "Host-device synchronisations per step of ours (CUDA sync debug "
                     "mode, 3 steps): " + ", ".join(f"{k} {v:g}" for k, v in syncs.items()) + "\n")
    if data_rows:
        pil = next((r for r in data_rows if r["name"].startswith("PIL") and r["workers"] == 0), None)
        packed = data_rows[-1]
        if pil:
            lines += ["", f"Pack + batched augmentation per core over PIL per image (0 workers, one core each): "
                          f"{packed['per_core'] / pil['per_core']:.1f}x"]
    lines += ["", "Images/s count each view of each image; batch = the MPL unlabeled batch. One torch thread. "
              "Per core: images per CPU-second of this process (all its threads: the pack's loader thread "
              "included) for 0 workers; images/s per worker otherwise."]
    return "\n".join(lines) + "\n"
