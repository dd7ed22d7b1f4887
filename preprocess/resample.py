"""Resampling frames exactly as `interpolate(mode="area")` (adaptive average pooling) does, from integral images:
the pyramid's levels and the candidates' crops of preprocess.detector, on the host (OpenCV / numpy: a CPU) and on
the frames' device (torch: a GPU). The same bins, the same integer sums (exact in float32 for 8-bit pixels), the
same divisions (by the bin height, then its width, in float32) as ATen: bit-identical (tests/test_detector.py)."""
from __future__ import annotations

import cv2
import numpy as np
import torch


def integral_image(frames: np.ndarray) -> np.ndarray:
    """[B, H, W, C] uint8 -> [B, C, H + 1, W + 1] running sums of each channel (a zero first row and column), so
    that the sum of any rectangle is four lookups; channels first, the layout of the pyramid levels PNet takes.
    By OpenCV (10x numpy's cumsum) on each channel's plane, written in place; int32 (exact for frames up to 8
    megapixels), float64 beyond (exact integers too)."""
    b, h, w, c = frames.shape
    depth = cv2.CV_32S if 255 * h * w < 2**31 else cv2.CV_64F
    out = np.empty((b, c, h + 1, w + 1), np.int32 if depth == cv2.CV_32S else np.float64)
    for i in range(b):
        for k, plane in enumerate(cv2.split(frames[i])):
            cv2.integral(plane, out[i, k], sdepth=depth)
    return out


def area_resize(ii: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Integral images, channels first [..., C, H + 1, W + 1] (one frame or a batch) -> the frames resampled to
    size (h, w) as `interpolate(mode="area")` does, [..., C, h, w] float32 with channels-last strides (the
    layout PNet takes on a CPU); bit-identical to it (the same bins and integer sums, the same divisions) for
    every size but 1 x 1, which ATen computes as a mean (MTCNN's levels are >= 12 px). Separable: the rows'
    bin sums first, then the columns'."""
    (height, width), (h, w) = (ii.shape[-2] - 1, ii.shape[-1] - 1), size
    i, j = np.arange(h), np.arange(w)
    ys, ye = (i * height) // h, ((i + 1) * height + h - 1) // h
    xs, xe = (j * width) // w, ((j + 1) * width + w - 1) // w
    rows = np.take(ii, ye, axis=-2)
    rows -= np.take(ii, ys, axis=-2)                                           # [..., C, h, W + 1]
    sums = np.take(rows, xe, axis=-1)
    sums -= np.take(rows, xs, axis=-1)                                         # [..., C, h, w]
    planes = sums.astype(np.float32)
    planes /= (ye - ys).astype(np.float32)[:, None]
    planes /= (xe - xs).astype(np.float32)
    # returned channels-last (PNet's first convolution is 1.6x faster on it): OpenCV interleaves each frame's
    # planes (5x faster than numpy's or torch's transposing copy)
    c = planes.shape[-3]
    out = np.empty(planes.shape[:-3] + (h, w, c), np.float32)
    for src, dst in zip(planes.reshape(-1, c, h, w), out.reshape(-1, h, w, c)):
        cv2.merge(list(src), dst)
    return np.moveaxis(out, -1, -3)


def area_crops(ii: np.ndarray, y0: np.ndarray, x0: np.ndarray, h: np.ndarray, w: np.ndarray, size: int) -> np.ndarray:
    """The rectangles [y0, y0 + h) x [x0, x0 + w) (all [N]) of one frame, given its integral image [C, H + 1, W + 1],
    each resampled to size x size as `interpolate(mode="area")` (adaptive average pooling) does: output cell i
    covers rows floor(i h / size) to ceil((i + 1) h / size). Returns [N, size, size, C] float32."""
    i = np.arange(size)
    ys, ye = y0[:, None] + (i * h[:, None]) // size, y0[:, None] + ((i + 1) * h[:, None] + size - 1) // size
    xs, xe = x0[:, None] + (i * w[:, None]) // size, x0[:, None] + ((i + 1) * w[:, None] + size - 1) // size
    # the four corners of every cell as positions in the flat integral image (one take each: 2.5x faster than
    # indexing it with four broadcast index arrays)
    c, rows, cols = ii.shape
    plane = np.arange(c) * (rows * cols)
    top, bottom = (ys * cols)[:, :, None, None], (ye * cols)[:, :, None, None]
    left, right = xs[:, None, :, None] + plane, xe[:, None, :, None] + plane
    flat = ii.reshape(-1)
    sums = flat[bottom + right] - flat[top + right] - flat[bottom + left] + flat[top + left]   # [N, size, size, C]
    kh, kw = (ye - ys).astype(np.float32), (xe - xs).astype(np.float32)
    # ATen's adaptive_avg_pool2d: sum / kh / kw, in this order, in float32
    return sums.astype(np.float32) / kh[:, :, None, None] / kw[:, None, :, None]


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
