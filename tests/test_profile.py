"""bench/step_profile.py: kernel classes, the trace's timeline arithmetic, the roofline counts, and
benchmark.py --profile as a user runs it (on a CPU here; bench/gpu_profile.sh runs it on a GPU)."""
from __future__ import annotations

import gzip
import json
import re

import pytest
import torch
import torch.nn.functional as F

from bench.step_profile import CLASSES, IDLE, OpCounter, analyse_trace, kernel_class, op_class
from conftest import command

KERNELS = {  # names as they appear in PyTorch traces on Hopper GPUs
    "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64_warpgroupsize1x1x1_"
    "execute_segment_k_off_kernel__5x_cudnn": "conv/matmul",
    "nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN": "conv/matmul",
    "void cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, float, 512, true, 1>(cudnnTensorStruct)": "batch norm",
    "void at::native::batch_norm_collect_statistics_channels_last_kernel<at::native::Var, c10::BFloat16, float, "
    "4>(c10::BFloat16 const*, float*, float*, int*, int, int)": "batch norm",
    "void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::launch_clamp_scalar("
    "at::TensorIteratorBase&, c10::Scalar, c10::Scalar, at::native::detail::ClampLimits)": "elementwise/activation",
    "void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::"
    "{lambda()#3}::operator()() const::{lambda(float)#1}>": "copy/cast",
    "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
    "FusedAdamMathFunctor<float, 4, (at::native::ADAM_MODE)0, false>>": "optimizer",
    "Memcpy HtoD (Pinned -> Device)": "copy/cast",
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float>>>":
        "reduction/other",
    "void at::native::(anonymous namespace)::max_pool_forward_nhwc<c10::BFloat16>(...)": "reduction/other",
    "void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::threshold_kernel_impl"
    "<c10::BFloat16>>": "elementwise/activation",
}


def test_kernels_are_classed_by_name():
    for name, cls in KERNELS.items():
        assert kernel_class(name) == cls, name


def test_operators_are_classed_by_name_and_flops():
    assert op_class("aten::convolution_backward", 1e9) == "conv/matmul"
    assert op_class("aten::cudnn_batch_norm") == "batch norm"
    assert op_class("aten::_fused_adam_") == "optimizer"
    assert op_class("aten::_to_copy") == "copy/cast"
    assert op_class("threshold_backward.default") == "elementwise/activation"
    assert op_class("aten::max_pool2d_with_indices") == "reduction/other"


def test_trace_timeline_busy_idle_and_launches(tmp_path):
    """Two steps of 10 ms (annotations); kernels overlapping on two streams; one kernel before the window."""
    ev = [{"ph": "X", "cat": "user_annotation", "name": "step 0", "ts": 1000, "dur": 10000},
          {"ph": "X", "cat": "user_annotation", "name": "step 1", "ts": 11000, "dur": 10000},
          {"ph": "X", "cat": "kernel", "name": "early gemm", "ts": 0, "dur": 500}]
    ker = [("sm90_xmma_fprop_implicit_gemm", 2000, 4000), ("nvjet_hsh_x", 5000, 2000),  # overlap: 2000..7000
           ("void cudnn::bn_fw_tr_1C11_kernel_NCHW", 12000, 1000), ("Memcpy DtoD (Device -> Device)", 14000, 500),
           ("multi_tensor_apply_kernel<FusedAdamMathFunctor>", 20000, 1500)]  # ends at 21500 > the last mark
    ev += [{"ph": "X", "cat": "gpu_memcpy" if n.startswith("Memcpy") else "kernel", "name": n, "ts": t, "dur": d}
           for n, t, d in ker]
    path = tmp_path / "t.trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": ev}, f)
    tl = analyse_trace(path, 2, "cuda")
    assert tl["window_s"] == pytest.approx(20500 / 2 / 1e6)  # 1000 .. 21500
    assert tl["busy_s"] == pytest.approx((5000 + 1000 + 500 + 1500) / 2 / 1e6)
    assert tl["classes"][IDLE] == pytest.approx((20500 - 8000) / 2 / 1e6)
    assert tl["classes"]["conv/matmul"] == pytest.approx(6000 / 2 / 1e6)
    assert tl["classes"]["batch norm"] == pytest.approx(1000 / 2 / 1e6)
    assert tl["classes"]["copy/cast"] == pytest.approx(500 / 2 / 1e6)
    assert tl["classes"]["optimizer"] == pytest.approx(1500 / 2 / 1e6)
    assert tl["launches"] == 2.5
    assert tl["top"][0][0] == "sm90_xmma_fprop_implicit_gemm"


def test_roofline_counts_flops_and_bytes():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    y = torch.randn(2, 4, 8, 8)
    counter = OpCounter(flop_rate=1e9, bandwidth=1e8)
    with counter:
        out = F.conv2d(x, w, padding=1)  # [2, 4, 8, 8]
        out.add_(y)                      # in place: reads out and y, writes out
    conv, elem = counter.stats["conv/matmul"], counter.stats["elementwise/activation"]
    assert conv["ops"] == 1 and conv["flops"] == 2 * 2 * 4 * 3 * 9 * 64
    assert conv["bytes"] == 4 * (x.numel() + w.numel() + out.numel())
    assert conv["bound_s"] == pytest.approx(max(conv["flops"] / 1e9, conv["bytes"] / 1e8))
    assert elem["ops"] == 1 and elem["flops"] == 0 and elem["bytes"] == 4 * 3 * out.numel()
    assert sum(s["ops"] for s in counter.stats.values()) == 2


@pytest.mark.slow
def test_benchmark_profile_writes_traces_and_tables(tmp_path):
    prof = tmp_path / "prof"
    res = command(["-m", "bench.benchmark", "--device", "cpu", "--backbone", "test_resnet", "--img-size", "32", "--batch", "16",
               "--batch-labeled", "4", "--batch-unlabeled", "8", "--images", "64", "--source-size", "48", "--steps",
               "2", "--warmup", "1", "--window", "1", "--no-reference", "--no-data-path", "--profile", str(prof),
               "--profile-steps", "2", "--data", str(tmp_path / "data"), "--md", str(tmp_path / "r.md")], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    text = (prof / "profile.md").read_text()
    assert "measured ceilings: memory bandwidth" in text
    for name in ("pt", "supcon", "mpl"):
        assert f"### {name}\n" in text
        with gzip.open(prof / f"{name}.trace.json.gz", "rt") as f:
            events = json.load(f)["traceEvents"]
        assert {"step 0", "step 1"} <= {e.get("name") for e in events}
    for cls in CLASSES:
        rows = re.findall(rf"^\| {re.escape(cls)} \| ([0-9.]+) \| ([0-9.]+) \| (\d+) \| ([0-9.]+) \|", text, re.M)
        assert len(rows) == 3, cls
    conv = re.findall(r"^\| conv/matmul \| ([0-9.]+) \| [0-9.]+ \| (\d+) \| ([0-9.]+) \| [0-9.]+ \| ([0-9.]+) \|$",
                      text, re.M)
    assert all(float(ms) > 0 and int(ops) > 0 and float(bound) > 0 for ms, ops, _, bound in conv)
    assert len(re.findall(r"step runs at \*\*[0-9.]+% of the bound\*\*", text)) == 3
