"""Tar and DDT, Table 2's other rows: each loss against a hand-computed case (value and gradient), their score
rules, the few-shot target kept clear of test videos, a tiny run of each script on the generated demo with
evaluate.py and predict.py on its weights, and an exact resume after SIGKILL."""
import json
import math
import signal
import subprocess
import time

import pytest
import torch
import yaml

from conftest import PY, REPO, command, tiny_config, train_and_evaluate
from losses.ddt import DDTLoss, ddt_logits, wasserstein
from losses.tar import TARLoss, tar_logits
from utils import UserError
from test_predict_report import media  # noqa: F401  (media: photographs with faces)


def test_ddt_loss_by_hand():
    # d = 2: m_real = (1, 0), m_fake = (0, 1). Image 0 real, mu (0.5, -0.5), sigma (1, 1):
    # W_real = sqrt(0.25 + 0.25) = sqrt(0.5). Image 1 fake, mu (0, 3), sigma (2, 1): W_fake = sqrt(0 + 4 + 1) = sqrt(5).
    mu = torch.tensor([[0.5, -0.5], [0.0, 3.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, 0.0], [2 * math.log(2.0), 0.0]], requires_grad=True)
    labels = torch.tensor([0, 1])
    w = wasserstein(mu, logvar)
    assert w[0, 0].item() == pytest.approx(math.sqrt(0.5)) and w[1, 1].item() == pytest.approx(math.sqrt(5))
    assert w[0, 1].item() == pytest.approx(math.sqrt(0.25 + 0.25))  # |mu| = (0.5, 0.5) is as far from both modes
    loss = DDTLoss(weight=2.0)(mu, logvar, labels)  # (2 W_real(0) + W_fake(1)) / (1 + 2)
    assert loss.item() == pytest.approx((2 * math.sqrt(0.5) + math.sqrt(5)) / 3)
    loss.backward()
    # d/dmu of the real image's term: (2 / 3) (|mu| - m) sign(mu) / W
    r = math.sqrt(0.5)
    assert mu.grad[0].tolist() == pytest.approx([2 / 3 * -0.5 / r, 2 / 3 * (0.5 * -1) / r])
    # d/dlogvar of the fake image's first dimension: (1 / 3) (sigma - 1) (sigma / 2) / W = (1 / 3) / sqrt(5)
    assert logvar.grad[1, 0].item() == pytest.approx(1 / 3 / math.sqrt(5))
    assert logvar.grad[0].tolist() == pytest.approx([0.0, 0.0])  # sigma = 1: the spread term is at its minimum


def test_ddt_decision_is_the_nearer_mode_and_its_score_a_sigmoid_of_the_distances():
    mu, logvar = torch.randn(64, 16), torch.randn(64, 16) * 0.3
    w = wasserstein(mu, logvar)
    p = ddt_logits(mu, logvar).softmax(1)[:, 1]
    assert torch.allclose(p, torch.sigmoid(w[:, 0] - w[:, 1]), atol=1e-6)
    assert torch.equal(p > 0.5, w[:, 1] < w[:, 0])


def test_tar_loss_by_hand():
    # C = 4 (fake half: channels 0, 1; real half: 2, 3), latent 1 x 2 (H' W' = 2).
    latent = torch.tensor([[[[1.0, -1.0]], [[2.0, 0.0]], [[4.0, 4.0]], [[0.0, -2.0]]]], requires_grad=True)
    image = torch.zeros(1, 3, 2, 2)
    recon = torch.full((1, 3, 2, 2), 0.5, requires_grad=True)
    # per-channel means |h|: (1, 1, 4, 1). A real image: fake half summed, 1 + 1 = 2; real half
    # |1 - 4 / 2| + |1 - 1 / 2| = 1 + 0.5. Reconstruction: 0.1 x 0.5.
    real = TARLoss()(latent, recon, image, torch.tensor([0]))
    assert real.item() == pytest.approx(2 + 1.5 + 0.05)
    real.backward()
    # d/dh of channel 2 (mean 4 > C/2): +1/(C/2) x 1/H'W' per pixel, sign(h) = +1; channel 0: 1/H'W' x sign(h)
    assert latent.grad[0, 2, 0].tolist() == pytest.approx([0.25, 0.25])
    assert latent.grad[0, 0, 0].tolist() == pytest.approx([0.5, -0.5])
    assert recon.grad.flatten()[0].item() == pytest.approx(0.1 / 12)
    # A fake image: the mirror, real half summed 4 + 1; fake half |1 - 1/2| + |1 - 1/2|.
    fake = TARLoss()(latent.detach(), recon.detach(), image, torch.tensor([1]))
    assert fake.item() == pytest.approx(5 + 1.0 + 0.05)


