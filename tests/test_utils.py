from pathlib import Path

import numpy as np
import pytest

from engine.config import load_config
from evaluation.metrics import binary_metrics, format_table
from utils import UserError


def test_metrics_on_a_known_case():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.8, 0.9, 0.95])
    m = binary_metrics(labels, scores)
    assert m["acc"] == pytest.approx(6 / 8)          # 0.7 and 0.4 are wrong at threshold 0.5
    assert m["auc"] == pytest.approx(15 / 16)        # only the pair (fake 0.4, real 0.7) is ranked wrong
    assert m["f1"] == pytest.approx(0.75)            # precision 3/4, recall 3/4
    assert m["eer"] == pytest.approx(0.25)           # one real above, one fake below the crossing
    assert 0 < m["ap"] <= 1
    # The paper's AUC: from hard 0/1 predictions, i.e. the balanced accuracy at the threshold (3/4 and 3/4 here).
    assert m["auc_hard"] == pytest.approx(0.75)
    skewed = binary_metrics(np.array([0, 0, 1, 1, 1, 1, 1, 1]), np.array([0.1, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.2]))
    assert skewed["auc_hard"] == pytest.approx((1 / 2 + 5 / 6) / 2) and skewed["acc"] == pytest.approx(6 / 8)


def test_perfect_and_one_class_sets():
    m = binary_metrics(np.array([0, 1]), np.array([0.2, 0.9]))
    assert m["auc"] == 1.0 and m["eer"] == 0.0 and m["acc"] == 1.0
    one = binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]))
    assert one["auc"] is None and one["eer"] is None and one["acc"] == 0.5
    table = format_table({"x": {**one, "n": 2, "split": "unknown"}}, "t")
    assert "unknown" in table and " -" in table


def test_overrides_types_and_unknown_keys():
    cfg = load_config(None, ["supcon.lr=3e-4", "pt.steps=5", "data.balance=false", "mpl.teacher_encoder=a.tar"])
    assert cfg["supcon"]["lr"] == 3e-4 and cfg["pt"]["steps"] == 5 and cfg["data"]["balance"] is False
    assert cfg["mpl"]["teacher_encoder"] == "a.tar"
    with pytest.raises(UserError, match="unknown config key 'pt.nope'"):
        load_config(None, ["pt.nope=1"])
    with pytest.raises(UserError, match="'pt.steps' must be an integer"):
        load_config(None, ["pt.steps=2.5"])
    with pytest.raises(UserError, match="'input_scale' must be one of"):
        load_config(None, ["input_scale=weird"])
    with pytest.raises(UserError, match="'img_size' must be positive"):
        load_config(None, ["img_size=0"])
    with pytest.raises(UserError, match="key=value"):
        load_config(None, ["justakey"])


def test_run_folder_follows_config_and_result_changing_overrides():
    base = load_config("configs/demo.yaml")["run_name"]
    assert base == "demo"
    assert load_config("configs/demo.yaml", ["device=cpu", "workers=3", "log_every=5"])["run_name"] == "demo"
    a = load_config("configs/demo.yaml", ["supcon.lr=1e-3"])["run_name"]
    b = load_config("configs/demo.yaml", ["supcon.lr=2e-3"])["run_name"]
    assert a.startswith("demo-") and b.startswith("demo-") and a != b
    assert load_config("configs/demo.yaml", ["supcon.lr=1e-3", "run_name=mine"])["run_name"] == "mine"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux /proc")
def test_host_memory_follows_what_the_process_holds():
    from engine.logger import host_memory_mb
    before = host_memory_mb()
    block = np.ones(200 * 2**20, np.uint8)  # 200 MB, touched
    held = host_memory_mb()
    assert 0 < before["private_mb"] <= before["rss_mb"]
    assert 190 < held["private_mb"] - before["private_mb"] < 260
    del block
    assert host_memory_mb()["private_mb"] < held["private_mb"] - 150
