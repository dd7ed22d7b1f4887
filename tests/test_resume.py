"""Runs that survive: kill -9 and resume, SIGTERM, crashes inside a checkpoint write."""
import json
import signal
import subprocess
import time

import pytest
import torch
import yaml

from conftest import PY, REPO, run, tiny_config, command
from engine.checkpoint import Checkpointer, load_checkpoint

STEPS = {"supcon": {"steps": 4, "batch_size": 8, "classifier_steps": 3, "classifier_batch_size": 8},
         "mpl": {"steps": 4, "batch_labeled": 4, "batch_unlabeled": 8, "finetune_steps": 3,
                 "finetune_classifier_steps": 3}}


def write_config(demo, out, tmp_path, name, **extra):
    cfg = tiny_config(demo, out, **{"checkpoint_every": 1, **STEPS, **extra})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def logged_steps(runs):
    return sum(len(p.read_text().splitlines()) for p in runs.rglob("train_log.jsonl"))


def final_state(folder, names):
    return {n: load_checkpoint(folder / n)["model_state_dict"] for n in names}


def assert_same_weights(a, b):
    for name in a:
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), f"{name}: {k} differs"


def evaluate_json(config, out_json):
    res = command(["evaluate.py", "--method", "supconmpl", "--config", str(config), "--json", str(out_json),
               "--predictions", str(out_json.with_suffix(".csv"))])
    assert res.returncode == 0, res.stderr
    results = json.loads(out_json.read_text())
    results.pop("weights")  # the files scored: other paths and run ids, the same weights (checked above)
    results.pop("produced_by")  # the two runs' configs differ in their folders (out_dir), so do their hashes
    return results


@pytest.mark.slow
def test_kill_9_at_several_points_then_resume_gives_identical_weights_and_metrics(tiny_demo, tmp_path):
    names = ["mpl_supcon_encoder.tar", "mpl_supcon_classifier.tar"]
    ref_cfg = write_config(tiny_demo, tmp_path / "ref", tmp_path, "ref")
    res = command(["train_supconmpl.py", "--config", str(ref_cfg)])
    assert res.returncode == 0, res.stderr
    reference = final_state(tmp_path / "ref" / "tiny" / "supconmpl", names)

    cfg = write_config(tiny_demo, tmp_path / "cut", tmp_path, "cut")
    runs = tmp_path / "cut"
    # Kill points by logged steps: inside SupCon, inside the classifier stage, inside MPL, inside fine-tuning.
    for kill_at in (2, 6, 9, 13):
        args = [PY, "train_supconmpl.py", "--config", str(cfg)] + (["--resume"] if kill_at != 2 else [])
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while logged_steps(runs) < kill_at and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"run ended before the kill at {kill_at}"
    # Forgetting --resume must not throw the unfinished run away.
    res = command(["train_supconmpl.py", "--config", str(cfg)])
    assert res.returncode == 2 and "holds an unfinished run" in res.stderr and "--resume" in res.stderr
    res = command(["train_supconmpl.py", "--config", str(cfg), "--resume"])
    assert res.returncode == 0, res.stderr
    assert "resuming from" in res.stderr
    # (A finished run started over without --resume: test_run_safety::test_a_replaced_run_leaves_nothing_of_the_old_one.)
    assert_same_weights(reference, final_state(runs / "tiny" / "supconmpl", names))
    assert evaluate_json(ref_cfg, tmp_path / "ref.json") == evaluate_json(cfg, tmp_path / "cut.json")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_that_resumes_to_the_same_result(tiny_demo, tmp_path):
    extra = {"pt": {"steps": 40, "batch_size": 8}, "checkpoint_every": 1000}
    ref_cfg = write_config(tiny_demo, tmp_path / "ref", tmp_path, "ref", **extra)
    assert command(["train_pt.py", "--config", str(ref_cfg)]).returncode == 0
    cfg = write_config(tiny_demo, tmp_path / "cut", tmp_path, "cut", **extra)
    proc = subprocess.Popen([PY, "train_pt.py", "--config", str(cfg)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while logged_steps(tmp_path / "cut") < 5 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint saved" in err and "--resume" in err
    ckpts = sorted((tmp_path / "cut" / "tiny" / "pt" / "checkpoints").glob("ckpt-*.tar"))
    assert len(ckpts) == 1 and 5 <= torch.load(ckpts[0], weights_only=True)["step"] < 40
    res = run(["bash", "train_pt_model.sh", "--config", str(cfg), "--resume"])
    assert res.returncode == 0, res.stderr
    assert_same_weights(final_state(tmp_path / "ref" / "tiny" / "pt", ["pt.tar"]),
                        final_state(tmp_path / "cut" / "tiny" / "pt", ["pt.tar"]))


def make_checkpointer(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    return Checkpointer(tmp_path / "checkpoints", 2, ["a", "b"], model=model, opt=opt), model, opt


def test_crash_inside_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path, monkeypatch):
    ckpt, model, _ = make_checkpointer(tmp_path)
    first = ckpt.save("a", 1, {})
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full (injected)")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="injected"):
        ckpt.save("a", 2, {})
    monkeypatch.undo()
    assert ckpt.checkpoints() == [first] and not list(tmp_path.rglob("*.tmp"))
    assert ckpt.restore(ckpt.read(first)) == ("a", 1)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())


def test_only_the_last_k_checkpoints_are_kept_in_stage_order(tmp_path):
    ckpt, _, _ = make_checkpointer(tmp_path)
    for stage, step in (("a", 1), ("a", 2), ("b", 1), ("b", 2)):
        ckpt.save(stage, step, {})
    assert [p.name for p in ckpt.checkpoints()] == ["ckpt-01-00000001.tar", "ckpt-01-00000002.tar"]
    assert ckpt.latest().name == "ckpt-01-00000002.tar"


def test_resume_with_another_config_is_refused(tiny_demo, tmp_path):
    cfg = write_config(tiny_demo, tmp_path / "runs", tmp_path, "a", pt={"steps": 3, "batch_size": 8})
    assert command(["train_pt.py", "--config", str(cfg)]).returncode == 0
    res = command(["train_pt.py", "--config", str(cfg), "--resume", "pt.lr=0.5"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--resume: the config differs" in res.stderr and "pt.lr: 0.0001 -> 0.5" in res.stderr
    saved = yaml.safe_load((tmp_path / "runs" / "tiny" / "pt" / "config.yaml").read_text())
    assert saved["pt"]["lr"] == 1e-4  # the refused settings did not replace the run's config
    res = command(["train_pt.py", "--config", str(cfg), "--resume", "workers=1"])  # harmless change
    assert res.returncode == 0, res.stderr
