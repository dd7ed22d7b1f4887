"""Where a training step's time goes, and how fast it could be (benchmark.py --profile OUT).

Two measurements of a step, both grouped into the same classes (CLASSES):

- timeline: a torch.profiler trace of a few steps (written as OUT/<pipeline>.trace.json.gz, for Perfetto
  or chrome://tracing). On a GPU: the device time of every kernel, memory copy and fill, classed by the
  kernel's name; the kernels launched per step; and the time no kernel ran (the union of the kernels'
  intervals against the step). On a CPU: the self time of each operator, classed by its name.
- roofline: every operator of one step, seen below autocast and autograd (a TorchDispatchMode), with its
  FLOPs (torch.utils.flop_counter's formulas: convolutions and matrix products) and the bytes it must move
  at least (each tensor argument read once, each output and each argument it writes written once). The
  operator cannot take less than max(FLOPs / matmul rate, bytes / memory bandwidth), the two ceilings
  measured on the device (ceilings()); the sum over a step's operators is the time the card could reach
  with this model and batch, if every operator ran at its ceiling with nothing between them.
"""
from __future__ import annotations

import gzip
import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CLASSES = ("conv/matmul", "batch norm", "elementwise/activation", "reduction/other", "optimizer", "copy/cast")
IDLE = "idle (no kernel running)"

# GPU kernel names -> class, first match wins (cuDNN, cuBLAS, CUTLASS and ATen kernel names).
_KERNEL_RULES = [
    ("optimizer", r"adam|multi_tensor_apply|foreach|fused_optim"),
    ("batch norm", r"batch_?norm|bn_fw|bn_bw|bnfw|bnbw|welford"),
    ("copy/cast", r"memcpy|memset|copy|nchwtonhwc|nhwctonchw|catarray|transpose|cat_"),
    ("conv/matmul", r"gemm|gemv|conv(?!ert)|xmma|cutlass|wgrad|dgrad|fprop|implicit|nvjet|[sh]1688|16816|wgmma|cudnn|cask|winograd"),
    ("reduction/other", r"reduce|softmax|pool|grid_sampler|nll|cross_entropy|argmax|sort|scan|index|gather|scatter"),
    ("elementwise/activation", r"elementwise|vectorized|unrolled|relu|threshold|add|mul|div|where|clamp|fill|exp"),
]
# Operator names (aten, without namespace) -> class; conv/matmul is decided by the FLOP count first.
_OP_RULES = [
    ("optimizer", r"adam|foreach"),
    ("batch norm", r"batch_norm"),
    ("copy/cast", r"copy|^cat$|clone|stack|contiguous|^to$|_to_copy|constant_pad"),
    ("reduction/other", r"^empty|resize_|set_$"),  # allocations (CPU self time; no device work)
    ("conv/matmul", r"conv|^mm$|addmm|^bmm$|matmul|linear|mkldnn"),
    ("reduction/other", r"sum|mean|amax|amin|^max|^min|softmax|nll|pool|grid_sampler|argmax|topk|sort|norm|"
                        r"index|gather|scatter|nonzero|cross_entropy|all$|any$"),
]


def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, pattern in _KERNEL_RULES:
        if re.search(pattern, low):
            return cls
    return "reduction/other"


def op_class(name: str, flops: float = 0.0) -> str:
    """The class of an operator (`aten::add_`, `add_` or `add.Tensor`)."""
    base = name.split("::")[-1].split(".")[0]
    if flops > 0:
        return "conv/matmul"
    for cls, pattern in _OP_RULES:
        if re.search(pattern, base):
            return cls
    return "elementwise/activation"


# ----------------------------------------------------------------------------------------------- roofline
class OpCounter(TorchDispatchMode):
    """Per class: operators, FLOPs, bytes and the roofline time of every aten operator run under it."""

    def __init__(self, flop_rate: float, bandwidth: float):
        super().__init__()
        from torch.utils.flop_counter import flop_registry
        self.registry, self.flop_rate, self.bandwidth = flop_registry, flop_rate, bandwidth
        self.stats = {c: {"ops": 0, "flops": 0.0, "bytes": 0.0, "bound_s": 0.0} for c in CLASSES}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if func.is_view or name.startswith("empty") or name in ("detach", "lift_fresh", "_unsafe_view", "alias"):
            return out
        count = self.registry.get(func.overloadpacket)
        flops = float(count(*args, **kwargs, out_val=out)) if count is not None else 0.0
        nbytes = _moved_bytes(func, args, kwargs, out)
        s = self.stats[op_class(name, flops)]
        s["ops"] += 1
        s["flops"] += flops
        s["bytes"] += nbytes
        s["bound_s"] += max(flops / self.flop_rate, nbytes / self.bandwidth)
        return out


