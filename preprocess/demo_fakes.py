"""The manipulation families of the embedded demo benchmark (see preprocess/demo.py): each turns a real frame
(and a donor frame of another video) into a fake one, altering a face-like elliptical region."""
from __future__ import annotations

import cv2
import numpy as np

POSTGEN = "StyleGAN"


def _face_mask(rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple]:
    """A soft elliptical 'face' mask [H, W] in [0, 1] and its bounding box (x0, y0, x1, y1)."""
    cx, cy = rng.uniform(0.4, 0.6, 2) * size
    ax, ay = rng.uniform(0.22, 0.32) * size, rng.uniform(0.26, 0.36) * size
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (int(cx), int(cy)), (int(ax), int(ay)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=size / 40)
    box = (max(int(cx - ax), 0), max(int(cy - ay), 0), min(int(cx + ax) + 1, size), min(int(cy + ay) + 1, size))
    return mask, box


def _blend(base: np.ndarray, region: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return base * (1 - m) + region * m


def _match_colour(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift src's per-channel mean/std inside the mask to ref's (the colour correction of swap pipelines)."""
    sel = mask > 0.5
    out = src.astype(np.float32).copy()
    for c in range(3):
        s, r = out[..., c][sel], ref[..., c][sel].astype(np.float32)
        out[..., c] = (out[..., c] - s.mean()) / (s.std() + 1e-3) * (r.std() + 1e-3) + r.mean()
    return np.clip(out, 0, 255)


class PcaAutoencoder:
    """A linear autoencoder (PCA) over 16x16 colour crops, fitted on real training crops at generation time."""

    def __init__(self, crops: np.ndarray, components: int = 24, res: int = 16):
        self.res = res
        x = np.stack([cv2.resize(c, (res, res), interpolation=cv2.INTER_AREA) for c in crops]).astype(np.float32)
        x = x.reshape(len(x), -1)  # [N, res*res*3]
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.basis = vt[:components]  # [K, res*res*3]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        small = cv2.resize(img.astype(np.float32), (self.res, self.res), interpolation=cv2.INTER_AREA).reshape(-1)
        code = (small - self.mean) @ self.basis.T
        recon = (code @ self.basis + self.mean).reshape(self.res, self.res, 3)
        return np.clip(recon, 0, 255)


def deepfakes(frame, donor, rng, ctx):
    mask, (x0, y0, x1, y1) = _face_mask(rng, frame.shape[0])
    region = frame.copy()
    patch = ctx["autoencoder"](frame[y0:y1, x0:x1])
    region[y0:y1, x0:x1] = cv2.resize(patch, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    region = _match_colour(region, frame, mask)
    return _blend(frame, region, mask)


def face2face(frame, donor, rng, ctx):
    size = frame.shape[0]
    mask, (x0, y0, x1, y1) = _face_mask(rng, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Re-enactment re-renders the face texture under a new expression: a magnifying resample of the
    # region (texture rendered at lower density) plus a smooth expression warp, both bilinear.
    zoom = rng.uniform(0.55, 0.7)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    amp = rng.uniform(1.0, 2.5)
    fx, fy = rng.uniform(1.5, 3.0, 2) * 2 * np.pi / size
    phase = rng.uniform(0, 2 * np.pi, 2)
    map_x = cx + (xx - cx) * zoom + amp * np.sin(yy * fy + phase[0])
    map_y = cy + (yy - cy) * zoom + amp * np.sin(xx * fx + phase[1])
    warped = cv2.remap(frame, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    return _blend(frame, warped, mask)


def faceswap(frame, donor, rng, ctx):
    size = frame.shape[0]
    mask, (x0, y0, x1, y1) = _face_mask(rng, size)
    low = cv2.resize(donor, (int(size * 0.4), int(size * 0.4)), interpolation=cv2.INTER_AREA)
    rendered = cv2.resize(low, (size, size), interpolation=cv2.INTER_LINEAR)
    rendered = _match_colour(rendered, frame, mask).astype(np.uint8)
    clone_mask = (mask > 0.5).astype(np.uint8) * 255
    centre = ((x0 + x1) // 2, (y0 + y1) // 2)
    # seamlessClone centres the mask's bounding box on `centre`; use the mask's own box to keep it in place.
    ys, xs = np.nonzero(clone_mask)
    centre = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
    return cv2.seamlessClone(rendered, np.clip(frame, 0, 255).astype(np.uint8), clone_mask, centre,
                             cv2.NORMAL_CLONE).astype(np.float32)


def neural_textures(frame, donor, rng, ctx):
    size = frame.shape[0]
    mask, _ = _face_mask(rng, size)
    base = cv2.GaussianBlur(frame, (0, 0), sigmaX=1.2)
    # A "neural texture": fixed random 3x3 convolutions of white noise, i.e. spatially correlated,
    # oriented high-frequency detail whose statistics differ from the camera noise around it.
    tex = rng.normal(0, 1, (size, size, 3)).astype(np.float32)
    for k in ctx["texture_kernels"]:
        tex = np.tanh(cv2.filter2D(tex, -1, k))
    tex = (tex - tex.mean()) / (tex.std() + 1e-6)
    region = base + rng.uniform(5, 9) * tex
    return _blend(frame, region, mask)


def post_generation(frame, donor, rng, ctx):
    """Full synthesis: a half-resolution image up-sampled by a strided transposed convolution (the
    checkerboard fingerprint of GAN generators), with fine detail synthesised back so that the frame is as
    sharp as a camera frame (no smoothing cue, unlike the face-swap families)."""
    import torch
    import torch.nn.functional as F

    size = frame.shape[0]
    low = cv2.resize(frame, (size // 2, size // 2), interpolation=cv2.INTER_AREA)
    low = cv2.copyMakeBorder(low, 1, 1, 1, 1, cv2.BORDER_REPLICATE)  # no dark rim at the frame's edges
    x = torch.from_numpy(low.transpose(2, 0, 1)[None].copy())  # [1, 3, h + 2, w + 2]
    y = F.conv_transpose2d(x, ctx["upsample_kernel"], stride=2, padding=1, groups=3)[..., 2:-2, 2:-2]  # [1, 3, 2h, 2w]
    detail = frame - cv2.GaussianBlur(frame, (0, 0), sigmaX=1.0)
    return y[0].numpy().transpose(1, 2, 0) + detail


FAMILIES = {"Deepfakes": deepfakes, "Face2Face": face2face, "FaceSwap": faceswap,
            "NeuralTextures": neural_textures, POSTGEN: post_generation}


def context(photos: list, size: int, rng: np.random.Generator, video_track, crop) -> dict:
    """What the families share, fitted once per demo: the PCA autoencoder (on real crops of the train part,
    taken along video tracks), the neural-texture kernels and the up-sampling kernel."""
    import torch
    crops = []
    for photo in photos:
        for window in video_track(rng, photo.shape, "train", 12, size):
            crops.append(crop(photo, window, size))
    kernels = [rng.normal(0, 0.6, (3, 3)).astype(np.float32) for _ in range(2)]
    # 4x4 transposed-conv kernel, stride 2: uneven overlap -> a period-2 pattern in the output.
    base = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25]).astype(np.float32)
    kernel = base * (1 + rng.uniform(-0.08, 0.08, (4, 4)).astype(np.float32))
    kernel = torch.from_numpy(np.repeat(kernel[None, None], 3, 0))  # [3, 1, 4, 4]
    return {"autoencoder": PcaAutoencoder(np.stack(crops)), "texture_kernels": kernels, "upsample_kernel": kernel}
