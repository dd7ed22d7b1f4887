"""MTCNN face detection as facenet-pytorch runs it, with its two CPU bottlenecks removed.

facenet-pytorch's `detect_face` (the detector of the authors' pipeline) spends about a third of its CPU time
cutting candidate faces for its second and third stages: one `interpolate(mode="area")` call per candidate
(about a hundred per frame), each a few hundred microseconds of call overhead for a 24 x 24 or 48 x 48 result.
`Detector` runs the same three networks with the same weights, thresholds, pyramid, NMS and box regression
(facenet-pytorch's own helpers), and changes only how the work is done:

- every candidate of a stage is cut and resampled at once from an integral image of the frames. The result is
  bit-identical to `interpolate(mode="area")` (adaptive average pooling): the same bins, the same integer sums
  (exact in float32 for 8-bit pixels), divided by the bin height and then its width in float32, as ATen does;
- the networks run on channels-last tensors (faster convolutions and max pooling on CPU; their outputs agree
  with the default layout to float rounding).

tests/test_detector.py compares it with facenet-pytorch's `MTCNN.detect` on real frames.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def integral_image(frames: np.ndarray) -> np.ndarray:
    """[B, H, W, C] uint8 -> [B, H + 1, W + 1, C] running sums (a zero first row and column), so that the sum
    of any rectangle is four lookups; int32 (exact for frames up to 8 megapixels), int64 beyond."""
    b, h, w, c = frames.shape
    dtype = np.int32 if 255 * h * w < 2**31 else np.int64
    ii = np.zeros((b, h + 1, w + 1, c), dtype)
    np.cumsum(frames, axis=1, dtype=dtype, out=ii[:, 1:, 1:])
    np.cumsum(ii[:, 1:, 1:], axis=2, out=ii[:, 1:, 1:])
    return ii


def area_crops(ii: np.ndarray, image: np.ndarray, y0: np.ndarray, x0: np.ndarray, h: np.ndarray, w: np.ndarray,
               size: int) -> np.ndarray:
    """The rectangles [y0, y0 + h) x [x0, x0 + w) of frames `image` (all [N]), each resampled to size x size as
    `interpolate(mode="area")` (adaptive average pooling) does: output cell i covers rows floor(i h / size) to
    ceil((i + 1) h / size). Returns [N, size, size, C] float32."""
    i = np.arange(size)
    ys, ye = y0[:, None] + (i * h[:, None]) // size, y0[:, None] + ((i + 1) * h[:, None] + size - 1) // size
    xs, xe = x0[:, None] + (i * w[:, None]) // size, x0[:, None] + ((i + 1) * w[:, None] + size - 1) // size
    b = image[:, None, None]
    ys_, ye_, xs_, xe_ = ys[:, :, None], ye[:, :, None], xs[:, None, :], xe[:, None, :]
    sums = ii[b, ye_, xe_] - ii[b, ys_, xe_] - ii[b, ye_, xs_] + ii[b, ys_, xs_]      # [N, size, size, C]
    kh, kw = (ye - ys).astype(np.float32), (xe - xs).astype(np.float32)
    # ATen's adaptive_avg_pool2d: sum / kh / kw, in this order, in float32
    return sums.astype(np.float32) / kh[:, :, None, None] / kw[:, None, :, None]


class Detector:
    """`Detector(mtcnn).detect(img, landmarks)` returns what `mtcnn.detect(img, landmarks)` returns (an MTCNN
    built with keep_all=True) for an RGB uint8 frame [H, W, 3] or a list of equal-sized ones: boxes [K, 4] and
    probs [K] (with landmarks, points [K, 5, 2]) per frame, None where no face. Other inputs (PIL images,
    float arrays) go to facenet-pytorch's own implementation."""

    def __init__(self, mtcnn):
        from facenet_pytorch.models.utils import detect_face as reference
        self.mtcnn, self.ref = mtcnn, reference
        self.device = torch.device(mtcnn.device)

    def _net(self, net, images: np.ndarray) -> tuple:
        """Run a stage's network on [N, S, S, 3] float32 pixels (normalised as facenet-pytorch does), channels
        last, in chunks of 512 as its fixed_batch_process."""
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2)   # [N, 3, S, S], channels-last strides
        x = (x - 127.5) * 0.0078125
        outs = [net(x[i:i + 512]) for i in range(0, len(x), 512)]
        return tuple(torch.cat(v, dim=0) for v in zip(*outs))

    def _cut(self, ii: np.ndarray, boxes: torch.Tensor, image_inds: torch.Tensor, width: int, height: int,
             size: int):
        """The candidates' squares as facenet-pytorch cuts them (pad(): 1-based, clipped to the frame), at
        size x size; and which candidates had a non-empty square (facenet-pytorch fails on an empty one)."""
        y, ey, x, ex = self.ref.pad(boxes, width, height)
        y0, x0 = y.astype(np.int64) - 1, x.astype(np.int64) - 1
        h, w = ey.astype(np.int64) - y0, ex.astype(np.int64) - x0
        ok = (h > 0) & (w > 0)
        crops = area_crops(ii, image_inds.cpu().numpy()[ok], y0[ok], x0[ok], h[ok], w[ok], size)
        return crops, torch.from_numpy(ok).to(boxes.device)

    def detect(self, img, landmarks: bool = False):
        single = isinstance(img, np.ndarray) and img.ndim == 3
        frames = [img] if single else img
        if not (isinstance(frames, (list, tuple)) and frames and all(
                isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3 and f.shape == frames[0].shape
                for f in frames)):
            return self.mtcnn.detect(img, landmarks=landmarks)
        out = self._detect(frames)
        if single:
            out = tuple(v[0] for v in out)
        return out if landmarks else out[:2]

    @torch.no_grad()
    def _detect(self, frames: list[np.ndarray]):
        m, ref = self.mtcnn, self.ref
        threshold, factor = m.thresholds, m.factor
        stack = np.ascontiguousarray(np.stack(frames))                          # [B, H, W, 3] uint8
        batch, height, width = stack.shape[:3]
        # [B, 3, H, W]: contiguous for the pyramid's resampling (ATen's area kernel is slower on channels last)
        imgs = torch.from_numpy(stack).to(self.device).permute(0, 3, 1, 2).float().contiguous()

        # 1. PNet over the scale pyramid (as facenet-pytorch: 12 / min_face_size, times `factor` while >= 12 px)
        scale, minl, scales = 12.0 / m.min_face_size, min(height, width) * 12.0 / m.min_face_size, []
        while minl >= 12:
            scales.append(scale)
            scale, minl = scale * factor, minl * factor
        boxes, image_inds, picks, offset = [], [], [], 0
        for scale in scales:
            im = F.interpolate(imgs, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
            reg, probs = m.pnet(((im - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last))
            boxes_s, inds_s = ref.generateBoundingBox(reg, probs[:, 1], scale, threshold[0])
            boxes.append(boxes_s)
            image_inds.append(inds_s)
            picks.append(ref.batched_nms(boxes_s[:, :4], boxes_s[:, 4], inds_s, 0.5) + offset)
            offset += boxes_s.shape[0]
        picks = torch.cat(picks)
        boxes, image_inds = torch.cat(boxes)[picks], torch.cat(image_inds)[picks]
        pick = ref.batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[pick], image_inds[pick]
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                             boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                             boxes[:, 4]]).permute(1, 0)
        boxes = ref.rerec(boxes)
        ii = integral_image(stack) if len(boxes) else None

        # 2. RNet on 24 x 24 crops of the candidates
        if len(boxes):
            crops, ok = self._cut(ii, boxes, image_inds, width, height, 24)
            boxes, image_inds = boxes[ok], image_inds[ok]
            reg, prob = self._net(m.rnet, crops)
            score = prob[:, 1]
            keep = score > threshold[1]
            boxes = torch.cat((boxes[keep, :4], score[keep].unsqueeze(1)), dim=1)
            image_inds, reg = image_inds[keep], reg[keep]
            pick = ref.batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds, reg = boxes[pick], image_inds[pick], reg[pick]
            boxes = ref.rerec(ref.bbreg(boxes, reg))

        # 3. ONet on 48 x 48 crops: final score, box regression, five landmarks
        points = torch.zeros(0, 5, 2, device=self.device)
        if len(boxes):
            crops, ok = self._cut(ii, boxes, image_inds, width, height, 48)
            boxes, image_inds = boxes[ok], image_inds[ok]
            reg, marks, prob = self._net(m.onet, crops)
            score = prob[:, 1]
            keep = score > threshold[2]
            marks = marks[keep].permute(1, 0)                                    # [10, K]
            boxes = torch.cat((boxes[keep, :4], score[keep].unsqueeze(1)), dim=1)
            image_inds, reg = image_inds[keep], reg[keep]
            w_i, h_i = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
            points_x = w_i.repeat(5, 1) * marks[:5, :] + boxes[:, 0].repeat(5, 1) - 1
            points_y = h_i.repeat(5, 1) * marks[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
            points = torch.stack((points_x, points_y)).permute(2, 1, 0)          # [K, 5, 2]
            boxes = ref.bbreg(boxes, reg)
            pick = ref.batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
            boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

        boxes, points, image_inds = boxes.cpu().numpy(), points.cpu().numpy(), image_inds.cpu().numpy()
        out_boxes, out_probs, out_points = [], [], []
        for b in range(batch):
            sel = image_inds == b
            if not sel.any():
                out_boxes.append(None)
                out_probs.append([None])
                out_points.append(None)
                continue
            box, point = boxes[sel], points[sel]
            if m.select_largest:  # MTCNN.detect's order: largest box first
                order = np.argsort((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))[::-1]
                box, point = box[order], point[order]
            out_boxes.append(box[:, :4])
            out_probs.append(box[:, 4])
            out_points.append(point)
        return out_boxes, out_probs, out_points
