"""MTCNN's PReLU and max pooling in their fastest exact forms on a CPU core, for preprocess.detector's networks
(channels-last activations, as oneDNN's convolutions return them there).

- `prelu_pool`: `max_pool2d(prelu(x), k, 2, ceil_mode=True)` in one pass, compiled by numba (cached on disk beside
  this file): each activation is read once and only the pooled quarter written, where PReLU, then pooling rows,
  then columns took five passes over memory. Bit-identical (the same products and comparisons). One core of a
  2-core AMD EPYC: 1.5-2.4x faster on RNet's and ONet's layers (bench/results-cpu.md);
- `prelu_cl`: a PReLU with no pooling after it, over the [N H W, C] view (channels contiguous).
"""
from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _prelu_pool_kernel(x, slope, k, out):
    """x [N, H, W, C'] float32, its first C = len(slope) channels taken; out [N, H', W', C]: the maximum of
    prelu(x) over each k x k window of stride 2 (a last window that ceil mode cuts short: over what it covers).
    A window's rows first (into `rows`, one output row's [W, C]), then its columns; the channels innermost, a
    vectorised loop (error_model="numpy": no Python-style checks that would keep LLVM from vectorising)."""
    n_frames, height, width, channels = x.shape[0], x.shape[1], x.shape[2], slope.shape[0]
    rows = np.empty((width, channels), np.float32)
    for n in range(n_frames):
        for i in range(out.shape[1]):
            top, bottom = 2 * i, min(2 * i + k, height)
            for col in range(width):
                for c in range(channels):
                    v = x[n, top, col, c]
                    rows[col, c] = v if v > 0 else v * slope[c]
            for r in range(top + 1, bottom):
                for col in range(width):
                    for c in range(channels):
                        v = x[n, r, col, c]
                        v = v if v > 0 else v * slope[c]
                        m = rows[col, c]
                        rows[col, c] = v if v > m else m
            for j in range(out.shape[2]):
                left, right = 2 * j, min(2 * j + k, width)
                for c in range(channels):
                    out[n, i, j, c] = rows[left, c]
                for col in range(left + 1, right):
                    for c in range(channels):
                        v = rows[col, c]
                        m = out[n, i, j, c]
                        out[n, i, j, c] = v if v > m else m


def prelu_pool(x: torch.Tensor, slope: torch.Tensor, k: int) -> torch.Tensor:
    """`max_pool2d(prelu(x[:, :C], slope), k, 2, ceil_mode=True)` of a channels-last float32 [N, C', H, W] with
    C = len(slope) <= C' (the first C channels: a convolution padded with zero channels for oneDNN's sake), bit for
    bit, in one pass; returned channels-last [N, C, H', W']."""
    n, _, h, w = x.shape
    if h < k or w < k:
        raise ValueError(f"prelu_pool: a {h} x {w} input is smaller than the {k} x {k} window")
    x = x.contiguous(memory_format=torch.channels_last)
    out = torch.empty((n, -(-(h - k) // 2) + 1, -(-(w - k) // 2) + 1, len(slope)))
    _prelu_pool_kernel(x.permute(0, 2, 3, 1).numpy(), slope.detach().numpy(), k, out.numpy())
    return out.permute(0, 3, 1, 2)


def prelu_cl(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`F.prelu(x, weight)` of a channels-last [N, C, H, W], exactly, computed over its [N H W, C] view: the
    channel is then the last, contiguous dimension (2x faster than PReLU's 4-d broadcast on one core)."""
    n, c, h, w = x.shape
    return F.prelu(x.permute(0, 2, 3, 1).reshape(-1, c), weight).view(n, h, w, c).permute(0, 3, 1, 2)
