"""Bad data, numerical faults and impossible configs: the behaviour chosen for each, and its message."""
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_config, command, train_and_evaluate
from datasets.images import BadImageError, read_image
from engine.update import Updater, make_optimizer
from utils import TrainingStopped


def make_set(root, n=6, size=32):
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        for i in range(n):
            path = root / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return root


def corrupt_files(root):
    (root / "fake" / "empty.png").write_bytes(b"")
    (root / "fake" / "text.png").write_text("this is not an image")
    ok, buf = cv2.imencode(".jpg", np.full((32, 32, 3), 100, np.uint8))
    (root / "real" / "truncated.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    return 3


@pytest.mark.parametrize("kind", ["empty", "text", "truncated"])
def test_unreadable_images_raise_bad_image_error(tmp_path, kind):
    make_set(tmp_path)
    corrupt_files(tmp_path)
    path = {"empty": "fake/empty.png", "text": "fake/text.png", "truncated": "real/truncated.jpg"}[kind]
    with pytest.raises(BadImageError):
        read_image(str(tmp_path / path))


def test_colour_modes_and_depths_are_converted(tmp_path):
    gray = np.full((10, 12), 77, np.uint8)
    rgba = np.dstack([np.full((10, 12, 3), 200, np.uint8), np.zeros((10, 12), np.uint8)])
    deep = np.full((10, 12, 3), 65535, np.uint16)
    for name, img in (("gray.png", gray), ("rgba.png", rgba), ("deep.png", deep)):
        cv2.imwrite(str(tmp_path / name), img)
        x = read_image(str(tmp_path / name))
        assert x.shape == (3, 10, 12) and x.dtype == torch.uint8, name
    assert read_image(str(tmp_path / "gray.png")).float().mean() == 77
    assert read_image(str(tmp_path / "deep.png")).max() == 255  # 16-bit scaled to 8-bit, not wrapped


def config_for(tmp_path, data_root, **extra):
    cfg = tiny_config(tmp_path, tmp_path / "runs", **extra)
    # copies, so that no role shares an image with another (the overlap check)
    for role in ("unlabeled", "test"):
        shutil.copytree(data_root, data_root.with_name(f"{data_root.name}-{role}"))
    cfg["data"]["labeled"] = [f"folder:{data_root}"]
    cfg["data"]["unlabeled"] = [f"folder:{data_root.with_name(data_root.name + '-unlabeled')}"]
    cfg["data"]["test"] = [f"folder:{data_root.with_name(data_root.name + '-test')}"]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_unreadable_training_images_are_skipped_counted_and_listed(tmp_path):
    root = make_set(tmp_path / "set", n=4)
    n_bad = corrupt_files(root)
    cfg = config_for(tmp_path, root, pt={"steps": 12, "batch_size": 8})
    res = train_and_evaluate("pt", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "skipped" in res.stderr and "unreadable image" in res.stderr
    listed = (tmp_path / "runs" / "tiny" / "pt" / "bad_images.txt").read_text().split()
    assert len(listed) == n_bad and len(set(listed)) == n_bad
    results = json.loads((tmp_path / "runs" / "tiny" / "pt" / "results.json").read_text())
    assert results["set-test"]["n"] == 8  # unreadable test images are not scored
    assert "skipped 3 unreadable test image(s)" in res.stderr


def test_too_many_unreadable_images_stop_the_run(tmp_path):
    root = make_set(tmp_path / "set", n=4)
    corrupt_files(root)
    cfg = config_for(tmp_path, root, pt={"steps": 12, "batch_size": 8})
    res = command(["train_pt.py", "--config", str(cfg), "data.max_bad_images=1"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "error: stopping: " in res.stderr and "data.max_bad_images=1" in res.stderr


def test_tiny_images_are_upscaled_for_training(tmp_path):
    root = make_set(tmp_path / "set", n=4, size=3)
    cfg = config_for(tmp_path, root, pt={"steps": 2, "batch_size": 4})
    res = command(["train_pt.py", "--config", str(cfg)])
    assert res.returncode == 0, res.stderr


def test_mislabelled_ff_folder_stops(tiny_demo, tmp_path):
    import shutil
    ff = tmp_path / "FaceForensics++"
    shutil.copytree(tiny_demo / "FaceForensics++" / "train_set" / "Real", ff / "train_set" / "Real")
    fake = sorted((tiny_demo / "FaceForensics++" / "train_set" / "Deepfakes").iterdir())[0]
    shutil.copytree(fake, ff / "train_set" / "Real" / fake.name)  # a fake video among the real ones
    cfg = tiny_config(tiny_demo, tmp_path / "runs")
    cfg["data"]["labeled"] = [{"kind": "ff", "root": str(ff), "subset": "train_set", "methods": ["Real"]}]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = command(["train_pt.py", "--config", str(path)])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "not named like FaceForensics++ real videos" in res.stderr and fake.name in res.stderr


def test_non_finite_loss_skips_the_update_and_stops_after_the_limit():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)  # not fused: checked on the host at once
    log = []
    update = Updater({"opt": opt}, False, 2, log.append, last_checkpoint=lambda: "ckpt-00-00000000.tar")
    before = model.weight.detach().clone()
    x = torch.randn(4, 3)
    assert update(opt, model(x).sum() * float("nan"), "test loss") is False
    update.step = 1
    assert update(opt, model(x).sum() * float("inf"), "test loss") is False
    assert torch.equal(model.weight, before)
    assert "non-finite test loss" in log[0] and "update skipped" in log[0] and "at step 2" in log[1]
    with pytest.raises(TrainingStopped, match="3 non-finite losses .*last good checkpoint: ckpt-00-00000000.tar"):
        update(opt, model(x).sum() * float("nan"), "test loss")
    assert update(opt, model(x).sum(), "test loss") is True
    assert not torch.equal(model.weight, before)
    assert update.state_dict()["nonfinite"] == 3


@pytest.mark.parametrize("override, message", [
    ("supcon.lr=-1e-4", "'supcon.lr' must be positive"),
    ("img_size=0", "'img_size' must be positive"),
    ("pt.steps=-5", "'pt.steps' must be >= 0"),
    ("pt.batch_size=100000", "'pt.batch_size' = 100000 is larger than the labeled set"),
    ("data.labeled_fraction=1.5", "'data.labeled_fraction' must be in [0, 1]"),
    ("pt.steps=ten", "'pt.steps' must be a number"),
])
def test_impossible_config_values_are_rejected_up_front(tiny_config_file, override, message):
    res = command(["train_pt.py", "--config", str(tiny_config_file), override])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr


def test_fused_optimizer_skips_non_finite_updates_on_the_device_and_reports_them_later():
    model = torch.nn.Linear(3, 1)
    opt = make_optimizer(model.parameters(), 0.1)  # fused Adam: no host sync per update
    log = []
    update = Updater({"opt": opt}, False, 2, log.append)
    before = model.weight.detach().clone()
    x = torch.randn(4, 3)
    update(opt, model(x).sum() * float("nan"), "test loss")
    update(opt, model(x).sum() * float("inf"), "test loss")
    assert torch.equal(model.weight, before) and int(opt.state[model.weight]["step"]) == 0
    assert not log
    update.check(2)  # what the loop does when it logs or saves
    assert "non-finite test loss: 2 update(s) skipped up to step 2" in log[0]
    update(opt, model(x).sum(), "test loss")
    assert not torch.equal(model.weight, before)
    update(opt, model(x).sum() * float("nan"), "test loss")
    with pytest.raises(TrainingStopped, match="3 non-finite losses"):
        update.check(4)
