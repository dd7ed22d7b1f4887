"""Checkpoints in the reference code's key layout load and evaluate; bad ones give one-line errors."""
import json

import pytest
import torch
import torchvision

from models import EncoderClassifier, LinearClassifier, SupConNet, build_baseline
from engine.checkpoint import load_weights
from utils import UserError

from conftest import command


def reference_supcon_state(dim=512, feat_dim=128):
    """What the authors' SupConResNet saved: encoder.<torchvision resnet keys>, head.0.*, head.2.*."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    state = {f"encoder.{k}": v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    head = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, feat_dim))
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    return tv, state


def test_supcon_encoder_and_classifier_in_reference_layout(tmp_path):
    tv, state = reference_supcon_state()
    torch.save({"model_state_dict": state}, tmp_path / "supcon_encoder.tar")
    torch.save({"model_state_dict": {"fc.weight": torch.randn(2, 512), "fc.bias": torch.zeros(2)}},
               tmp_path / "supcon_classifier.tar")
    net = SupConNet("resnet18", "none")
    load_weights(net, tmp_path / "supcon_encoder.tar")
    cls = LinearClassifier(net.dim)
    load_weights(cls, tmp_path / "supcon_classifier.tar")
    tv.fc = torch.nn.Identity()
    tv.eval(), net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net.encoder(x), tv(x), atol=1e-5)
        assert EncoderClassifier(net.encoder, cls)(x).shape == (2, 2)


def test_baseline_in_reference_layout_with_dataparallel_prefix(tmp_path):
    tv = torchvision.models.resnet18()
    tv.fc = torch.nn.Linear(512, 2)
    state = {f"module.{k}": v for k, v in tv.state_dict().items()}
    torch.save({"model_state_dict": state}, tmp_path / "resnet_state_dict_ff.tar")
    model = build_baseline("resnet18")
    load_weights(model, tmp_path / "resnet_state_dict_ff.tar")
    tv.eval(), model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), tv(x), atol=1e-5)


def test_mismatched_and_corrupt_checkpoints_are_one_line_errors(tmp_path):
    _, state = reference_supcon_state()
    torch.save({"model_state_dict": state}, tmp_path / "r18.tar")
    with pytest.raises(UserError, match="does not fit SupConNet.*missing keys"):
        load_weights(SupConNet("test_resnet"), tmp_path / "r18.tar")
    (tmp_path / "bad.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_weights(LinearClassifier(4), tmp_path / "bad.tar")
    with pytest.raises(UserError, match="checkpoint not found"):
        load_weights(LinearClassifier(4), tmp_path / "missing.tar")


def test_our_release_checkpoints_are_self_describing_and_belong_together(tiny_config_file):
    res = command(["train_supcon.py", "--config", str(tiny_config_file)])
    assert res.returncode == 0, res.stderr
    folder = tiny_config_file.parent / "runs" / "tiny" / "supcon"
    enc = torch.load(folder / "supcon_encoder.tar", weights_only=True)
    cls = torch.load(folder / "supcon_classifier.tar", weights_only=True)
    assert {"model_state_dict", "kind", "backbone", "step", "config", "img_size", "run_id"} <= set(enc)
    assert enc["kind"] == "supcon_encoder" and enc["step"] == 2 and enc["backbone"] == "test_resnet"
    assert set(cls["model_state_dict"]) == {"fc.weight", "fc.bias"} and cls["run_id"] == enc["run_id"]
    assert cls["belongs_to"]["file"] == "supcon_encoder.tar"
    assert not list(folder.rglob("*.tmp"))


def test_evaluate_authors_weights_with_seed_input_scale(tmp_path, tiny_demo):
    """The authors' released files (bare model_state_dict) evaluate through the public CLI."""
    _, state = reference_supcon_state()
    torch.save({"model_state_dict": state}, tmp_path / "mpl_supcon_encoder.tar")
    torch.save({"model_state_dict": {"fc.weight": torch.randn(2, 512), "fc.bias": torch.zeros(2)}},
               tmp_path / "mpl_supcon_classifier.tar")
    res = command(["evaluate.py", "--method", "supconmpl", "--backbone", "resnet18", "--input-scale", "seed",
               "--encoder", str(tmp_path / "mpl_supcon_encoder.tar"),
               "--classifier", str(tmp_path / "mpl_supcon_classifier.tar"),
               "--test", f"folder:{tmp_path / 'set'}", "--img-size", "32",
               "--json", str(tmp_path / "out.json"), "--predictions", str(tmp_path / "out.csv")])
    assert res.returncode == 2 and "dataset folder not found" in res.stderr  # folder not made yet
    (tmp_path / "set").mkdir()
    for label, method in (("real", "Real"), ("fake", "Deepfakes")):
        (tmp_path / "set" / label).symlink_to(tiny_demo / "FaceForensics++" / "test_set" / method)
    res = command(["evaluate.py", "--method", "supconmpl", "--backbone", "resnet18", "--input-scale", "seed",
               "--encoder", str(tmp_path / "mpl_supcon_encoder.tar"),
               "--classifier", str(tmp_path / "mpl_supcon_classifier.tar"),
               "--test", f"folder:{tmp_path / 'set'}", "--img-size", "32",
               "--json", str(tmp_path / "out.json"), "--predictions", str(tmp_path / "out.csv")])
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert set(out) == {"weights", "produced_by", "set"} and out["set"]["split"] is None and out["set"]["n"] == 12
    assert out["produced_by"]["config_sha256"] is None  # the authors' files hold no config
    assert set(out["set"]) - {"video"} == {"acc", "auc", "auc_hard", "f1", "eer", "ap", "real_acc", "fake_acc", "bal_acc",
                                           "n", "split"}
    assert out["weights"]["run_id"] is None and len(out["weights"]["files"]) == 2  # the authors' files: no run id
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "set,path,video,label,score" and len(lines) == 13
