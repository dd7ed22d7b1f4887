"""Vanilla MPL (train_mpl.py): which parameters each sub-step moves, both signs of h, the options, and the
command end to end with a resume."""
import contextlib
import copy
import json
import signal
import subprocess
import time

import pytest
import torch
import torch.nn.functional as F
import yaml

from engine.config import DEFAULTS
from conftest import PY, REPO, run, tiny_config, command
from methods.mpl import VanillaMPL, mpl_step
from models import build_baseline


def make(seed=0, **options):
    torch.manual_seed(seed)
    mc = {**DEFAULTS["mpl"], "teacher_lr": 1e-2, "student_lr": 1e-2}
    m = VanillaMPL(build_baseline("test_resnet"), build_baseline("test_resnet"), mc,
                   {**DEFAULTS["mpl_options"], **options}, contextlib.nullcontext())
    return m


def batch(seed=1, b_l=4, b_u=6, size=16):
    g = torch.Generator().manual_seed(seed)
    r = lambda n: torch.randn(n, 3, size, size, generator=g)  # noqa: E731
    return r(b_l), torch.tensor([0, 1, 0, 1]), r(b_u), r(b_u)


def plain(opt, loss, name):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def moved(before, module):
    return any(not torch.equal(before[k], v.detach()) for k, v in module.named_parameters())


def test_each_network_moves_only_in_its_own_update():
    m = make()
    t0, s0 = params(m.teacher), params(m.student)
    out = mpl_step(m, *batch(), None, plain)
    assert moved(t0, m.teacher) and moved(s0, m.student)
    m = make()
    m.opt_s = torch.optim.SGD(m.student.parameters(), lr=0.0)  # the student's update off
    s0 = params(m.student)
    mpl_step(m, *batch(), None, plain)
    assert not moved(s0, m.student)  # nothing else moves the student
    m = make()
    m.opt_t = torch.optim.SGD(m.teacher.parameters(), lr=0.0)
    t0 = params(m.teacher)
    mpl_step(m, *batch(), None, plain)
    assert not moved(t0, m.teacher)  # the student's update does not reach the teacher
    assert set(out) >= {"t_loss", "s_loss", "h", "pseudo_fake"}


@pytest.mark.parametrize("sign", ["new_minus_old", "old_minus_new"])
def test_teacher_update_is_supervised_ce_plus_h_times_its_pseudo_label_ce(sign):
    m = make()
    m.sign = sign
    m.opt_t = torch.optim.SGD(m.teacher.parameters(), lr=1.0)  # delta = -gradient
    x_l, y, x_uw, x_us = batch()
    teacher0, student0 = copy.deepcopy(m.teacher), copy.deepcopy(m.student)
    out = mpl_step(m, x_l, y, x_uw, x_us, None, plain)
    # h: the student's labeled CE after minus before its update (train mode, as kekmodel/MPL-pytorch)
    s_l0 = student0(torch.cat([x_l, x_us]))[:4]
    with torch.no_grad():
        s_new = F.cross_entropy(m.student(x_l), y)
    h = s_new - F.cross_entropy(s_l0, y)
    assert torch.allclose(out["h"], h if sign == "new_minus_old" else -h, atol=1e-5)
    t_l, _, t_us = teacher0(torch.cat([x_l, x_uw, x_us])).split([4, 6, 6])
    expected = F.cross_entropy(t_l, y) + out["h"] * F.cross_entropy(t_us, t_us.detach().argmax(1))
    grads = torch.autograd.grad(expected, list(teacher0.parameters()))
    for (name, p0), p1, g in zip(teacher0.named_parameters(), m.teacher.parameters(), grads):
        assert torch.allclose(p0 - p1, g, atol=1e-5), name


def test_options_uda_baseline_and_ema():
    m = make(uda=True, uda_threshold=0.0, h_baseline=0.9, ema=0.5)
    s0 = {k: v.clone() for k, v in m.student.state_dict().items()}
    out = mpl_step(m, *batch(), None, plain)
    assert torch.isfinite(out["t_loss"]) and m.baseline != 0
    ema_w = m.ema.module.state_dict()["fc.weight"]
    new_w = m.student.state_dict()["fc.weight"]
    assert torch.allclose(ema_w, 0.5 * s0["fc.weight"] + 0.5 * new_w, atol=1e-6)


