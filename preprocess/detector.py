"""MTCNN face detection as facenet-pytorch runs it, faster on a CPU and on a GPU.

`Detector` runs facenet-pytorch's three networks with the same weights, thresholds, pyramid, NMS and box
regression (facenet-pytorch's own helpers), and changes only how the work is done. On a CPU, measured on one
core of a 2-core AMD EPYC (bench/results-cpu.md), in the order of what they saved:

- every resampling is cut from an integral image of the frame (preprocess.resample): the pyramid's levels and
  all of a frame's candidates of the second and third stages at once (facenet-pytorch: one
  `interpolate(mode="area")` call per candidate, about a hundred per frame), by two compiled kernels (numba) that
  fold in MTCNN's normalisation. Bit-identical to `interpolate(mode="area")` (adaptive average pooling), then
  facenet-pytorch's normalisation: the same bins, the same integer sums (exact in float32 for 8-bit pixels),
  divided by the bin height and then its width in float32, as ATen does;
- PNet runs each pyramid level on about 600,000 pixels of frames at a time: a few frames at the largest
  levels (their activations stay in the CPU's caches; a batch of 16 frames of 640 x 360 made the elementwise
  passes several times slower per frame), many at the small ones (one frame of those is mostly per-call
  overhead); RNet / ONet 128 / 32 candidates at a time rather than 512;
- the three networks channels-last, each layer in its fastest form (preprocess.cpu_layers): every PReLU
  followed by a max pooling computed with it in one compiled pass (bit-identical), the other PReLUs over their
  [N H W, C] view (exact), the first convolutions of PNet and RNet 16 / 32 channels wide rather than 10 / 28
  (oneDNN's blocks of 8; zero channels), PNet's two 1 x 1 heads as one matrix product, and its two-class
  softmax as the logistic of the difference. RNet's and ONet's outputs are facenet-pytorch's bit for bit,
  PNet's to float rounding.

The compiled kernels are built on their first use on a machine (about 4 s) and cached on disk beside their
modules (numba's cache); later processes load them.

On a GPU (`on_device`, the default there) the frames go to the GPU once: their integral images, the pyramid's
levels and every candidate's crop of a call are cut there by torch (four gathers for all candidates at once, where
facenet-pytorch makes an `interpolate` call and a host sync per candidate), and facenet-pytorch's networks run as
they are. H200, 640 x 360 frames 32 at a time: 944 frames/s (bench/results-h200.md).

tests/test_detector.py compares both forms with facenet-pytorch's `MTCNN.detect` on real frames (the GPU's form
on a CPU too, and on a GPU when there is one).
"""
from __future__ import annotations

import ctypes

import numpy as np
import torch
import torch.nn.functional as F

from preprocess.cpu_layers import prelu_cl, prelu_pool
from preprocess.resample import area_crops, area_crops_t, area_resize, area_resize_t, integral_image, integral_image_t


