"""Mixed precision: the autocast context, built once per run (nanoGPT's `ctx`) and entered by every step."""
from __future__ import annotations

import contextlib

import torch


def amp_dtype(device: torch.device, name: str = "auto") -> torch.dtype:
    """The mixed-precision type: bf16 where the GPU has it (no loss scaling needed), else fp16."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if name == "bf16" else torch.float16


def autocast(device: torch.device, enabled: bool = True, dtype: str = "auto", cache: bool = True):
    """Mixed-precision autocast on CUDA (bf16, or fp16 where bf16 is missing: see engine.update's loss
    scaler); a no-op elsewhere (CPU runs stay fp32 and deterministic). The returned context may be entered
    again and again. cache=False: no cache of the weights' low-precision copies, as CUDA graph capture
    requires (engine/graphs.py; each weight is cast once per forward either way)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=amp_dtype(device, dtype), cache_enabled=cache)
    return contextlib.nullcontext()


def needs_loss_scaler(device: torch.device, enabled: bool, dtype: str) -> bool:
    """fp16 autocast on CUDA needs a GradScaler per optimizer; bf16 and fp32 do not."""
    return enabled and device.type == "cuda" and amp_dtype(device, dtype) == torch.float16
