"""`python -m reproduce`: the paper's Table 2 end to end on generated trees, a resume after a killed run, a
missing cell that is named, a rerun that trains nothing, and the bootstrap's confidence intervals."""
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import yaml

from conftest import PY, REPO, check_page, command
from reproduce.tables import paired_bootstrap
from test_protocols import overrides, trees  # noqa: F401  (trees: the generated dataset trees fixture)

TINY = ["backbone=test_resnet", "pretrained=none", "img_size=16", "workers=0", "checkpoint_every=1",
        "supcon.steps=2", "supcon.batch_size=4", "supcon.classifier_steps=1", "supcon.classifier_batch_size=4",
        "mpl.steps=12", "mpl.batch_labeled=4", "mpl.batch_unlabeled=4", "mpl.finetune_steps=1",
        "mpl.finetune_classifier_steps=1", "pt.steps=2", "pt.batch_size=4", "data.frames_scale=0.0001", "tar.steps=2", "tar.batch_size=4",
        "ddt.steps=2", "ddt.batch_size=4", "ddt.backbone=test_resnet"]


def reproduce(tmp_path, trees, *extra):  # noqa: F811
    return ["-m", "reproduce", "--table", "2", "--seeds", "1", "--out", str(tmp_path / "out"), *extra,
            *overrides(trees), f"out_dir={tmp_path / 'runs'}", *TINY]


