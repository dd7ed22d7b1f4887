import os
import subprocess

import pytest
import torch

from conftest import PY, REPO
from models import LinearClassifier, SupConNet, build_backbone
from utils import UserError


def test_supcon_net_shapes_and_normalised_output():
    net = SupConNet("test_resnet", "none", feat_dim=16).eval()
    z = net(torch.randn(3, 3, 32, 32))
    assert z.shape == (3, 16) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    assert [k for k in net.state_dict() if k.startswith("head.")] == ["head.0.weight", "head.0.bias",
                                                                      "head.2.weight", "head.2.bias"]
    assert LinearClassifier(net.dim)(net.encoder(torch.randn(2, 3, 32, 32))).shape == (2, 2)


def test_local_pretrained_file_loads_backbone_weights(tmp_path):
    src = build_backbone("test_resnet", "none", num_classes=1000)
    torch.save({"model_state_dict": src.state_dict()}, tmp_path / "w.pth")
    enc = build_backbone("test_resnet", str(tmp_path / "w.pth"))
    assert torch.equal(enc.conv1[0].weight, src.conv1[0].weight)


def no_caches(tmp_path):
    """An environment without any downloaded weights: empty torch and Hugging Face caches."""
    return {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_OFFLINE": "1"}


def test_imagenet_weights_missing_stop_before_training_with_one_line(tiny_config_file, tmp_path):
    res = subprocess.run([PY, "train_pt.py", "--config", str(tiny_config_file), "pretrained=imagenet",
                          f"weights_dir={tmp_path / 'weights'}"], cwd=REPO, env=no_caches(tmp_path),
                         capture_output=True, text=True, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "ImageNet weights for test_resnet (test_resnet.r160_in1k) are not on this machine" in lines[0]
    assert "python -m models.fetch_weights test_resnet" in lines[0] and "pretrained: none" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_imagenet_weights_come_from_the_weights_folder_exactly(tiny_config_file, tmp_path):
    torch.manual_seed(3)
    src = build_backbone("test_resnet", "none", num_classes=1000)
    (tmp_path / "weights").mkdir()
    torch.save(src.state_dict(), tmp_path / "weights" / "test_resnet.r160_in1k.pth")  # as fetch_weights writes it
    enc = build_backbone("test_resnet", "imagenet", weights_dir=str(tmp_path / "weights"))
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in enc.state_dict().items())
    head = build_backbone("test_resnet", "imagenet", num_classes=2, weights_dir=str(tmp_path / "weights"))
    assert torch.equal(head.conv1[0].weight, src.conv1[0].weight) and head.fc.weight.shape == (2, src.num_features)
    res = subprocess.run([PY, "train_pt.py", "--config", str(tiny_config_file), "pretrained=imagenet",
                          f"weights_dir={tmp_path / 'weights'}"], cwd=REPO, env=no_caches(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_the_authors_backbones_get_the_authors_weights():
    from models.weights import weights_source
    assert weights_source("resnet50").url.endswith("/resnet50-0676ba61.pth")  # torchvision IMAGENET1K_V1
    assert weights_source("resnet101").tag == "resnet101.tv_in1k"
    assert weights_source("efficientnet_b4").url.endswith("/efficientnet_b4_rwightman-23ab8bcd.pth")
    keys = list(build_backbone("efficientnet_b4", "none", num_classes=2).state_dict())
    assert keys[0].startswith("features.0.") and keys[-1] == "classifier.1.bias"  # torchvision's, as the authors'


def test_bad_backbone_and_pretrained_are_user_errors():
    with pytest.raises(UserError, match="unknown backbone 'resnet_999'"):
        build_backbone("resnet_999")
    with pytest.raises(UserError, match="pretrained must be"):
        build_backbone("test_resnet", "/no/such/file.pth")


def test_fetch_weights_offline_is_one_line_naming_where_it_tried(tmp_path, monkeypatch):
    import time
    from conftest import cli
    from models import fetch_weights
    monkeypatch.setattr(fetch_weights, "reachable", lambda url, timeout=5.0: False)  # this machine: no internet
    start = time.time()
    res = cli(fetch_weights.main, "resnet50", "--weights-dir", tmp_path / "w")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and time.time() - start < 30, res.stderr
    assert lines[0].startswith("error: cannot reach https://huggingface.co/timm/resnet50.tv_in1k")
    assert not list((tmp_path / "w").glob("*.pth"))
