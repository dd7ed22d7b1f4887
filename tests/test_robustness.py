"""Robustness sweeps: evaluate.py --perturb through the command, and the perturbations themselves."""
import json

import numpy as np
import pytest
import torch

from conftest import PY, run
from config import DEFAULTS
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
    res = run([PY, "evaluate.py", "--method", "pt", "--config", str(tiny_config_file), "--weights", str(weights),
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

