"""The validation split (config `val`): leak-free hold-out, validation passes in every stage, best_val selection,
the decision threshold and temperature chosen on it, and their use by evaluate.py and predict.py."""
import csv
import json

import numpy as np
import pytest
import torch
import yaml

from engine.config import DEFAULTS, load_config
from conftest import tiny_config, command
from datasets.overlap import find_overlap
from datasets.protocols import protocol_sets
from datasets.splits import identity_groups
from engine.validate import (Check, Validator, choose_threshold, expected_calibration_error, fit_temperature,
                             scaled_scores)
from evaluation.metrics import threshold_metrics
from models import build_baseline
from utils import UserError


def _config(tiny_demo, tmp_path, *overrides) -> dict:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_demo, tmp_path / "runs")))
    return load_config(str(path), list(overrides))


def test_the_validation_set_is_a_share_of_labeled_identity_groups_and_leak_free(tiny_demo, tmp_path):
    plain = protocol_sets(_config(tiny_demo, tmp_path))
    sets = protocol_sets(_config(tiny_demo, tmp_path, "val.enabled=true", "val.fraction=0.3"))
    labeled, val = sets["labeled"][2], sets["val"][2]
    assert val and labeled and sets["val"][0] == "val"
    # Together they are the labeled set without validation; apart they share no video and no identity.
    assert sorted(s.path for s in labeled + val) == sorted(s.path for s in plain["labeled"][2])
    groups = identity_groups(labeled + val)
    assert not {groups[s.video] for s in labeled} & {groups[s.video] for s in val}
    assert len(find_overlap(sets)) == 0
    # Seeded: the same seed holds out the same videos, another seed others.
    again = protocol_sets(_config(tiny_demo, tmp_path, "val.enabled=true", "val.fraction=0.3"))
    assert [s.path for s in again["val"][2]] == [s.path for s in val]
    others = [protocol_sets(_config(tiny_demo, tmp_path, "val.enabled=true", "val.fraction=0.3", f"seed={seed}"))
              for seed in (5, 6, 7)]
    assert any({s.video for s in other["val"][2]} != {s.video for s in val} for other in others)


def test_describe_shows_the_validation_counts(tiny_config_file):
    res = command(["-m", "datasets", "describe", "--protocol", str(tiny_config_file), "val.enabled=true",
               "val.fraction=0.3"])
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith("val "))
    assert row.split()[1] == "val" and int(row.split()[3]) > 0
    assert "overlap between labeled, unlabeled, val and test: none" in res.stdout


