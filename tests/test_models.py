import pytest
import torch

import models
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


def test_offline_imagenet_is_one_warning_and_random_init(monkeypatch, capsys):
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: False)
    build_backbone("test_resnet", "imagenet")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "offline" in err[0] and "random initialisation" in err[0]


def test_bad_backbone_and_pretrained_are_user_errors():
    with pytest.raises(UserError, match="unknown backbone 'resnet_999'"):
        build_backbone("resnet_999")
    with pytest.raises(UserError, match="pretrained must be"):
        build_backbone("test_resnet", "/no/such/file.pth")
