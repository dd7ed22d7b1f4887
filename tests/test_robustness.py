"""Robustness sweeps: evaluate.py --perturb through the command, and the perturbations themselves."""
import json

import numpy as np
import pytest
import torch

from conftest import command
from engine.config import DEFAULTS
from datasets.perturb import Perturbation, parse_perturbations
from engine.release import save_release
from models import build_baseline
from utils import UserError


def photo_like(seed=0, h=40, w=56):
    """A smooth image with texture (so that blur, JPEG and down-scaling all change it)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 3.0)[..., None] * np.cos(yy / 4.0)[..., None] + rng.normal(0, 20, (h, w, 3))
    return torch.from_numpy(np.clip(base, 0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()


def test_levels_that_mean_none_return_the_image_and_the_others_change_it():
    img = photo_like()
    for p in parse_perturbations(["blur:0", "noise:0", "resize:1"]):
        assert p(img, "a.png") is img
    for p in parse_perturbations(["jpeg:30", "blur:1.5", "noise:0.05", "resize:0.5"]):
        out = p(img, "a.png")
        assert out.shape == img.shape and out.dtype == torch.uint8, p.name
        assert (out.int() - img.int()).abs().float().mean() > 1.0, p.name


def test_noise_is_deterministic_per_image_and_differs_between_images():
    img, noise = photo_like(), Perturbation("noise", 0.05)
    assert torch.equal(noise(img, "x/1.png"), noise(img, "x/1.png"))
    assert not torch.equal(noise(img, "x/1.png"), noise(img, "x/2.png"))


@pytest.mark.parametrize("spec, words", [("gamma:2", "KIND one of"), ("jpeg:", "KIND one of"), ("jpeg:101", "outside"),
                                         ("jpeg:50.5", "integer"), ("blur:x", "not a number"),
                                         ("resize:2", "outside"), ("noise:-0.1", "outside")])
def test_bad_specs_are_refused(spec, words):
    with pytest.raises(UserError, match=words):
        parse_perturbations([spec])


def test_evaluate_perturb_writes_the_sweep_and_level_zero_is_the_clean_result(tiny_config_file, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "pt.tar"
    save_release(weights, build_baseline("test_resnet"), {**DEFAULTS, "backbone": "test_resnet", "img_size": 32},
                 "pt", 0)
    out = tmp_path / "eval"
    res = command(["evaluate.py", "--method", "pt", "--config", str(tiny_config_file), "--weights", str(weights),
               "--json", str(out / "results.json"), "--predictions", str(out / "predictions.csv"), "--no-plots",
               "--perturb", "blur:0,2", "--perturb", "noise:0", "--perturb", "resize:1", "--perturb", "jpeg:10"])
    assert res.returncode == 0, res.stderr
    sweep = json.loads((out / "robustness.json").read_text())
    clean = json.loads((out / "results.json").read_text())
    assert sweep["weights"] == clean["weights"]
    rows = {r["name"]: r["sets"] for r in sweep["perturbed"]}
    assert list(rows) == ["blur:0", "blur:2", "noise:0", "resize:1", "jpeg:10"]
    for name in ("blur:0", "noise:0", "resize:1"):  # "none" levels reproduce the clean metrics exactly
        for test_set, metrics in rows[name].items():
            assert metrics["auc"] == clean[test_set]["auc"] and metrics["acc"] == clean[test_set]["acc"]
            assert metrics == sweep["clean"][test_set]
    for name in ("blur:2", "jpeg:10"):  # a real degradation moves the scores
        assert any(rows[name][s]["auc"] != clean[s]["auc"] for s in rows[name]), name
    table = (out / "robustness.md").read_text()
    assert "| clean |" in table and "| jpeg:10 |" in table and "NeuralTextures AUC" in table
    assert "robustness (AUC / ACC in %)" in res.stdout
    assert not (out / "robustness.png").exists()  # --no-plots



# ------------------------------------------------------------------ training-side degradations (aug.jpeg_p, aug.blur_p)
def _augment(overrides):
    from engine.config import load_config
    from datasets.augment import BatchAugment, aug_spec, train_transform
    spec = aug_spec(load_config(None, overrides))
    return spec, BatchAugment(spec), train_transform(spec)


def test_training_jpeg_and_blur_are_off_by_default_and_change_nothing_then():
    spec, batched, per_image = _augment([])
    assert spec.jpeg_p == 0 and spec.blur_p == 0
    assert "JPEG" not in repr(per_image) and "GaussianBlur" not in repr(per_image)
    params = batched.params(16, torch.Generator().manual_seed(3))
    _, on, _ = _augment(["aug.jpeg_p=0.5", "aug.blur_p=0.5"])
    with_deg = on.params(16, torch.Generator().manual_seed(3))
    assert torch.equal(params[:, :9], with_deg[:, :9])  # drawn last: crop, flip and colour draws are the same
    assert not params[:, 9:11].any() and with_deg[:, 9:11].any() and (params[:, 11] == -1).all()  # (no RandAugment)


def test_training_jpeg_and_blur_degrade_both_paths():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    for key in ("jpeg_p", "blur_p"):
        _, off, per_off = _augment(["img_size=32"])
        _, on, per_on = _augment(["img_size=32", f"aug.{key}=1.0"])
        p = on.params(4, torch.Generator().manual_seed(1))
        p_off = p.clone()
        p_off[:, 9:] = 0
        assert (p[:, 9 if key == "jpeg_p" else 10] > 0).all()
        assert not torch.allclose(on(images, p), off(images, p_off))  # the same crop, with the degradation
        torch.manual_seed(5)
        a = per_on(images[0])
        torch.manual_seed(5)
        assert a.shape == per_off(images[0]).shape == (3, 32, 32)


@pytest.mark.parametrize("override, words", [("aug.jpeg_p=1.5", "'aug.jpeg_p' must be a probability"),
                                             ("aug.jpeg_quality=[0,100]", "'aug.jpeg_quality' must be"),
                                             ("aug.blur_sigma=[2,1]", "'aug.blur_sigma' must be")])
def test_bad_training_degradation_settings_are_refused(override, words):
    from engine.config import load_config
    with pytest.raises(UserError, match=words):
        load_config(None, [override])
