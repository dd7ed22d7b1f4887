"""Grad-CAM (models/gradcam.py, explain.py): the stage it explains for each backbone family, the maps' size and
mass, and that a trained detector's map falls on the manipulated region of demo images."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets.augment import eval_transform
from datasets.images import read_image
from evaluation.cams import crop_maps, pick
from models import EncoderClassifier, LinearClassifier, SupConNet, build_baseline
from models.gradcam import GradCAM


@pytest.mark.parametrize("backbone, stage", [("test_resnet", "layer4"), ("efficientnet_b0", "bn2")])
def test_the_last_convolutional_stage_of_each_family_and_maps_of_the_crops_size(backbone, stage):
    torch.manual_seed(0)
    model = build_baseline(backbone, "none")
    cam = GradCAM(model, 64)
    assert cam.stage == stage
    crops = [np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8) for k, (h, w) in
             enumerate([(64, 64), (90, 70), (33, 41)])]
    maps = crop_maps(cam, crops, eval_transform(64, backbone, "project"), torch.device("cpu"))
    assert [m.shape for m in maps] == [(64, 64), (90, 70), (33, 41)]
    assert all(0 <= m.min() and m.max() <= 1 + 1e-6 for m in maps)
    # A SupCon detector is explained at its encoder's last stage, through its linear head.
    net = SupConNet(backbone, "none", 16)
    assert GradCAM(EncoderClassifier(net.encoder, LinearClassifier(net.dim)), 64).stage == f"encoder.{stage}"


def test_confident_right_and_wrong_decisions_are_picked_by_distance_from_the_threshold():
    rows = [("a", 1, 0.99), ("b", 1, 0.6), ("c", 0, 0.1), ("d", 0, 0.95), ("e", 1, 0.2), ("f", 0, 0.55)]
    assert [(k, p) for k, p, _, _ in pick(rows, 2, 0.5)] == [("right", "a"), ("right", "c"), ("wrong", "d"),
                                                               ("wrong", "e")]
    assert [p for _, p, _, _ in pick(rows, 1, 0.7)] == ["c", "e"]  # distances from 0.7: c 0.6 > a 0.29; e 0.5 > d 0.25


def _fake(real: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, tuple[int, int]]:
    """A demo image with one 16 x 16 square manipulated (a fine checkerboard blended in)."""
    y, x = (int(v) for v in rng.integers(0, 48, 2))
    fake = real.clone()
    board = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float() * 255
    fake[:, y:y + 16, x:x + 16] = (0.5 * fake[:, y:y + 16, x:x + 16].float() + 0.5 * board).to(torch.uint8)
    return fake, (y, x)


@pytest.mark.slow
def test_a_trained_detectors_map_falls_on_the_manipulated_region_more_often_than_chance(tiny_demo):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    reals = [F.interpolate(read_image(str(p))[None].float(), size=64, mode="bilinear")[0].round().to(torch.uint8)
             for p in sorted((tiny_demo / "FaceForensics++").rglob("Real/*/*.png"))]
    transform = eval_transform(64, "test_resnet", "project")
    model = build_baseline("test_resnet", "none")
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for step in range(120):  # real vs manipulated demo images, manipulated at a random place each time
        idx = rng.integers(0, len(reals), 32)
        imgs = [reals[i] if k % 2 == 0 else _fake(reals[i], rng)[0] for k, i in enumerate(idx)]
        x, y = torch.stack([transform(im) for im in imgs]), torch.tensor([k % 2 for k in range(32)])
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    cam = GradCAM(model, 64)
    fakes = [_fake(reals[i % len(reals)], rng) for i in range(100)]
    maps, scores, _ = cam(torch.stack([transform(f) for f, _ in fakes]))
    assert scores.mean() > 0.8  # it learned to detect them
    hits = 0
    for m, (_, (y, x)) in zip(maps, fakes):
        assert m.shape == (64, 64) and m.sum() > 0
        share = m[y:y + 16, x:x + 16].sum() / m.sum()  # of the map's mass, in the manipulated square
        hits += share > (16 * 16) / (64 * 64)  # chance: the square's share of the area
    print(f"{hits} of 100 maps put more than the square's area share of their mass on it")
    assert hits >= 70, hits  # chance would be about half