@pytest.mark.parametrize("overrides, message", [
    (["val.select=best_val"], "val.enabled is false"),
    (["val.enabled=true", "val.fraction=1.5"], "'val.fraction' must be in (0, 1)"),
    (["val.enabled=true", "val.every=0"], "'val.every' must be positive"),
    (["val.threshold=median"], "'val.threshold' must be one of eer, balanced"),
])
def test_nonsense_validation_settings_are_refused(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_best_val_keeps_the_weights_of_the_best_validation_pass(tiny_demo, tmp_path):
    cfg = _config(tiny_demo, tmp_path, "val.enabled=true", "val.select=best_val")
    validator = Validator(protocol_sets(cfg)["val"][2], cfg, torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    scores = iter([0.6, 0.9, 0.7])  # validation AUC at steps 1, 2, 3: step 2 is the best
    check = Check(validator, lambda: {"val_auc": next(scores)}, lambda m: m["val_auc"], keep=model)
    snapshots = {}
    for step in (1, 2, 3):
        torch.nn.init.normal_(model.weight)
        snapshots[step] = model.weight.detach().clone()
        check("pt", step)
    assert "step 2" in check.end("pt")
    assert torch.equal(model.weight, snapshots[2])
    # What a resumed run restores: the best weights so far travel in the checkpoint's state.
    fresh = Validator(validator.samples, cfg, torch.device("cpu"))
    fresh.load_state_dict(validator.state_dict())
    assert fresh.best["step"] == 2 and torch.equal(fresh.best["weights"]["weight"], snapshots[2])


def test_a_threshold_chosen_on_validation_moves_the_verdicts_of_a_shifted_model():
    rng = np.random.default_rng(0)
    # A detector whose every score is above 0.5 (out-of-domain miscalibration): at 0.5 it calls everything fake.
    labels = np.repeat([0, 1], 200)
    val_scores = np.where(labels == 1, rng.uniform(0.80, 0.99, 400), rng.uniform(0.55, 0.78, 400))
    t = choose_threshold(labels, val_scores, "eer")
    assert 0.78 <= t <= 0.81
    assert 0.78 <= choose_threshold(labels, val_scores, "balanced") <= 0.81
    test_scores = np.where(labels == 1, rng.uniform(0.80, 0.99, 400), rng.uniform(0.55, 0.78, 400))
    at_val = threshold_metrics(labels, test_scores, {"threshold": t, "rule": "eer"})
    assert at_val["bal_acc"] == 1.0 and at_val["real_acc"] == 1.0
    pred_05 = (test_scores >= 0.5).astype(int)
    assert (pred_05[labels == 0] == 0).mean() == 0.0  # every real image called fake at 0.5


def test_temperature_scaling_recovers_the_temperature_and_lowers_the_calibration_error():
    torch.manual_seed(0)
    z = torch.randn(4000, 2) * 3
    labels = torch.multinomial(torch.softmax(z / 2.0, 1), 1)[:, 0]  # true probabilities: softmax(z / 2)
    t = fit_temperature(z.double(), labels)
    assert 1.8 < t < 2.2
    scores = torch.softmax(z.double(), 1)[:, 1].numpy()
    y = labels.numpy()
    assert expected_calibration_error(y, scaled_scores(scores, t)) < expected_calibration_error(y, scores) / 2
    assert np.allclose(scaled_scores(scores, t), torch.softmax(z.double() / t, 1)[:, 1].numpy(), atol=1e-9)


@pytest.mark.slow
def test_training_with_validation_logs_selects_calibrates_and_evaluate_uses_it(tiny_config_file):
    val = ["val.enabled=true", "val.fraction=0.3", "val.every=1", "val.select=best_val", "val.temperature=true"]
    res = command(["train_supcon.py", "--config", str(tiny_config_file), *val])
    assert res.returncode == 0, res.stderr
    folder = tiny_config_file.parent / "runs" / "tiny" / "supcon"
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "supcon" and "val_loss" in r] == [1, 2]
    assert [r["step"] for r in rows if r["stage"] == "classifier" and "val_auc" in r] == [1, 2]
    assert "best_val keeps the weights of step" in (folder / "log.txt").read_text()
    with open(folder / "splits.csv") as f:
        roles = {r["role"] for r in csv.DictReader(f)}
    assert roles == {"labeled", "unlabeled", "val", "test"}
    cal = torch.load(folder / "supcon_classifier.tar", weights_only=True)["calibration"]
    assert 0 <= cal["threshold"] <= 1 and cal["rule"] == "eer" and cal["temperature"] > 0 and cal["n"] > 0
    res = command(["evaluate.py", "--method", "supcon", "--config", str(tiny_config_file)])
    assert res.returncode == 0, res.stderr
    results = json.loads((folder / "results.json").read_text())
    entry = results["Deepfakes"]["val_threshold"]
    assert entry["threshold"] == cal["threshold"] and {"bal_acc", "ece", "ece_scaled"} <= set(entry)
    assert {"real_acc", "fake_acc", "bal_acc"} <= set(results["Deepfakes"])
    assert "at the validation threshold" in res.stdout and (folder / "reliability.png").is_file()


def test_without_validation_nothing_is_held_out_and_no_calibration_is_stored(tiny_demo, tmp_path):
    cfg = _config(tiny_demo, tmp_path)
    assert cfg["val"] == DEFAULTS["val"] and not cfg["val"]["enabled"]
    assert "val" not in protocol_sets(cfg)
    assert Validator(None, cfg, torch.device("cpu")).classifier(build_baseline("test_resnet")) is None