def _moved_bytes(func, args, kwargs, out) -> float:
    """Tensor arguments read once, arguments the operator writes (in place) written once, and new outputs
    written once; an output that is a written argument returned is not counted again."""
    def size(x) -> int:
        return sum(t.numel() * t.element_size() for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor))
    schema = func._schema
    written = 0
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            value = args[i] if i < len(args) else kwargs.get(arg.name)
            written += size(value)
    returns_alias = any(r.alias_info is not None for r in schema.returns)
    return float(size(args) + size(kwargs) + written + (0 if returns_alias else size(out)))


def roofline(step: Callable[[int], object], ceil: dict) -> dict:
    """One step of `step` under OpCounter: {class: {ops, flops, bytes, bound_s}}."""
    counter = OpCounter(ceil["matmul_flops"], ceil["bandwidth"])
    with counter:
        step(10 ** 6)
    return counter.stats


def ceilings(device: torch.device, quick: bool = False) -> dict:
    """The device's memory bandwidth (a large device-to-device copy, bytes read + written per second) and
    matrix-product rate (bf16 8192^3 on a GPU, fp32 on a CPU), each the best of several timed repeats."""
    def best(fn, reps: int) -> float:
        fn()
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return min(times)
    gpu = device.type == "cuda"
    n = (1 << 28 if gpu else 1 << 24) // (16 if quick else 1)  # floats: 1 GiB (GPU), 64 MiB (CPU)
    src, dst = torch.rand(n, device=device), torch.empty(n, device=device)
    bandwidth = 2 * src.numel() * 4 / best(lambda: dst.copy_(src), 10)
    k = (8192 if gpu else 1024) // (4 if quick else 1)
    dtype = torch.bfloat16 if gpu else torch.float32
    a, b = torch.randn(k, k, device=device, dtype=dtype), torch.randn(k, k, device=device, dtype=dtype)
    rate = 2 * k ** 3 / best(lambda: a @ b, 10)
    return {"bandwidth": bandwidth, "matmul_flops": rate, "matmul_dtype": str(dtype).replace("torch.", "")}


# ----------------------------------------------------------------------------------------------- timeline
def trace_steps(step: Callable[[int], object], device: torch.device, steps: int, path: Path) -> dict:
    """Profile `steps` calls of step (after the caller's warm-up); write the gzipped Chrome trace to `path`
    and return its analysis (analyse_trace)."""
    from torch.profiler import ProfilerActivity, profile, record_function
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    with profile(activities=activities) as prof:
        for i in range(steps):
            with record_function(f"step {i}"):
                step(i)
        sync()
    raw = path.with_suffix("")  # <name>.trace.json
    prof.export_chrome_trace(str(raw))
    with open(raw, "rb") as f, gzip.open(path, "wb", compresslevel=6) as g:
        g.write(f.read())
    raw.unlink()
    return analyse_trace(path, steps, device.type)


def _events(path: Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def analyse_trace(path: Path, steps: int, device_type: str) -> dict:
    """{class: seconds per step} (+ IDLE), kernels per step, busy seconds per step, the profiled seconds per
    step, and the 12 kernels (or CPU operators) that took longest, from a Chrome trace of `steps` steps
    marked by 'step N' annotations."""
    events = _events(path)
    marks = [e for e in events if e.get("cat") == "user_annotation" and str(e["name"]).startswith("step ")]
    if not marks:
        raise ValueError(f"{path}: no 'step N' annotations in the trace")
    start = min(e["ts"] for e in marks)
    end = max(e["ts"] + e["dur"] for e in marks)
    per_class: dict[str, float] = defaultdict(float)
    by_name: dict[str, list] = defaultdict(lambda: [0.0, 0])
    if device_type == "cuda":
        work = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and e["ts"] >= start]
        end = max([end] + [e["ts"] + e["dur"] for e in work])
        for e in work:
            per_class[kernel_class(e["name"])] += e["dur"]
            by_name[e["name"]][0] += e["dur"]
            by_name[e["name"]][1] += 1
        busy = _union(sorted((e["ts"], e["ts"] + e["dur"]) for e in work))
        launches = len(work)
        top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:12]
        top = [(name, kernel_class(name), t, n) for name, (t, n) in top]
    else:
        ops = [e for e in events if e.get("cat") == "cpu_op" and start <= e["ts"] <= end]
        for e, self_us in _self_times(ops):
            per_class[op_class(e["name"])] += self_us
            by_name[e["name"]][0] += self_us
            by_name[e["name"]][1] += 1
        busy = sum(per_class.values())
        launches = len(ops)
        top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:12]
        top = [(name, op_class(name), t, n) for name, (t, n) in top]
    window = end - start
    out = {c: per_class.get(c, 0.0) / steps / 1e6 for c in CLASSES}
    out[IDLE] = max(window - busy, 0.0) / steps / 1e6
    return {"classes": out, "launches": launches / steps, "busy_s": busy / steps / 1e6,
            "window_s": window / steps / 1e6, "top": [(n, c, t / steps / 1e6, k / steps) for n, c, t, k in top]}