def keep_freed_memory() -> bool:
    """Have the C library's malloc keep freed memory for the next allocations instead of handing blocks of over
    128 KB back to the kernel: the detector allocates and frees several MB per pyramid level and layer, and each
    such block came back as fresh pages, zeroed by the kernel on first touch (one core, 640 x 360 frames: about
    600 page faults and 2 ms of system time a frame, against 50 and 0.4 ms with this). Blocks up to 32 MB come
    from the heap, and up to 256 MB of freed heap is kept. Process-wide; the detections are unchanged. Returns
    False where the C library has no such setting (not glibc): then nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3                                 # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))


def padded_first(conv, prelu, conv2) -> dict:
    """A network's first convolution and PReLU padded with zero channels to a multiple of 8 (w [C', 3, k, k], b
    and slope [C']), and its second convolution's weights with zero weights for them (w2): the padded channels are
    zeros after the PReLU and the pooling, and add nothing to the second convolution's sums (bit-identical)."""
    w, b, slope, w2 = (t.detach() for t in (conv.weight, conv.bias, prelu.weight, conv2.weight))
    pad = -len(w) % 8
    return dict(w=torch.cat([w, w.new_zeros(pad, *w.shape[1:])]), b=torch.cat([b, b.new_zeros(pad)]),
                slope=torch.cat([slope, slope.new_zeros(pad)]),
                w2=torch.cat([w2, w2.new_zeros(len(w2), pad, *w2.shape[2:])], 1))


def chunked(net, x: torch.Tensor, chunk: int) -> tuple:
    """Run a stage's network on [N, 3, S, S] float32 pixels (normalised by Detector._cut as facenet-pytorch does),
    `chunk` candidates at a time. On a CPU small enough for a chunk's activations to stay in the caches (first
    layer's output 7 MB for 128 RNet candidates, 9 MB for 32 ONet ones; facenet-pytorch's 512 made RNet 1.5x
    and ONet 1.9x slower per candidate on one core, 64 ONet candidates 1.4x)."""
    outs = [net(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    return tuple(torch.cat(v, dim=0) for v in zip(*outs))


class CpuNets:
    """facenet-pytorch's three networks in their fastest forms on a CPU core (the same layers and weights): what
    a Detector off the device runs, and how many candidates a call (CHUNKS; see run)."""

    # RNet's and ONet's candidates a call (see chunked)
    CHUNKS = (128, 32)

    def __init__(self, mtcnn):
        self.mtcnn = mtcnn
        p = mtcnn.pnet    # PNet's two 1 x 1 heads (face / not face, box offsets) as one [6, 32] matrix
        self.head_w = torch.cat([p.conv4_1.weight, p.conv4_2.weight]).flatten(1).detach()
        self.head_b = torch.cat([p.conv4_1.bias, p.conv4_2.bias]).detach()[:, None]
        # the first convolutions of PNet and RNet padded with zero channels to a multiple of 8 (oneDNN's block: 10
        # and 28 channels out took 1.4x as long as 16 and 32), and the second convolutions' inputs with zero weights
        self.pnet_first, self.rnet_first = (padded_first(n.conv1, n.prelu1, n.conv2) for n in (p, mtcnn.rnet))

    def pnet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """facenet-pytorch's PNet on a normalised channels-last pyramid level of G frames [G, 3, h, w]: box
        offsets [G, 4, h', w'] and face probabilities [G, h', w']. The same layers and weights, each in its
        fastest form on a CPU core: the first convolution 16 channels wide (pnet_first), its PReLU and pooling in
        one pass (prelu_pool), the other PReLUs over their [N H W, C] view (prelu_cl), the two 1 x 1 heads as one
        matrix product [6, 32] x [32, N H W] (3x faster than the other way round, whose 6 columns MKL handles
        poorly) and the two-class softmax as the logistic of the difference. These agree with facenet-pytorch's
        outputs to float rounding (the heads and the logistic)."""
        p, q = self.mtcnn.pnet, self.pnet_first
        x = prelu_pool(F.conv2d(x, q["w"], q["b"]), q["slope"], 2)                # [G, 16, h/2, w/2]
        x = prelu_cl(F.conv2d(x, q["w2"], p.conv2.bias), p.prelu2.weight)
        x = prelu_cl(F.conv2d(x, p.conv3.weight, p.conv3.bias), p.prelu3.weight)
        g, c, h, w = x.shape
        y = torch.addmm(self.head_b, self.head_w, x.permute(0, 2, 3, 1).reshape(-1, c).t()).view(6, g, h, w)
        # softmax over two classes, as the logistic of their difference (the same to float rounding, 4x faster
        # than softmax over a strided dimension)
        return y[2:].permute(1, 0, 2, 3), torch.sigmoid(y[1] - y[0])

    def rnet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """facenet-pytorch's RNet.forward on channels-last [N, 3, 24, 24], with its PReLUs and poolings as
        prelu_pool (or prelu_cl where no pooling follows) and its first convolution 32 channels wide (rnet_first):
        the same outputs, bit for bit. Box offsets [N, 4], face probabilities [N, 2]."""
        r = self.mtcnn.rnet
        q = self.rnet_first
        x = prelu_pool(F.conv2d(x, q["w"], q["b"]), q["slope"], 3)
        x = prelu_pool(F.conv2d(x, q["w2"], r.conv2.bias), r.prelu2.weight, 3)
        x = prelu_cl(r.conv3(x), r.prelu3.weight)
        x = r.prelu4(r.dense4(x.permute(0, 3, 2, 1).reshape(len(x), -1)))   # flattened as facenet-pytorch does
        return r.dense5_2(x), r.softmax5_1(r.dense5_1(x))

    def onet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """facenet-pytorch's ONet.forward on channels-last [N, 3, 48, 48] with its PReLUs and poolings as
        prelu_pool (or prelu_cl where no pooling follows): the same outputs, bit for bit (its 4-d PReLUs were a
        quarter of ONet's time). Box offsets [N, 4], landmarks [N, 10], face probabilities [N, 2]."""
        o = self.mtcnn.onet
        x = prelu_pool(o.conv1(x), o.prelu1.weight, 3)
        x = prelu_pool(o.conv2(x), o.prelu2.weight, 3)
        x = prelu_pool(o.conv3(x), o.prelu3.weight, 2)
        x = prelu_cl(o.conv4(x), o.prelu4.weight)
        x = o.prelu5(o.dense5(x.permute(0, 3, 2, 1).reshape(len(x), -1)))  # flattened as facenet-pytorch does
        return o.dense6_2(x), o.dense6_3(x), o.softmax6_1(o.dense6_1(x))

class Cascade:
    """MTCNN's three stages over the frames of one call, on the integral images of the frames: PNet over the
    scale pyramid, RNet and ONet on the candidates' crops (Detector holds the networks and the device)."""

    # PNet's pyramid levels run GROUP_PIXELS pixels of frames at a time: the large levels a few frames at a
    # time (their activations then stay in the CPU's caches: 16 frames of the largest level at once took 2.4x
    # as long per frame), the small ones many frames per call (a 14 x 25 level of one frame is all call
    # overhead). One core of a 2-core AMD EPYC, 640 x 360 frames: 300,000 made the whole detector 6% slower,
    # 1 million 4%, 1.6 million 20% (bench/results-cpu.md).
    GROUP_PIXELS = 600_000

    def _cut(self, ii, boxes: torch.Tensor, image_inds: torch.Tensor, width: int, height: int, size: int):
        """The candidates' squares as facenet-pytorch cuts them (pad(): 1-based, clipped to the frame), at
        size x size and normalised as facenet-pytorch does, [N, 3, size, size] float32 (on a CPU with
        channels-last strides); and which candidates had a non-empty square (facenet-pytorch fails on an empty
        one)."""
        y, ey, x, ex = self.ref.pad(boxes, width, height)
        y0, x0 = y.astype(np.int64) - 1, x.astype(np.int64) - 1
        h, w = ey.astype(np.int64) - y0, ex.astype(np.int64) - x0
        ok = (h > 0) & (w > 0)
        if self.on_device:
            keep = torch.from_numpy(ok).to(boxes.device)
            y0, x0, h, w = (torch.from_numpy(v[ok]).to(ii.device) for v in (y0, x0, h, w))
            crops = area_crops_t(ii, image_inds[keep], y0, x0, h, w, size)
            return (crops - 127.5) * 0.0078125, keep                            # normalised as facenet-pytorch
        crops = area_crops(ii, image_inds.cpu().numpy()[ok], y0[ok], x0[ok], h[ok], w[ok], size, 127.5, 0.0078125)
        return torch.from_numpy(crops).permute(0, 3, 1, 2), torch.from_numpy(ok)

    def _pyramid(self, ii, pnet, batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """1. PNet over the scale pyramid (as facenet-pytorch: 12 / min_face_size, times `factor` while >= 12 px), a
        group of frames at a time: the same candidates as facenet-pytorch's batch of all frames, squared [K, 5] and
        their frames [K]."""
        m, ref = self.mtcnn, self.ref
        scale, minl, scales = 12.0 / m.min_face_size, min(height, width) * 12.0 / m.min_face_size, []
        while minl >= 12:
            scales.append(scale)
            scale, minl = scale * m.factor, minl * m.factor
        boxes, image_inds, picks, offset = [], [], [], 0
        for scale in scales:
            size = (int(height * scale + 1), int(width * scale + 1))
            group = batch if self.on_device else max(1, self.GROUP_PIXELS // (size[0] * size[1]))
            for b in range(0, batch, group):
                if self.on_device:                                              # normalised as facenet-pytorch
                    level = (area_resize_t(ii[b:b + group], size) - 127.5) * 0.0078125   # [G, 3, h, w]
                else:
                    level = torch.from_numpy(area_resize(ii[b:b + group], size, 127.5, 0.0078125)).permute(0, 3, 1, 2)
                reg, probs = pnet(level)
                boxes_s, inds_s = ref.generateBoundingBox(reg, probs, scale, m.thresholds[0])
                inds_s += b
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
        return ref.rerec(boxes), image_inds

    def _refine(self, ii, boxes, image_inds, rnet, chunk: int, width: int, height: int):
        """2. RNet on 24 x 24 crops of the candidates: the ones it keeps, regressed and squared."""
        ref = self.ref
        crops, ok = self._cut(ii, boxes, image_inds, width, height, 24)
        boxes, image_inds = boxes[ok], image_inds[ok]
        reg, prob = chunked(rnet, crops, chunk)
        score = prob[:, 1]
        keep = score > self.mtcnn.thresholds[1]
        boxes = torch.cat((boxes[keep, :4], score[keep].unsqueeze(1)), dim=1)
        image_inds, reg = image_inds[keep], reg[keep]
        pick = ref.batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds, reg = boxes[pick], image_inds[pick], reg[pick]
        return ref.rerec(ref.bbreg(boxes, reg)), image_inds

    def _output(self, ii, boxes, image_inds, onet, chunk: int, width: int, height: int):
        """3. ONet on 48 x 48 crops: final score, box regression, five landmarks [K, 5, 2]."""
        ref = self.ref
        crops, ok = self._cut(ii, boxes, image_inds, width, height, 48)
        boxes, image_inds = boxes[ok], image_inds[ok]
        reg, marks, prob = chunked(onet, crops, chunk)
        score = prob[:, 1]
        keep = score > self.mtcnn.thresholds[2]
        marks = marks[keep].permute(1, 0)                                        # [10, K]
        boxes = torch.cat((boxes[keep, :4], score[keep].unsqueeze(1)), dim=1)
        image_inds, reg = image_inds[keep], reg[keep]
        w_i, h_i = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        points_x = w_i.repeat(5, 1) * marks[:5, :] + boxes[:, 0].repeat(5, 1) - 1
        points_y = h_i.repeat(5, 1) * marks[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
        points = torch.stack((points_x, points_y)).permute(2, 1, 0)              # [K, 5, 2]
        boxes = ref.bbreg(boxes, reg)
        pick = ref.batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
        return boxes[pick], image_inds[pick], points[pick]


class Detector(Cascade):
    """`Detector(mtcnn).detect(img, landmarks)` returns what `mtcnn.detect(img, landmarks)` returns (an MTCNN
    built with keep_all=True) for an RGB uint8 frame [H, W, 3] or a list of equal-sized ones: boxes [K, 4] and
    probs [K] (with landmarks, points [K, 5, 2]) per frame, None where no face. Other inputs (PIL images,
    float arrays) go to facenet-pytorch's own implementation."""


    def __init__(self, mtcnn, on_device: bool | None = None):
        """on_device: cut the pyramid's levels and the candidates with torch on the MTCNN's device, all frames of
        a call at once, and run facenet-pytorch's networks as they are (default on a GPU: the frames go to it
        once); else with OpenCV / numpy on the host and the networks in their CPU forms (default on a CPU)."""
        from facenet_pytorch.models.utils import detect_face as reference
        self.mtcnn, self.ref = mtcnn, reference
        self.device = torch.device(mtcnn.device)
        self.on_device = self.device.type != "cpu" if on_device is None else on_device
        self.nets = None if self.on_device else CpuNets(mtcnn)

    def _pnet_module(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """facenet-pytorch's PNet as it is (on a GPU): box offsets [G, 4, h', w'], face probabilities [G, h', w']."""
        reg, probs = self.mtcnn.pnet(x)
        return reg, probs[:, 1]

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
        stack = np.ascontiguousarray(np.stack(frames))                          # [B, H, W, 3] uint8
        batch, height, width = stack.shape[:3]
        # the integral images of the pyramid's levels and the candidates' crops: [B, 3, H + 1, W + 1] on the device,
        # [B, H + 1, W + 1, 3] on the host
        if self.on_device:
            ii = integral_image_t(torch.from_numpy(stack).to(self.device))
            nets = (self._pnet_module, self.mtcnn.rnet, self.mtcnn.onet), (512, 512)   # facenet-pytorch's forms
        else:
            ii = integral_image(stack)
            nets = (self.nets.pnet, self.nets.rnet, self.nets.onet), CpuNets.CHUNKS
        (pnet, rnet, onet), chunks = nets
        boxes, image_inds = self._pyramid(ii, pnet, batch, height, width)       # 1. PNet
        if len(boxes):                                                          # 2. RNet
            boxes, image_inds = self._refine(ii, boxes, image_inds, rnet, chunks[0], width, height)
        points = torch.zeros(0, 5, 2, device=self.device)
        if len(boxes):                                                          # 3. ONet
            boxes, image_inds, points = self._output(ii, boxes, image_inds, onet, chunks[1], width, height)
        return per_frame(boxes, points, image_inds, batch, self.mtcnn.select_largest)

def per_frame(boxes, points, image_inds, batch: int, select_largest: bool):
    """MTCNN.detect's output: per frame its boxes [K, 4], probabilities [K] and landmarks [K, 5, 2] (largest
    box first), None where no face."""
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
        if select_largest:  # MTCNN.detect's order: largest box first
            order = np.argsort((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))[::-1]
            box, point = box[order], point[order]
        out_boxes.append(box[:, :4])
        out_probs.append(box[:, 4])
        out_points.append(point)
    return out_boxes, out_probs, out_points
