"""The folder dataset, video-level splits, transforms and the demo generator."""
import hashlib

import cv2
import numpy as np
import pytest
import torch

from engine.config import DEFAULTS, load_config
from datasets.augment import eval_transform, train_transform
from datasets.kinds.ff import FF_METHODS
from datasets.loaders import ImageDataset
from datasets.sources import build_source
from datasets.splits import split_by_video, target_id
from datasets.augment import aug_spec
from datasets.protocols import role_samples
from preprocess.demo import generate
from utils import UserError

DATA = DEFAULTS["data"]


def write_img(path, value=128, size=20, channels=3):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, channels) if channels > 1 else (size, size)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def test_folder_dataset_recursive_and_labelled(tmp_path):
    write_img(tmp_path / "real" / "vid1" / "0.png")
    write_img(tmp_path / "real" / "a.jpg")
    write_img(tmp_path / "fake" / "x" / "y" / "1.PNG", channels=1)  # grayscale: converted to RGB
    (tmp_path / "fake" / "notes.txt").write_text("not an image")
    samples = build_source(f"folder:{tmp_path}", DATA, 0)
    assert sorted((s.label, s.path.split("/")[-1]) for s in samples) == [(0, "0.png"), (0, "a.jpg"), (1, "1.PNG")]
    ds = ImageDataset(samples, [eval_transform(16, "resnet50", "project")])
    x, y, bad = ds[2]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1 and bad == ""


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(UserError, match="dataset folder not found"):
        build_source(f"folder:{tmp_path / 'nope'}", DATA, 0)
    write_img(tmp_path / "real" / "a.png")
    (tmp_path / "fake").mkdir()
    with pytest.raises(UserError, match="no images in .*fake"):
        build_source(f"folder:{tmp_path}", DATA, 0)
    with pytest.raises(UserError, match="unknown dataset 'imagenet:x'"):
        build_source("imagenet:x", DATA, 0)


def test_input_scaling_project_and_seed():
    img = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    seed = eval_transform(8, "resnet50", "seed")(img)
    assert torch.allclose(seed, torch.full_like(seed, 1 / 255))  # the reference's double division
    proj = eval_transform(8, "resnet50", "project")(img)
    assert torch.allclose(proj[0], torch.full((8, 8), (1 - 0.485) / 0.229))


def test_two_views_are_independent_draws(tiny_demo):
    cfg = load_config(None, ["backbone=test_resnet", "img_size=32"])
    samples = build_source({"kind": "ff", "root": str(tiny_demo / "FaceForensics++"), "subset": "train_set",
                            "methods": ["Real"]}, DATA, 0)
    v1, v2, label, _ = ImageDataset(samples, [train_transform(aug_spec(cfg))] * 2)[(0, 123)]
    assert v1.shape == v2.shape == (3, 32, 32) and label == 0 and not torch.equal(v1, v2)


def test_split_by_video_never_splits_a_target(tiny_demo):
    spec = {"kind": "ff", "root": str(tiny_demo / "FaceForensics++"), "subset": "train_set"}
    everything = build_source(spec, DATA, 0)
    lab = build_source({**spec, "videos": "labeled"}, DATA, 0)
    unl = build_source({**spec, "videos": "unlabeled"}, DATA, 0)
    assert len(lab) + len(unl) == len(everything) == 6 * 2 * 5
    ids_l, ids_u = {target_id(s.video) for s in lab}, {target_id(s.video) for s in unl}
    assert ids_l and ids_u and not ids_l & ids_u
    assert {s.video for s in lab}.isdisjoint({s.video for s in unl})
    assert [s.path for s in split_by_video(everything, "labeled", 0.5, 0)] == [s.path for s in lab]


def test_empty_split_is_an_error(tiny_demo):
    spec = {"kind": "ff", "root": str(tiny_demo / "FaceForensics++"), "subset": "train_set", "videos": "labeled"}
    empty = build_source(spec, {**DATA, "labeled_fraction": 0.0}, 0)
    with pytest.raises(UserError, match="split is empty"):
        role_samples({"labeled": ("labeled", None, empty)}, "labeled")


def test_demo_layout(tiny_demo):
    ff = tiny_demo / "FaceForensics++"
    for subset, n in (("train_set", 6), ("test_set", 3)):
        for method in ("Real", *FF_METHODS):
            videos = sorted(p.name for p in (ff / subset / method).iterdir())
            assert len(videos) == n
            assert all(len(list((ff / subset / method / v).glob("*.png"))) == 2 for v in videos)
    assert len(list((tiny_demo / "StyleGAN").glob("*.png"))) == 3 * 2
    real = sorted(p.name for p in (ff / "train_set" / "Real").iterdir())
    fake = sorted(p.name for p in (ff / "train_set" / "Deepfakes").iterdir())
    assert [f.split("_")[0] for f in fake] == real  # fake videos are target_source
    img = cv2.imread(str(next((ff / "test_set" / "FaceSwap").rglob("*.png"))))
    assert img.shape == (32, 32, 3)


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic(tmp_path, tiny_demo):
    again = generate(tmp_path / "again", seed=1, size=32, train_ids=6, test_ids=3, frames=2, quiet=True)
    assert digest(again) == digest(tiny_demo)
    other = generate(tmp_path / "other", seed=2, size=32, train_ids=6, test_ids=3, frames=2, quiet=True)
    assert digest(other) != digest(tiny_demo)


def test_fakes_differ_from_their_real_frame(tiny_demo):
    ff = tiny_demo / "FaceForensics++" / "test_set"
    real = cv2.imread(str(sorted((ff / "Real").rglob("*.png"))[0])).astype(float)
    for method in FF_METHODS:
        fake = cv2.imread(str(sorted((ff / method).rglob("*.png"))[0])).astype(float)
        diff = np.abs(fake - real).mean(axis=2)
        # A face-like region is altered, not the whole frame: the corners stay closer to the real frame.
        centre, corners = diff[10:22, 10:22].mean(), np.mean([diff[:3, :3], diff[-3:, -3:]])
        assert centre > 0.3 and centre > corners, (method, centre, corners)