@pytest.mark.slow
@pytest.mark.first
def test_table_2_end_to_end_with_a_resume_a_missing_cell_and_a_quick_rerun(trees, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SUPCON_PROGRESS_EVERY", "0")
    dry = command(reproduce(tmp_path, trees, "--dry-run"))
    assert dry.returncode == 0 and "sin seed 777: MPL (new) - would run" in dry.stderr, dry.stderr
    # Killed while training the MPL run: the next call resumes it.
    proc = subprocess.Popen([PY, *reproduce(tmp_path, trees)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list((tmp_path / "runs").glob("sin-seed777-*/mpl/checkpoints/ckpt-00-*.tar")) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    res = command(reproduce(tmp_path, trees), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "MPL (unfinished) ..." in res.stderr
    (log,) = (tmp_path / "out" / "logs").glob("sin-seed777-*-mpl.log")
    assert "resuming from" in log.read_text()
    table = json.loads((tmp_path / "out" / "table2.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["Scenario Deepfakes (Known)", "Current-Generation Deepfakes (Unknown)",
                                                 "Post-Generation Deepfakes (Unknown)"]
    known = table["rows"][0]
    assert set(known["cells"]) == {"tar", "ddt", "mpl", "supcon", "supconmpl"} and not known["missing"]
    assert known["cells"]["tar"]["acc"]["n"] == 1 and known["cells"]["ddt"]["acc"]["paper"] == 80.41
    assert known["cells"]["mpl"]["acc"]["n"] == 1 and known["cells"]["mpl"]["acc"]["paper"] == 79.82
    assert set(known["diffs"]) == {"tar", "ddt", "mpl", "supcon"} and "acc" in known["diffs"]["ddt"]
    text = (tmp_path / "out" / "table2.md").read_text()
    assert "## AUC (hard; the paper's)" in text and "(81.40)" in text and "Tar [34] and DDT [31] here: zero-shot" in text
    assert "not implemented" not in text
    assert "±" not in text and known["cells"]["mpl"]["acc"]["std"] is None  # one seed: no spread shown
    assert (tmp_path / "out" / "table2.png").is_file()
    check_page(tmp_path / "out" / "table2.html", images=1, words=("Scenario Deepfakes (Known)", "<table>"))
    # A result that is not there is a named cell, not a silently shorter table; nothing is retrained.
    (results_file,) = (tmp_path / "runs").glob("sin-seed777-*/mpl/results.json")
    results = json.loads(results_file.read_text())
    del results["StyleGAN"]
    results_file.write_text(json.dumps(results))
    start = time.time()
    res = command(reproduce(tmp_path, trees))
    assert res.returncode == 1 and time.time() - start < 60, res.stderr
    assert "skipped" in res.stderr and "..." not in res.stderr  # every run finished: none started
    assert "MPL, seed 777: no results for 'StyleGAN'" in (tmp_path / "out" / "table2.md").read_text()
    # Results of other weights (here: a record that names another file's hash) are evaluated again.
    results["weights"]["files"] = {k: "0" * 64 for k in results["weights"]["files"]}
    results_file.write_text(json.dumps(results))
    res = command(reproduce(tmp_path, trees))
    assert "MPL (unevaluated)" in res.stderr and "scored other weights" in res.stderr, res.stderr
    assert "StyleGAN" in json.loads(results_file.read_text())  # evaluated again: every test set is back
    # A damaged results.json (a truncated write) or a missing predictions.csv: evaluated again, never a traceback.
    results_file.write_text('{"weights": {"fi')
    (results_file.parent / "predictions.csv").unlink()
    res = command(reproduce(tmp_path, trees))
    assert res.returncode == 0 and "MPL (unevaluated)" in res.stderr and "is damaged" in res.stderr, res.stderr
    assert (results_file.parent / "predictions.csv").is_file() and "StyleGAN" in json.loads(results_file.read_text())
    # A finished run trained with other settings than the command's is never averaged in: one line, nothing runs.
    (saved,) = (tmp_path / "runs").glob("sin-seed777-*/mpl/config.yaml")
    original = saved.read_text()
    saved.write_text(original.replace("teacher_lr: 0.0001", "teacher_lr: 0.05"))
    res = command(reproduce(tmp_path, trees))
    lines = [line for line in res.stderr.strip().splitlines() if not line.startswith(("note:", "warning:"))]
    assert res.returncode == 2 and len(lines) == 1 and "trained differently" in lines[0], res.stderr
    assert "mpl.teacher_lr: 0.05 -> 0.0001" in lines[0] and "--retrain" in lines[0]
    saved.write_text(original)
    # ... nor one trained on other data: the same run name, a dataset root that now holds one video less.
    paths = yaml.safe_load((trees / "paths.yaml").read_text())
    shutil.copytree(paths["ff"], tmp_path / "FF2")
    video = sorted((tmp_path / "FF2" / "train_set" / "Real").iterdir())[0]
    shutil.rmtree(video)
    (trees / "paths.yaml").write_text(yaml.safe_dump({**paths, "ff": str(tmp_path / "FF2")}))
    res = command(reproduce(tmp_path, trees))
    assert res.returncode == 2 and "trained on other data than the dataset roots give now" in res.stderr, res.stderr
    (trees / "paths.yaml").write_text(yaml.safe_dump(paths))
    # --retrain: the old folder of the run that differs (here Tar, the quickest to train again) is moved aside,
    # whole, and that run trained again; the others are kept
    (tar_config,) = (tmp_path / "runs").glob("sin-seed777-*/tar/config.yaml")
    tar_cfg = yaml.safe_load(tar_config.read_text())
    tar_config.write_text(yaml.safe_dump({**tar_cfg, "tar": {**tar_cfg["tar"], "lr": 0.05}}))
    res = command(reproduce(tmp_path, trees, "--retrain"), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((tmp_path / "runs").glob("sin-seed777-*/tar.old-*/tar.tar"))) == 1
    assert not [p.name for p in (tmp_path / "runs").glob("sin-seed777-*/*.old-*") if not p.name.startswith("tar.")]
    assert "sin seed 777: Tar (conflict) ..." in res.stderr and "MPL (finished) - skipped" in res.stderr, res.stderr
    assert "    | " in res.stderr  # each run's newest log line, streamed while it trains


def test_fewshot_columns_name_their_target_and_run_as_their_own_jobs(trees, tmp_path):  # noqa: F811
    dry = command(reproduce(tmp_path, trees, "--dry-run", "--fewshot", "5"))
    assert dry.returncode == 0, dry.stderr
    for name in ("Tar", "DDT", "Tar few-shot", "DDT few-shot", "MPL"):
        assert f"sin seed 777: {name} (new) - would run" in dry.stderr
    from reproduce.jobs import job_config
    from reproduce.spec import Job, table_spec
    spec = table_spec(2, False, 5)
    assert spec["methods"][-1] == "supconmpl" and {"tar_fewshot", "ddt_fewshot"} <= set(spec["methods"])
    cfg = job_config(Job("sin", 777, "ddt_fewshot", "x", spec["extra"]["ddt_fewshot"]), overrides(trees))
    assert cfg["fewshot"]["k"] == 5 and cfg["fewshot"]["sources"][0]["methods"] == ["Real", "NeuralTextures"]
    assert cfg["fewshot"]["sources"][0]["subset"] == "train_set"  # never the test videos
    res = command(["-m", "reproduce", "--table", "1", "--fewshot", "5", "--dry-run", "--out", str(tmp_path / "o")])
    assert res.returncode == 2 and "--fewshot K needs --table 2" in res.stderr


def test_a_missing_root_or_missing_weights_stop_reproduce_before_anything_trains(trees, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached ImageNet weights
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    args = ["-m", "reproduce", "--table", "2", "--seeds", "1", "--out", str(tmp_path / "out"),
            f"out_dir={tmp_path / 'runs'}", *TINY]
    res = command([*args, "data.paths_file=" + str(tmp_path / "none.yaml")])
    lines = [line for line in res.stderr.strip().splitlines() if not line.startswith(("note:", "warning:"))]
    assert res.returncode == 2 and len(lines) == 1 and "dataset root" in lines[0] and "is not set" in lines[0], res.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out" / "logs").exists()
    res = command([*args, *overrides(trees), "pretrained=imagenet", f"weights_dir={tmp_path / 'w'}"])
    assert res.returncode == 2 and "ImageNet weights for test_resnet" in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()
    dry = command([*args, *overrides(trees), "pretrained=imagenet", f"weights_dir={tmp_path / 'w'}", "--dry-run"])
    assert dry.returncode == 0 and "SupCon teacher + SupCon-MPL (new) - cannot run: ImageNet weights" in dry.stderr
    assert "Tar (new) - would run" in dry.stderr  # Tar starts from random weights, as its paper


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    videos, frames = 60, 5
    labels = np.repeat(rng.integers(0, 2, videos), frames)
    paths = [f"v{i // frames}/{i % frames}.png" for i in range(videos * frames)]
    good = np.clip(labels * 0.6 + 0.2 + rng.normal(0, 0.15, len(labels)), 0, 1)   # mostly right
    noise = rng.uniform(0, 1, len(labels))                                     # chance
    as_preds = lambda s: {p: (p.split("/")[0], int(y), float(v)) for p, y, v in zip(paths, labels, s)}  # noqa: E731
    diff = paired_bootstrap([(as_preds(good), as_preds(noise))])
    assert diff["acc"]["lo"] > 0.2 and diff["auc"]["lo"] > 0.2
    same = paired_bootstrap([(as_preds(good), as_preds(good))])
    assert same["acc"] == {"diff": 0.0, "lo": 0.0, "hi": 0.0}


@pytest.mark.slow
def test_interrupting_reproduce_stops_its_training_too(trees, tmp_path):  # noqa: F811
    """SIGINT to reproduce's own pid (not its group): the running training gets it too, saves a checkpoint and
    stops; reproduce ends with one line; no process is left holding the run."""
    from engine.run import RunLock
    # Table 1's first run is the baseline: made long enough to be caught training, it is interrupted seconds in.
    args = ["-m", "reproduce", "--table", "1", "--seeds", "1", "--out", str(tmp_path / "out"), *overrides(trees),
            f"out_dir={tmp_path / 'runs'}", *TINY, "pt.steps=100000"]
    proc = subprocess.Popen([PY, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list((tmp_path / "runs").glob("ff_wo_df-seed777-*/pt/checkpoints/ckpt-00-*.tar")) \
            and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "stopped by signal 2" in err.strip().splitlines()[-1], err
    (folder,) = (tmp_path / "runs").glob("ff_wo_df-seed777-*/pt")
    RunLock(folder).acquire(True, "test").release()  # nobody holds it: the training ended
    assert list((folder / "checkpoints").glob("ckpt-*.tar")) and not (folder / "pt.tar").exists()  # stopped, unfinished