def mpl_config(tmp_path, demo, name, **extra):
    cfg = tiny_config(demo, tmp_path / name, checkpoint_every=1, **extra)
    cfg["mpl"] = {"steps": 30, "batch_labeled": 4, "batch_unlabeled": 8, "finetune_steps": 3}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_train_mpl_model_script_trains_evaluates_and_resumes_to_the_same_weights(tiny_demo, tmp_path):
    ref = mpl_config(tmp_path, tiny_demo, "ref")
    res = run(["bash", "train_mpl_model.sh", "--config", str(ref)])
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "ref" / "tiny" / "mpl"
    results = json.loads((folder / "results.json").read_text())
    assert set(results) == {"weights", "produced_by", "Deepfakes", "NeuralTextures"} and results["Deepfakes"]["n"] == 12
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log} == {"mpl", "finetune"} and all("h" in r for r in log if r["stage"] == "mpl")
    cut = mpl_config(tmp_path, tiny_demo, "cut")
    proc = subprocess.Popen([PY, "train_mpl.py", "--config", str(cut)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "cut" / "tiny" / "mpl" / "checkpoints"
    while len(list(ckpts.glob("ckpt-00-*.tar"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = command(["train_mpl.py", "--config", str(cut), "--resume"])
    assert res.returncode == 0 and "resuming from" in res.stderr, res.stderr
    a = torch.load(folder / "mpl.tar", weights_only=True)["model_state_dict"]
    b = torch.load(tmp_path / "cut" / "tiny" / "mpl" / "mpl.tar", weights_only=True)["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_mpl_baseline_runs_at_supconmpl_s_budget_by_default(tiny_config_file, tmp_path):
    """Issue 33: UDA on, the teacher from labeled training (the baseline's release, trained first when missing),
    the student's fine-tune at SupCon-MPL's batch; the Sin protocol resolves to exactly that."""
    from engine.config import load_config
    sin = load_config(str(REPO / "configs" / "sin.yaml"))
    assert sin["mpl_options"]["uda"] is True and sin["mpl_options"]["teacher_start"] == "baseline"
    assert (sin["mpl_options"]["finetune_batch"] or sin["supcon"]["batch_size"]) == 512
    res = command(["train_mpl.py", "--config", str(tiny_config_file)])
    assert res.returncode == 0, res.stderr
    assert "the MPL teacher starts from the baseline" in res.stderr and "training it first" in res.stderr
    run = tmp_path / "runs" / "tiny"
    log = (run / "mpl" / "log.txt").read_text()
    assert f"teacher from {run / 'pt' / 'pt.tar'}; UDA on" in log and "steps (batch 8)" in log  # supcon.batch_size
    res = command(["train_mpl.py", "--config", str(tiny_config_file), "--run-name", "pure",
                   "mpl_options.teacher_start=pretrained", "mpl_options.uda=false"])
    assert res.returncode == 0 and "training it first" not in res.stderr, res.stderr
    assert not (tmp_path / "runs" / "pure" / "pt").exists()


def test_randaugment_strong_views_are_seeded_and_change_only_that_view():
    from datasets.augment import BatchAugment, aug_spec
    from engine.config import load_config
    cfg = load_config(None, ["img_size=16", "backbone=test_resnet", "aug.unlabeled_strong.randaugment=[2,10]"])
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8)
    weak, strong = BatchAugment(aug_spec(cfg, "unlabeled_weak")), BatchAugment(aug_spec(cfg, "unlabeled_strong"))
    plain = BatchAugment(aug_spec(load_config(None, ["img_size=16", "backbone=test_resnet"]), "unlabeled_strong"))

    def view(aug):
        return aug(images, aug.params(6, torch.Generator().manual_seed(3)))
    assert torch.equal(view(strong), view(strong))  # the same (seed, step): the same batch
    assert not torch.equal(view(strong), view(plain)) and torch.equal(view(weak), view(plain))