def test_tar_score_is_the_fake_share_of_the_activations():
    latent = torch.randn(8, 128, 3, 3)
    a_fake = latent[:, :64].abs().mean(dim=(1, 2, 3))
    a_real = latent[:, 64:].abs().mean(dim=(1, 2, 3))
    p = tar_logits(latent).softmax(1)[:, 1]
    assert torch.allclose(p, a_fake / (a_fake + a_real), atol=1e-6)


def test_few_shot_targets_are_k_per_class_and_never_of_a_test_video(tiny_demo, tmp_path):
    from datasets.protocols import training_sets
    from engine.config import load_config
    ff = str(tiny_demo / "FaceForensics++")
    cfg = tiny_config(tiny_demo, tmp_path / "runs", val={"enabled": True, "fraction": 0.5})
    cfg["fewshot"] = {"sources": [{"kind": "ff", "root": ff, "subset": "train_set", "methods": ["Real", "NeuralTextures"]}],
                      "k": 3}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sets = training_sets(load_config(str(path)))
    held = {s.video for role, _, ss in sets.values() if role in ("test", "val") for s in ss}
    role, _, samples = sets["fewshot0"]
    assert role == "fewshot" and sorted(s.label for s in samples) == [0, 0, 0, 1, 1, 1]
    assert not {s.video for s in samples} & held
    # a target made of test videos: one line, never a training set that holds them
    cfg["fewshot"]["sources"][0]["subset"] = "test_set"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match=r"fewshot.sources\[0\]: none of its images is clear of the validation and test"):
        training_sets(load_config(str(path)))


def tar_ddt_config(tmp_path, demo, name, **extra):
    cfg = tiny_config(demo, tmp_path / name, checkpoint_every=1, **extra)
    cfg["tar"] = {"steps": 6, "batch_size": 4}
    cfg["ddt"] = {"backbone": "test_resnet", "steps": 6, "batch_size": 8}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("method", ["tar", "ddt"])
def test_each_trains_and_is_evaluated_and_predicts_like_every_other_row(method, tiny_demo, media, tmp_path):  # noqa: F811
    ff = str(tiny_demo / "FaceForensics++")
    target = json.dumps([{"kind": "ff", "root": ff, "subset": "train_set", "methods": ["Real", "NeuralTextures"]}])
    config = tar_ddt_config(tmp_path, tiny_demo, "runs", val={"enabled": True, "every": 3})
    res = train_and_evaluate(method, "--config", config, f"fewshot.sources={target}", "fewshot.k=2",
                             "fewshot.steps=3")
    assert res.returncode == 0, res.stderr[-3000:]
    folder = next((tmp_path / "runs").glob(f"*/{method}"))
    release = torch.load(folder / f"{method}.tar", weights_only=True)
    assert set(release) >= {"model_state_dict", "backbone", "img_size", "input_scale", "calibration"}
    assert release["input_scale"] == ("unit" if method == "tar" else "project")
    stages = {json.loads(line)["stage"] for line in (folder / "train_log.jsonl").read_text().splitlines()}
    assert stages >= {method, "fewshot0"}
    assert "transfer to" in (folder / "log.txt").read_text() and "val_auc" in (folder / "train_log.jsonl").read_text()
    results = json.loads((folder / "results.json").read_text())
    assert {"Deepfakes", "NeuralTextures"} <= set(results) and 0 <= results["NeuralTextures"]["auc"] <= 1
    made = results["produced_by"]  # what a reader needs to trust the number: method, network, inputs, code
    assert made["method"] == method and made["img_size"] == 32 and len(made["config_sha256"]) == 64
    assert made["versions"]["torch"] == torch.__version__ and "cpu" in made["machine"]
    out = tmp_path / "p.json"
    res = command(["predict.py", str(media / "astronaut.png"), "--method", method, "--weights",
                   str(folder / f"{method}.tar"), "--json", str(out)])
    assert res.returncode == 0, res.stderr
    score = json.loads(out.read_text())[str(media / "astronaut.png")]["score"]
    assert 0.0 <= score <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tar", "ddt"])
def test_a_killed_run_resumes_to_the_same_weights(method, tiny_demo, tmp_path):
    ref = tar_ddt_config(tmp_path, tiny_demo, "ref")
    assert command([f"train_{method}.py", "--config", str(ref)]).returncode == 0
    cut = tar_ddt_config(tmp_path, tiny_demo, "cut")
    proc = subprocess.Popen([PY, f"train_{method}.py", "--config", str(cut)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "cut" / "tiny" / method / "checkpoints"
    deadline = time.time() + 300
    while len(list(ckpts.glob("ckpt-00-*.tar"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    res = command([f"train_{method}.py", "--config", str(cut), "--resume"])
    assert res.returncode == 0 and "resuming from" in res.stderr, res.stderr
    a = torch.load(tmp_path / "ref" / "tiny" / method / f"{method}.tar", weights_only=True)["model_state_dict"]
    b = torch.load(tmp_path / "cut" / "tiny" / method / f"{method}.tar", weights_only=True)["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
