"""Packed data: the pack command, its contents, batched augmentation, and training from a pack."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import yaml
from torchvision.transforms.v2 import functional as TF

from conftest import tiny_config, command
from engine.config import DEFAULTS
from datasets.images import read_image
from datasets.loaders import train_batches
from datasets.augment import N_PARAMS, BatchAugment, aug_spec
from datasets.index import Sample
from datasets.packed import Pack
from utils import UserError


def _cfg(**kw) -> dict:
    cfg = {**DEFAULTS, "backbone": "test_resnet", "img_size": 16, **kw}
    cfg["aug"] = {**DEFAULTS["aug"], **kw.get("aug", {})}
    return cfg


def identity(n: int) -> torch.Tensor:
    """Augmentation parameters that change nothing: whole image, no flip, factors 1, hue 0, no grey."""
    p = torch.zeros(n, N_PARAMS)
    p[:, 0] = p[:, 1] = 1.0
    p[:, 4:7] = 1.0
    return p


@pytest.fixture
def pack_cli(tiny_demo, tmp_path):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_config(tiny_demo, tmp_path / "runs")))
    return cfg_file, tmp_path / "pack"


def test_pack_command_packs_a_config_once_and_adds_only_what_is_missing(pack_cli):
    cfg_file, out = pack_cli
    res = command(["-m", "preprocess.pack", "--config", str(cfg_file), "--out", str(out), "--workers", "2",
               "--shard-images", "10"])
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["size"] == 32 and meta["count"] == sum(s["count"] for s in meta["shards"]) > 10
    assert len(meta["shards"]) == -(-meta["count"] // 10)  # shards of at most 10 images
    again = command(["-m", "preprocess.pack", "--config", str(cfg_file), "--out", str(out)])
    assert "packed 0 new image(s)" in again.stdout and f"{meta['count']} already there" in again.stdout
    more = command(["-m", "preprocess.pack", "--config", str(cfg_file), "--out", str(out), "--roles", "test"])
    assert more.returncode == 0 and json.loads((out / "meta.json").read_text())["count"] > meta["count"]
    wrong = command(["-m", "preprocess.pack", "--config", str(cfg_file), "--out", str(out), "--size", "24"])
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines() == [
        f"error: pack {out} holds 32px images; pack 24px images into another folder"]


def test_packed_pixels_are_the_decoded_images_and_bad_files_are_listed(tiny_demo, tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    sources = sorted((tiny_demo / "FaceForensics++" / "train_set" / "Real").rglob("*.png"))[:5]
    for i, src in enumerate(sources):
        (folder / f"{i}.png").write_bytes(src.read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pack"
    res = command(["-m", "preprocess.pack", "--folder", str(folder), "--out", str(out), "--size", "32"])
    assert res.returncode == 0 and "1 unreadable" in res.stdout, res.stdout + res.stderr
    pack = Pack(out)
    assert (out / "bad.txt").read_text().strip() == "broken.png"  # named below the pack's base, the folder
    samples = [Sample(str(folder / f"{i}.png"), 0, "Real", None) for i in range(5)]
    shard, row, bad = pack.rows(samples, "test")
    images = np.empty((5, 3, 32, 32), np.uint8)
    pack.gather(shard, row, images)
    for i in range(5):
        assert np.array_equal(images[i], read_image(samples[i].path).numpy())  # 32 px sources: stored as decoded
    with pytest.raises(UserError, match="1 of the 1 test images are not in pack"):
        pack.rows([Sample(str(tmp_path / "elsewhere.png"), 0, "Real", None)], "test")
    # Resized (down: area, up: bilinear), with two workers: the decoded RGB image resized by OpenCV.
    for size, interp in ((20, cv2.INTER_AREA), (48, cv2.INTER_LINEAR)):
        res = command(["-m", "preprocess.pack", "--folder", str(folder), "--out", str(tmp_path / f"pack{size}"),
                   "--size", str(size), "--workers", "2"])
        assert res.returncode == 0, res.stderr
        images = np.empty((5, 3, size, size), np.uint8)
        Pack(tmp_path / f"pack{size}").gather(shard, row, images)
        for i in range(5):
            want = cv2.resize(read_image(samples[i].path).permute(1, 2, 0).numpy(), (size, size), interpolation=interp)
            assert np.array_equal(images[i], want.transpose(2, 0, 1)), size


def test_batched_augmentation_with_identity_parameters_only_normalises():
    aug = BatchAugment(aug_spec(_cfg()))
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out = aug(x, identity(4))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in aug.stats)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std, atol=1e-5, rtol=1e-5)
    seed = BatchAugment(aug_spec(_cfg(input_scale="seed")))(x, identity(4))
    torch.testing.assert_close(seed, x.float() / 255 / 255)  # the reference code's double division


@pytest.mark.parametrize("column, value, reference", [
    (4, 1.3, lambda x: TF.adjust_brightness(x, 1.3)),
    (5, 0.6, lambda x: TF.adjust_contrast(x, 0.6)),
    (6, 1.7, lambda x: TF.adjust_saturation(x, 1.7)),
    (8, 1.0, lambda x: TF.rgb_to_grayscale(x, num_output_channels=3)),
])
def test_each_colour_operation_matches_torchvision(column, value, reference):
    cfg = _cfg(input_scale="seed")  # output = clamped [0, 1] / 255: compare without mean/std
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    p = identity(3)
    p[:, column] = value
    ours = BatchAugment(aug_spec(cfg))(x, p) * 255
    torch.testing.assert_close(ours, reference(x.float() / 255), atol=1e-4, rtol=1e-4)


def test_crop_flip_and_parameter_ranges():
    cfg = _cfg(aug={"scale": [0.3, 0.6], "hflip": 0.5, "color_jitter_p": 0.8, "grayscale_p": 0.2})
    aug = BatchAugment(aug_spec(cfg))
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    p = identity(2)
    p[:, 0] = -1.0  # flip
    torch.testing.assert_close(aug(x, p), aug(x, identity(2)).flip(-1))
    q = aug.params(20000, torch.Generator().manual_seed(0))
    area = q[:, 0].abs() * q[:, 1]  # box sides as fractions of the image side: w * h
    assert 0.3 - 1e-4 <= area.min() and area.max() <= 0.6 + 1e-4
    assert abs((q[:, 0] < 0).float().mean() - 0.5) < 0.02
    assert abs((q[:, 8] == 1).float().mean() - 0.2) < 0.02
    assert abs((q[:, 4] != 1).float().mean() - 0.8) < 0.02
    assert (q[:, 2].abs() <= 1 - q[:, 0].abs() + 1e-6).all()  # the box stays inside the image


def test_packed_batches_are_a_function_of_the_step(tiny_demo, tmp_path):
    from datasets.packed import build_pack, folder_paths
    paths = folder_paths(tiny_demo / "FaceForensics++" / "train_set" / "Real")
    pack_dir = tmp_path / "pack"
    build_pack(paths, pack_dir, 32, quiet=True)
    samples = [Sample(p, i % 2, "x", None) for i, p in enumerate(paths)]
    cfg = _cfg()
    cfg["data"] = {**DEFAULTS["data"], "packed": str(pack_dir)}
    first = train_batches(samples, cfg, 6, 2, True, "s", 0)
    batches = [next(first) for _ in range(4)]
    first.close()
    resumed = train_batches(samples, cfg, 6, 2, True, "s", 2)  # as after a resume at step 2
    for want in batches[2:]:
        got = next(resumed)
        for a, b in zip(got[:3], want[:3]):
            assert torch.equal(a, b)
    resumed.close()
    v1, v2, labels, bad = batches[0]
    assert v1.shape == (6, 3, 16, 16) and labels.shape == (6,) and not torch.equal(v1, v2) and bad == [""]


@pytest.mark.slow
def test_training_from_a_pack(pack_cli):
    cfg_file, out = pack_cli
    assert command(["-m", "preprocess.pack", "--config", str(cfg_file), "--out", str(out)]).returncode == 0
    res = command(["train_supconmpl.py", "--config", str(cfg_file), f"data.packed={out}"])
    assert res.returncode == 0, res.stderr[-2000:]
    ff = yaml.safe_load(cfg_file.read_text())["data"]["labeled"][0]["root"]
    test_set = f"data.labeled=[{{kind: ff, root: {ff}, subset: test_set, methods: [Real, Deepfakes]}}]"
    missing = command(["train_pt.py", "--config", str(cfg_file), f"data.packed={out}", test_set, "data.test=[]",
                   "--run-name", "other"])
    assert missing.returncode == 2 and "are not in pack" in missing.stderr and "Traceback" not in missing.stderr


def test_a_pack_moved_with_its_images_still_trains_and_an_append_adds_nothing_twice(tiny_demo, tmp_path):
    """31.6: the repository (demo, pack and all) moves: the pack finds its images below their new folder; packing
    the same config again adds nothing; images of a folder beside them widen the pack, once."""
    import shutil
    old = tmp_path / "old"
    shutil.copytree(tiny_demo, old / "demo")
    cfg = tiny_config(old / "demo", tmp_path / "runs")
    cfg["data"]["packed"] = str(old / "pack")
    (old / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert command(["-m", "preprocess.pack", "--config", str(old / "cfg.yaml"), "--out", str(old / "pack")]).returncode == 0
    count = json.loads((old / "pack" / "meta.json").read_text())["count"]
    new = tmp_path / "new"
    shutil.move(old, new)  # the old folder is gone
    moved = tiny_config(new / "demo", tmp_path / "runs")
    moved["data"]["packed"] = str(new / "pack")
    (new / "cfg.yaml").write_text(yaml.safe_dump(moved))
    res = command(["train_pt.py", "--config", str(new / "cfg.yaml")])
    assert res.returncode == 0, res.stderr
    again = command(["-m", "preprocess.pack", "--config", str(new / "cfg.yaml"), "--out", str(new / "pack")])
    assert again.returncode == 0 and "packed 0 new image(s)" in again.stdout, again.stdout + again.stderr
    meta = json.loads((new / "pack" / "meta.json").read_text())
    assert meta["count"] == count and meta["base"].startswith(str(new))
    extra = new / "extra"
    extra.mkdir()
    for i, src in enumerate(sorted((new / "demo" / "FaceForensics++" / "test_set" / "Real").rglob("*.png"))[:3]):
        shutil.copy(src, extra / f"{i}.png")
    for _ in range(2):
        assert command(["-m", "preprocess.pack", "--folder", str(extra), "--out", str(new / "pack"),
                        "--size", "32"]).returncode == 0
    meta = json.loads((new / "pack" / "meta.json").read_text())
    assert meta["count"] == count + 3 and meta["base"] == str(new)
    index = (new / "pack" / "index.csv").read_text().splitlines()[1:]
    assert len(index) == len({line.rsplit(",", 2)[0] for line in index}) == count + 3
