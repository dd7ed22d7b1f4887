"""Training augmentation, per role, in its two implementations from one spec (AugSpec).

A role's spec is the config's `aug` section, with `aug.unlabeled_weak` / `aug.unlabeled_strong` overriding
keys for the two views of unlabeled images (by default nothing is overridden: the authors drew both
unlabeled views from the labeled augmentation). Each spec is applied either

- per image (`train_transform`, torchvision v2, in DataLoader workers) when training from image files:
  RandomResizedCrop, horizontal flip, colour jitter with probability `color_jitter_p`, grayscale with
  probability `grayscale_p`, normalisation; or
- batched on the training device (`BatchAugment`) when training from a pack (datasets/packed.py), on a
  whole uint8 batch at once:

- RandomResizedCrop + horizontal flip: one affine `grid_sample` per batch (bilinear), each image with its
  own crop box (area in `aug.scale`, aspect ratio in [3/4, 4/3], 10 tries then the whole image, as
  torchvision does) and flip sign;
- colour jitter with probability `aug.color_jitter_p`: brightness, contrast, saturation and hue, in that
  fixed order (torchvision shuffles the order per image), hue as a rotation of the chroma plane in YIQ
  space (torchvision rotates H in HSV: close, not identical);
- grayscale with probability `aug.grayscale_p`;
- normalisation (the backbone's mean/std, or the reference code's x/255/255 for `input_scale: seed`).

Opt-in, off in every protocol config: RandAugment (`aug.randaugment: [ops, magnitude]`, torchvision's; for the
strong view of unlabeled images, `aug.unlabeled_strong.randaugment: [2, 10]`, as kekmodel's MPL), before the
crop; ours: JPEG re-encoding (`aug.jpeg_p`, quality drawn from
`aug.jpeg_quality`) and Gaussian blur (`aug.blur_p`, sigma from `aug.blur_sigma`) of the stored image before the
crop, the training-side counterparts of the robustness sweep (DeepfakeBench's and the DFDC winners' recipes
use both). The batched path encodes JPEG on the CPU, image by image (slow on a GPU; it is off by default).

Random parameters are drawn on the CPU from a generator seeded by (seed, stream, step, view), so a batch's
augmentation is the same on any device and with any number of processes (each rank slices the global
batch's parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

# Per-image parameter columns: crop/flip affine (sx, sy, tx, ty), jitter factors (b, c, s, hue), gray flag,
# JPEG quality (0: none), blur sigma (0: none), RandAugment seed (-1: none).
N_PARAMS = 12
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = torch.linalg.inv(_TO_YIQ)


def norm_stats(backbone: str, input_scale: str) -> tuple[list[float], list[float]] | None:
    """(mean, std) for normalisation after scaling to [0, 1]; None for input_scale 'seed' (x / 255 only); zeros
    and ones for 'unit' (pixels in [0, 1], as Tar's paper)."""
    if input_scale == "seed":
        return None
    if input_scale == "unit":
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    import timm
    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
        mean, std = (cfg.mean, cfg.std) if cfg is not None else (None, None)
    except Exception:
        mean = std = None
    return list(mean or (0.485, 0.456, 0.406)), list(std or (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class AugSpec:
    """One role's training augmentation and the input it produces."""
    img_size: int
    backbone: str
    input_scale: str
    scale: tuple[float, float] = (0.5, 1.0)
    hflip: float = 0.5
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    jpeg_p: float = 0.0                          # opt-in degradations, before the crop (off: the authors)
    jpeg_quality: tuple[int, int] = (40, 100)
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    randaugment: tuple[int, int] = (0, 0)        # opt-in RandAugment (ops, magnitude): kekmodel's strong view


ROLES = ("labeled", "unlabeled_weak", "unlabeled_strong")


def aug_spec(cfg: dict, role: str = "labeled") -> AugSpec:
    """The spec of `role` (one of ROLES): `aug`, with `aug.<role>` overrides for the unlabeled views."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    aug = {**cfg["aug"], **(cfg["aug"].get(role) or {} if role != "labeled" else {})}
    spec = AugSpec(cfg["img_size"], cfg["backbone"], cfg["input_scale"])
    return replace(spec, scale=tuple(aug["scale"]), hflip=aug["hflip"], color_jitter=tuple(aug["color_jitter"]),
                   color_jitter_p=aug["color_jitter_p"], grayscale_p=aug["grayscale_p"], jpeg_p=aug["jpeg_p"],
                   jpeg_quality=tuple(aug["jpeg_quality"]), blur_p=aug["blur_p"], blur_sigma=tuple(aug["blur_sigma"]),
                   randaugment=tuple(aug.get("randaugment", (0, 0))))


def view_specs(cfg: dict, data_role: str, views: int) -> list[AugSpec]:
    """The spec of each view of a training batch: labeled data use `aug` for every view; the two views of
    unlabeled data are the weak and the strong one."""
    if data_role == "unlabeled" and views == 2:
        return [aug_spec(cfg, "unlabeled_weak"), aug_spec(cfg, "unlabeled_strong")]
    return [aug_spec(cfg, "labeled")] * views


def normalisation(backbone: str, input_scale: str) -> v2.Transform:
    """uint8 -> float. project: [0, 1] then the backbone's mean/std (unit: [0, 1] alone). seed: the reference code's
    ToTensor() followed by another /255 (inputs in [0, 1/255], no mean/std), needed for the authors' weights."""
    to_float = v2.ToDtype(torch.float32, scale=True)
    stats = norm_stats(backbone, input_scale)
    if stats is None:
        return v2.Compose([to_float, v2.Lambda(lambda x: x / 255.0)])
    return v2.Compose([to_float, v2.Normalize(mean=stats[0], std=stats[1])])


def blur_kernel(sigma: float) -> int:
    """The odd Gaussian kernel size covering +-3 sigma."""
    return 2 * math.ceil(3 * sigma) + 1


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 RGB [3, H, W] re-encoded as JPEG at `quality` (OpenCV, as the robustness sweep's jpeg:Q)."""
    import cv2
    import numpy as np
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy()[:, :, ::-1])
    _, data = cv2.imencode(".jpg", hwc, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1).to(image.device)


class RandomJPEG(torch.nn.Module):
    """Re-encode a uint8 image as JPEG at a quality drawn uniformly from [min, max] (torch's generator)."""

    def __init__(self, quality: tuple[int, int]):
        super().__init__()
        self.quality = quality

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return jpeg(image, int(torch.randint(self.quality[0], self.quality[1] + 1, (1,))))


def degradations(spec: AugSpec) -> list[v2.Transform]:
    """JPEG re-encoding and Gaussian blur with their probabilities; none at probability 0 (a RandomApply at
    p = 0 would still draw a random number and shift every later draw)."""
    out = []
    if spec.jpeg_p > 0:
        out.append(v2.RandomApply([RandomJPEG(spec.jpeg_quality)], p=spec.jpeg_p))
    if spec.blur_p > 0:
        out.append(v2.RandomApply([v2.GaussianBlur(blur_kernel(spec.blur_sigma[1]), sigma=spec.blur_sigma)],
                                  p=spec.blur_p))
    return out


def train_transform(spec: AugSpec) -> v2.Transform:
    """The per-image path: [JPEG (p), blur (p), RandAugment,] RandomResizedCrop, flip, colour jitter (p),
    grayscale (p), normalisation."""
    ops, magnitude = spec.randaugment
    return v2.Compose([
        *degradations(spec),
        *([v2.RandAugment(ops, magnitude)] if ops else []),
        v2.RandomResizedCrop(spec.img_size, scale=spec.scale, antialias=True),
        v2.RandomHorizontalFlip(spec.hflip),
        v2.RandomApply([v2.ColorJitter(*spec.color_jitter)], p=spec.color_jitter_p),
        v2.RandomGrayscale(spec.grayscale_p),
        normalisation(spec.backbone, spec.input_scale),
    ])


def eval_transform(img_size: int, backbone: str, input_scale: str) -> v2.Transform:
    """Evaluation: resize only."""
    return v2.Compose([v2.Resize((img_size, img_size), antialias=True), normalisation(backbone, input_scale)])


class BatchAugment:
    """uint8 images [B, 3, S, S] (any memory format, on any device) -> float32 [B, 3, img_size, img_size]."""

    def __init__(self, spec: AugSpec):
        self.spec = spec
        self.img_size = spec.img_size
        self.scale = spec.scale
        self.hflip, self.jitter_p, self.gray_p = spec.hflip, spec.color_jitter_p, spec.grayscale_p
        self.jitter = spec.color_jitter  # brightness, contrast, saturation, hue
        self.stats = norm_stats(spec.backbone, spec.input_scale)
        self._consts: dict[torch.device, dict[str, torch.Tensor]] = {}

    def consts(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Constant tensors, copied to each device once (a copy from host memory would wait for the GPU)."""
        if device not in self._consts:
            mean, std = self.stats if self.stats is not None else ([0.0] * 3, [255.0] * 3)
            self._consts[device] = {k: v.to(device) for k, v in {
                "gray": torch.tensor(_GRAY), "to_yiq": _TO_YIQ, "from_yiq": _FROM_YIQ,
                "inv_std": 1 / torch.tensor(std).view(1, 3, 1)}.items()}
            self._consts[device]["mean_std"] = list(zip(mean, std))
        return self._consts[device]

    def params(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Random parameters for n images: [n, N_PARAMS] float32 on the CPU."""
        u = lambda *shape: torch.rand(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
        # Crop box as fractions of the image side: 10 candidate boxes per image, the first that fits.
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u(n, 10)
        log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u(n, 10)
        w, h = (area * log_r.exp()).sqrt(), (area / log_r.exp()).sqrt()
        fits = (w <= 1) & (h <= 1)
        first = fits.double().argmax(dim=1, keepdim=True)
        w = torch.where(fits.any(1), w.gather(1, first)[:, 0], torch.ones(n, dtype=torch.float64))
        h = torch.where(fits.any(1), h.gather(1, first)[:, 0], torch.ones(n, dtype=torch.float64))
        # Affine map from output to input coordinates in [-1, 1]: x_in = sx * x_out + tx.
        flip = torch.where(u(n) < self.hflip, -1.0, 1.0)
        tx, ty = (1 - w) * (2 * u(n) - 1), (1 - h) * (2 * u(n) - 1)
        b, c, s, hue = self.jitter
        on = u(n) < self.jitter_p

        def factor(k: float) -> torch.Tensor:  # torchvision's range [max(0, 1 - k), 1 + k]; 1 when off
            lo, hi = max(0.0, 1 - k), 1 + k
            return torch.where(on, lo + (hi - lo) * u(n), 1.0)
        hue_shift = torch.where(on, hue * (2 * u(n) - 1), 0.0)
        gray = (u(n) < self.gray_p).double()
        cols = [w * flip, h, tx, ty, factor(b), factor(c), factor(s), hue_shift, gray]
        # The opt-in degradations draw last (and only when on), so they leave the draws above unchanged.
        zero = torch.zeros(n, dtype=torch.float64)
        (q_lo, q_hi), (s_lo, s_hi) = self.spec.jpeg_quality, self.spec.blur_sigma
        cols.append(torch.where(u(n) < self.spec.jpeg_p, (q_lo + (q_hi - q_lo + 1) * u(n)).floor().clamp(max=q_hi),
                                0.0) if self.spec.jpeg_p > 0 else zero)
        cols.append(torch.where(u(n) < self.spec.blur_p, s_lo + (s_hi - s_lo) * u(n), 0.0) if self.spec.blur_p > 0
                    else zero)
        cols.append((u(n) * (1 << 24)).floor() if self.spec.randaugment[0] else zero - 1)  # exact in float32
        return torch.stack(cols, dim=1).float()  # [n, N_PARAMS]

    def __call__(self, images: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """images: uint8 [B, 3, S, S]; p: [B, N_PARAMS] on the same device (from params())."""
        if self.spec.jpeg_p > 0 or self.spec.blur_p > 0:
            images = degrade(images, p[:, 9], p[:, 10])
        if self.spec.randaugment[0]:
            images = rand_augment(images, p[:, 11], *self.spec.randaugment)
        bsz, size = images.shape[0], self.img_size
        # Crop + flip: the affine map has no rotation, so the sampling grid is separable (cheaper than
        # affine_grid): grid[b, i, j] = (sx_b * u_j + tx_b, sy_b * u_i + ty_b), u = pixel centres in [-1, 1].
        u = (torch.arange(size, device=p.device, dtype=torch.float32) * 2 + 1) / size - 1  # [size]
        gx = p[:, 0, None] * u + p[:, 2, None]  # [B, size]
        gy = p[:, 1, None] * u + p[:, 3, None]  # [B, size]
        grid = torch.empty(bsz, size, size, 2, device=p.device)  # [B, size, size, (x, y)]
        grid[..., 0], grid[..., 1] = gx[:, None, :], gy[:, :, None]
        x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = x.view(bsz, 3, -1)  # [B, 3, size*size], still 0..255
        # Colour jitter and grayscale are affine per image (brightness scales, contrast blends with the mean
        # luma, saturation/hue/grayscale are 3x3 matrices that leave grey unchanged), and so is the
        # normalisation: one batched matrix product and one clamp, in [0, 1] units mapped to normalised ones.
        # (torchvision clamps after each operation; here the clamp comes once, at the end.)
        k = self.consts(x.device)
        gain = (p[:, 4] * p[:, 5] / 255).view(-1, 1, 1)  # brightness * contrast, and uint8 -> [0, 1]
        luma = x.mean(dim=2) @ k["gray"]  # [B] mean luma, 0..255
        offset = (p[:, 4] * (1 - p[:, 5]) * luma / 255).view(-1, 1)  # [B, 1]
        m = colour_matrix(p[:, 6], p[:, 7], p[:, 8], k) * gain  # [B, 3, 3]
        x = torch.bmm(m * k["inv_std"], x)  # [B, 3, size*size]
        # normalised = (clamp(m x + offset, 0, 1) - mean) / std, channel by channel (scalar bounds: fast)
        for c, (mean, std) in enumerate(k["mean_std"]):
            x[:, c].add_((offset - mean) / std).clamp_(-mean / std, (1 - mean) / std)
        x = x.view(bsz, 3, size, size)
        # channels_last feeds the GPU's convolutions directly; on the CPU the first convolution converts.
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


def rand_augment(images: torch.Tensor, seeds: torch.Tensor, ops: int, magnitude: int) -> torch.Tensor:
    """torchvision's RandAugment per image of uint8 [B, 3, S, S], before the crop (the per-image path applies it
    just before the crop too), its draws seeded per image by `seeds` [B] (a batch's augmentation stays a
    function of (seed, stream, step)); on the CPU, image by image, like degrade."""
    transform = v2.RandAugment(ops, magnitude)
    out = images.cpu().clone()
    for i, seed in enumerate(seeds.cpu().tolist()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            out[i] = transform(out[i])
    return out.to(images.device)


def degrade(images: torch.Tensor, quality: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The opt-in degradations of the batched path, per image on uint8 [B, 3, S, S]: JPEG at `quality` [B]
    (encoded and decoded on the CPU, OpenCV) and Gaussian blur of `sigma` [B] (0: none)."""
    from torchvision.transforms.v2 import functional as TF
    out = images.clone()
    for i in torch.nonzero(quality > 0).flatten().tolist():
        out[i] = jpeg(out[i], int(quality[i]))
    for i in torch.nonzero(sigma > 0).flatten().tolist():
        s = float(sigma[i])
        out[i] = TF.gaussian_blur(out[i], [blur_kernel(s)] * 2, [s, s])
    return out


def colour_matrix(saturation: torch.Tensor, hue: torch.Tensor, gray: torch.Tensor,
                  k: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image RGB matrices [B, 3, 3]: saturation (blend with luma), hue (rotation of the chroma plane by
    2*pi*hue in YIQ space), then grayscale where gray is 1. Factors [B]; 1, 0, 0 = identity.
    k: BatchAugment.consts() of the device."""
    dev, b = saturation.device, saturation.shape[0]
    eye = torch.eye(3, device=dev).expand(b, 3, 3)
    luma = k["gray"].expand(3, 3)  # every row = luma weights: RGB -> (Y, Y, Y)
    sat = torch.lerp(luma, eye, saturation.view(-1, 1, 1))  # [B, 3, 3]
    cos, sin = (2 * math.pi * hue).cos(), (2 * math.pi * hue).sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], dim=1).view(b, 3, 3)
    hue_m = k["from_yiq"] @ rot @ k["to_yiq"]  # [B, 3, 3]
    to_gray = torch.lerp(eye, luma.expand(b, 3, 3), gray.view(-1, 1, 1))
    return to_gray @ hue_m @ sat