def _union(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by sorted intervals."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in intervals:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (cur_e - cur_s if cur_e is not None else 0.0)


def _self_times(ops: list[dict]):
    """(event, its duration less that of the operators nested in it), per thread."""
    by_tid: dict = defaultdict(list)
    for e in ops:
        by_tid[(e.get("pid"), e.get("tid"))].append(e)
    for evs in by_tid.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        child = defaultdict(float)
        stack: list[dict] = []
        for e in evs:
            while stack and e["ts"] >= stack[-1]["ts"] + stack[-1]["dur"]:
                stack.pop()
            if stack:
                child[id(stack[-1])] += e["dur"]
            stack.append(e)
        for e in evs:
            yield e, max(e["dur"] - child[id(e)], 0.0)


# ----------------------------------------------------------------------------------------------- report
NOTE = """Per pipeline: device time by class over a profiled window (torch.profiler, kernels classed by name;
on a CPU, operators' self time classed by name), as ms per step and as % of the step's unprofiled median
time; the idle row is that time less the time some kernel ran. ops/step, TFLOP, GB and the roofline bound
come from one step's aten operators (bench/step_profile.py): each operator's FLOPs over the matmul rate or its
bytes (arguments read once, outputs written once) over the bandwidth, whichever is larger, summed.
"""


def profile_report(command: str, info: dict, ceil: dict, tables: list[str]) -> str:
    """The profile.md of benchmark.py --profile: the command, the machine and settings (`info`), the measured
    ceilings, what the tables mean, then one table per pipeline (profile_table)."""
    lines = ["# Step profile", "", f"Command: `{command}`", ""] + [f"- {k}: {v}" for k, v in info.items()]
    lines.append(f"- measured ceilings: memory bandwidth {ceil['bandwidth'] / 1e12:.3g} TB/s (device-to-device "
                 f"copy, read + write), {ceil['matmul_dtype']} matmul {ceil['matmul_flops'] / 1e12:.3g} TFLOP/s")
    return "\n".join(lines) + "\n\n" + NOTE + "\n" + "\n".join(tables)


def profile_table(name: str, step_s: float, timeline: dict, roof: dict, ceil: dict, device_type: str) -> str:
    """Markdown: per class, the measured time (per step and as % of the unprofiled step), launches, FLOPs,
    bytes and roofline bound; then the totals and the longest kernels."""
    unit = "GPU" if device_type == "cuda" else "CPU self"
    bound = sum(r["bound_s"] for r in roof.values())
    flops = sum(r["flops"] for r in roof.values())
    rows = [f"### {name}", "",
            f"Step {1e3 * step_s:.2f} ms (median, not profiled); profiled {1e3 * timeline['window_s']:.2f} ms/step; "
            f"{unit} busy {1e3 * timeline['busy_s']:.2f} ms/step; {timeline['launches']:.0f} "
            f"{'kernels and copies' if device_type == 'cuda' else 'operators'} per step.", "",
            f"| class | {unit} ms/step | % of step | ops/step | TFLOP/step | GB/step | roofline ms/step |",
            "|---|---|---|---|---|---|---|"]
    for c in CLASSES:
        t, r = timeline["classes"][c], roof[c]
        rows.append(f"| {c} | {1e3 * t:.2f} | {100 * t / step_s:.1f} | {r['ops']} | {r['flops'] / 1e12:.3f} | "
                    f"{r['bytes'] / 1e9:.2f} | {1e3 * r['bound_s']:.2f} |")
    idle = max(step_s - timeline["busy_s"], 0.0)
    rows.append(f"| {IDLE if device_type == 'cuda' else 'outside operators (Python, framework)'} | "
                f"{1e3 * idle:.2f} | {100 * idle / step_s:.1f} | | | | |")
    rows.append(f"| **step** | {1e3 * step_s:.2f} | 100 | {sum(r['ops'] for r in roof.values())} | "
                f"{flops / 1e12:.3f} | {sum(r['bytes'] for r in roof.values()) / 1e9:.2f} | {1e3 * bound:.2f} |")
    rows += ["", f"Roofline bound {1e3 * bound:.2f} ms: the step runs at **{100 * bound / step_s:.1f}% of the "
             f"bound** and {100 * flops / step_s / ceil['matmul_flops']:.1f}% of the measured "
             f"{ceil['matmul_dtype']} matmul rate ({ceil['matmul_flops'] / 1e12:.3g} TFLOP/s; bandwidth "
             f"{ceil['bandwidth'] / 1e12:.3g} TB/s).", "",
             f"Longest {'kernels' if device_type == 'cuda' else 'operators'} (per step):", "",
             "| name | class | ms | calls |", "|---|---|---|---|"]
    for kname, cls, t, n in timeline["top"]:
        short = kname if len(kname) <= 90 else kname[:87] + "..."
        rows.append(f"| `{short.replace('|', '/')}` | {cls} | {1e3 * t:.3f} | {n:g} |")
    return "\n".join(rows) + "\n"
