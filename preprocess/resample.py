"""Resampling frames exactly as `interpolate(mode="area")` (adaptive average pooling) does, from integral images:
the pyramid's levels and the candidates' crops of preprocess.detector, on the host (OpenCV and two kernels
compiled by numba: a CPU) and on the frames' device (torch: a GPU). The same bins, the same integer sums (exact
in float32 for 8-bit pixels), the same divisions (by the bin height, then its width, in float32) as ATen:
bit-identical (tests/test_detector.py)."""
from __future__ import annotations

import cv2
import numba
import numpy as np
import torch


def integral_image(frames: np.ndarray) -> np.ndarray:
    """[B, H, W, C] uint8 -> [B, H + 1, W + 1, C] running sums of each channel (a zero first row and column), so
    that the sum of any rectangle is four lookups; channels last, as OpenCV computes them (2.5x faster than each
    channel's plane on its own), and the layout the kernels below read: a pixel's channels side by side. int32
    (exact for frames up to 8 megapixels), float64 beyond (exact integers too)."""
    b, h, w, c = frames.shape
    depth = cv2.CV_32S if 255 * h * w < 2**31 else cv2.CV_64F
    out = np.empty((b, h + 1, w + 1, c), np.int32 if depth == cv2.CV_32S else np.float64)
    for i in range(b):
        out[i] = cv2.integral(frames[i], sdepth=depth).reshape(h + 1, w + 1, c)
    return out


def _pixel_bins(length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive average pooling's bins of `length` pixels into `size` cells: cell i covers [floor(i length /
    size), ceil((i + 1) length / size)). Two [size] int64 arrays."""
    i = np.arange(size)
    return (i * length) // size, ((i + 1) * length + size - 1) // size


# The two kernels below compute, for each output cell of every channel, the integer sum of its bin from four
# corners of the integral image, then (float32) sum / bin height / bin width, as ATen's adaptive_avg_pool2d does,
# then (value - shift) * scale (float32; MTCNN's normalisation, which facenet-pytorch applies to the resampled
# pixels). Compiled by numba (cached on disk beside this file): one pass, the divisions vectorised, against a
# dozen numpy passes (one core: pyramid levels 3x, candidates' crops 4.7x faster). error_model="numpy": no
# Python-style zero-division check, whose branch kept LLVM from vectorising the divisions (bins are never empty).

@numba.njit(cache=True, nogil=True, error_model="numpy")
def _resize_kernel(ii, ys, ye, xs, xe, shift, scale, out):
    """ii [H + 1, W + 1, C] of one frame; bins ys / ye [h], xs / xe [w]; out [h, w, C] float32."""
    c_n, w1 = ii.shape[2], ii.shape[1]
    n = xs.shape[0] * c_n
    flat, dst = ii.reshape(ii.shape[0], w1 * c_n), out.reshape(out.shape[0], n)
    left, right = np.empty(n, np.int64), np.empty(n, np.int64)             # each output column's corners
    kw = np.empty(n, np.float32)
    for j in range(xs.shape[0]):
        for c in range(c_n):
            left[j * c_n + c], right[j * c_n + c] = xs[j] * c_n + c, xe[j] * c_n + c
            kw[j * c_n + c] = np.float32(xe[j] - xs[j])
    rows = np.empty_like(flat[0])                                            # one bin's row sums, [(W + 1) C]
    sums = np.empty(n, np.float32)
    for i in range(ys.shape[0]):
        bottom, top = flat[ye[i]], flat[ys[i]]
        for k in range(w1 * c_n):
            rows[k] = bottom[k] - top[k]
        for k in range(n):
            sums[k] = np.float32(rows[right[k]] - rows[left[k]])
        kh, o = np.float32(ye[i] - ys[i]), dst[i]
        for k in range(n):
            o[k] = (sums[k] / kh / kw[k] - shift) * scale


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _crops_kernel(ii, image, order, y0, x0, h, w, size, shift, scale, out):
    """ii [B, H + 1, W + 1, C]; the rectangles' frames, top, left, height, width [N]; out [N, size, size, C]
    float32. The rectangles in `order` (by frame: the frame's integral image stays in the caches)."""
    c_n, w1 = ii.shape[3], ii.shape[2]
    n = size * c_n
    flat, dst = ii.reshape(ii.shape[0], ii.shape[1], w1 * c_n), out.reshape(out.shape[0], size, n)
    left, right = np.empty(n, np.int64), np.empty(n, np.int64)
    kw = np.empty(n, np.float32)
    sums = np.empty(n, np.float32)
    for q in order:
        for j in range(size):
            xs = x0[q] + (j * w[q]) // size
            xe = x0[q] + ((j + 1) * w[q] + size - 1) // size
            for c in range(c_n):
                left[j * c_n + c], right[j * c_n + c] = xs * c_n + c, xe * c_n + c
                kw[j * c_n + c] = np.float32(xe - xs)
        for i in range(size):
            ys = y0[q] + (i * h[q]) // size
            ye = y0[q] + ((i + 1) * h[q] + size - 1) // size
            bottom, top = flat[image[q], ye], flat[image[q], ys]
            for k in range(n):
                sums[k] = np.float32((bottom[right[k]] - top[right[k]]) - (bottom[left[k]] - top[left[k]]))
            kh, o = np.float32(ye - ys), dst[q, i]
            for k in range(n):
                o[k] = (sums[k] / kh / kw[k] - shift) * scale


def area_resize(ii: np.ndarray, size: tuple[int, int], shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Integral images [B, H + 1, W + 1, C] -> the frames resampled to size (h, w) as `interpolate(mode="area")`
    does, then (x - shift) * scale: [B, h, w, C] float32 (channels last, the layout PNet takes on a CPU).
    Bit-identical to interpolate (the same bins and integer sums, the same divisions) for every size but 1 x 1,
    which ATen computes as a mean (MTCNN's levels are >= 12 px)."""
    (ys, ye), (xs, xe) = _pixel_bins(ii.shape[1] - 1, size[0]), _pixel_bins(ii.shape[2] - 1, size[1])
    out = np.empty((len(ii), *size, ii.shape[3]), np.float32)
    for frame, dst in zip(ii, out):
        _resize_kernel(frame, ys, ye, xs, xe, np.float32(shift), np.float32(scale), dst)
    return out


def area_crops(ii: np.ndarray, image: np.ndarray, y0: np.ndarray, x0: np.ndarray, h: np.ndarray, w: np.ndarray,
               size: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """The rectangles [y0, y0 + h) x [x0, x0 + w) of frames `image` (all [N] integers), given the frames' integral
    images [B, H + 1, W + 1, C], each resampled to size x size as `interpolate(mode="area")` (adaptive average
    pooling) does, then (x - shift) * scale: output cell i covers rows floor(i h / size) to ceil((i + 1) h / size).
    Returns [N, size, size, C] float32."""
    image, y0, x0, h, w = (np.ascontiguousarray(v, np.int64) for v in (image, y0, x0, h, w))
    out = np.empty((len(image), size, size, ii.shape[3]), np.float32)
    _crops_kernel(ii, image, np.argsort(image, kind="stable"), y0, x0, h, w, size, np.float32(shift),
                  np.float32(scale), out)
    return out


def integral_image_t(frames: torch.Tensor) -> torch.Tensor:
    """integral_image on the frames' device (a GPU): [B, H, W, C] uint8 -> [B, C, H + 1, W + 1] running sums,
    int32 (exact up to 8 megapixels) or int64 beyond."""
    b, h, w, c = frames.shape
    dtype = torch.int32 if 255 * h * w < 2**31 else torch.int64
    out = frames.new_zeros((b, c, h + 1, w + 1), dtype=dtype)
    out[:, :, 1:, 1:] = frames.permute(0, 3, 1, 2).cumsum(2, dtype=dtype).cumsum(3)
    return out


def _bins(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive average pooling's bins of `length` pixels from `start` into `size` cells: cell i covers
    [start + floor(i length / size), start + ceil((i + 1) length / size)). start, length [N] -> [N, size] twice."""
    i = torch.arange(size, device=length.device)
    return (start[:, None] + (i * length[:, None]) // size,
            start[:, None] + ((i + 1) * length[:, None] + size - 1) // size)


def area_resize_t(ii: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """area_resize on the integral images' device: [B, C, H + 1, W + 1] -> [B, C, h, w] float32, the same bins,
    sums and divisions."""
    zero, height, width = torch.tensor([0, ii.shape[-2] - 1, ii.shape[-1] - 1], device=ii.device)[:, None]
    (ys, ye), (xs, xe) = _bins(zero, height, size[0]), _bins(zero, width, size[1])
    ys, ye, xs, xe = ys[0], ye[0], xs[0], xe[0]                                 # [h], [h], [w], [w]
    rows = ii.index_select(-2, ye) - ii.index_select(-2, ys)                    # [B, C, h, W + 1]
    sums = rows.index_select(-1, xe) - rows.index_select(-1, xs)                # [B, C, h, w]
    return sums.float() / (ye - ys).float()[:, None] / (xe - xs).float()


def area_crops_t(ii: torch.Tensor, image: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, h: torch.Tensor,
                 w: torch.Tensor, size: int) -> torch.Tensor:
    """area_crops on the integral images' device, for all frames at once: the rectangles [y0, y0 + h) x
    [x0, x0 + w) of frames `image` (all [N] int64), given the frames' integral images [B, C, H + 1, W + 1],
    resampled to size x size as `interpolate(mode="area")` does. Returns [N, C, size, size] float32: four
    gathers for every candidate of every frame (facenet-pytorch: an `interpolate` call per candidate)."""
    _, c, rows, cols = ii.shape
    (ys, ye), (xs, xe) = _bins(y0, h, size), _bins(x0, w, size)                 # [N, size] each
    plane = ((image * c)[:, None] + torch.arange(c, device=ii.device)) * (rows * cols)   # [N, C]
    plane = plane[:, :, None, None]
    top, bottom = (ys * cols)[:, None, :, None] + plane, (ye * cols)[:, None, :, None] + plane
    left, right = xs[:, None, None, :], xe[:, None, None, :]
    flat = ii.reshape(-1)
    sums = flat[bottom + right] - flat[top + right] - flat[bottom + left] + flat[top + left]   # [N, C, size, size]
    kh, kw = (ye - ys).float(), (xe - xs).float()
    return sums.float() / kh[:, None, :, None] / kw[:, None, None, :]
