"""Around the edges of a run (issue 11): locked run folders, results tied to their weights, checks before
writes, resumes that refuse other data, validated settings, unique names, and no misleading leftovers."""
import json
import shutil
import signal
import csv
import subprocess
import time

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import PY, REPO, command, run, tiny_config


def one_line_error(res, *needles):
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (res.returncode, res.stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]


def config_file(tmp_path, demo, name="cfg", **extra):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_config(demo, tmp_path / "runs", **extra)))
    return path


def start(args, cold=False):
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            )


def wait_for(path, timeout=120):
    deadline = time.time() + timeout
    while not (path.is_file() and path.read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)
    assert path.is_file(), f"{path} never appeared"


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


# ------------------------------------------------------------------------------------------ 3. run folder lock
@pytest.mark.slow
def test_a_second_run_into_a_running_folder_stops_and_a_dead_runs_lock_does_not_block(tiny_demo, tmp_path):
    cfg = config_file(tmp_path, tiny_demo, pt={"steps": 400, "batch_size": 8}, checkpoint_every=5)
    first = start([PY, "train_pt.py", "--config", str(cfg)])  # (its pid is the program's)
    folder = tmp_path / "runs" / "tiny" / "pt"
    wait_for(folder / "train_log.jsonl")
    second = command(["train_pt.py", "--config", str(cfg), "pt.lr=0.5", "--run-name", "tiny"])
    one_line_error(second, f"run folder {folder} is in use (training: train_pt.py, process {first.pid}")
    assert yaml.safe_load((folder / "config.yaml").read_text())["pt"]["lr"] == 1e-4  # untouched
    kill(first)  # the kernel drops a dead process's lock: resuming is not blocked
    res = command(["train_pt.py", "--config", str(cfg), "--resume"])
    assert res.returncode == 0, res.stderr


def test_training_refuses_a_folder_being_evaluated(tiny_config_file, tmp_path):
    folder = tmp_path / "runs" / "tiny" / "pt"
    folder.mkdir(parents=True)
    holder = start([PY, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                    "fcntl.flock(f, fcntl.LOCK_SH); print('locked', flush=True); time.sleep(60)",
                    str(folder / ".lock")])
    assert holder.stdout.readline().strip() == "locked"
    try:
        one_line_error(command(["train_pt.py", "--config", str(tiny_config_file)]), "is in use (an evaluation)")
    finally:
        kill(holder)


# ------------------------------------------------------------------------------------------ 4. results and weights
@pytest.mark.slow
def test_evaluate_refuses_an_unfinished_run_and_files_of_two_runs(tiny_demo, tmp_path):
    cfg = config_file(tmp_path, tiny_demo, checkpoint_every=1,
                      supcon={"steps": 3, "batch_size": 8, "classifier_steps": 40, "classifier_batch_size": 8})
    assert command(["train_supcon.py", "--config", str(cfg)]).returncode == 0
    folder = tmp_path / "runs" / "tiny" / "supcon"
    results = command(["evaluate.py", "--method", "supcon", "--config", str(cfg), "--no-plots"])
    assert results.returncode == 0, results.stderr
    weights = json.loads((folder / "results.json").read_text())["weights"]
    enc = torch.load(folder / "supcon_encoder.tar", weights_only=True)
    assert weights["run_id"] == enc["run_id"] and set(weights["files"]) == {
        str(folder / "supcon_encoder.tar"), str(folder / "supcon_classifier.tar")}
    assert all(len(h) == 64 for h in weights["files"].values())
    # A second finished run elsewhere: its classifier beside this encoder is refused.
    assert command(["train_supcon.py", "--config", str(cfg), "--run-name", "other"]).returncode == 0
    other = tmp_path / "runs" / "other" / "supcon"
    mixed = command(["evaluate.py", "--method", "supcon", "--config", str(cfg), "--no-plots",
                 "--encoder", str(folder / "supcon_encoder.tar"), "--classifier", str(other / "supcon_classifier.tar")])
    one_line_error(mixed, "come from different runs")
    # A new run into the finished folder (--overwrite moves the old one aside), killed in its classifier stage:
    # evaluation refuses the folder.
    proc = start([PY, "train_supcon.py", "--config", str(cfg), "--overwrite"])
    deadline = time.time() + 120  # the new run's first classifier checkpoints (the old run's were 39 and 40)
    while time.time() < deadline and not list((folder / "checkpoints").glob("ckpt-01-0000000[1-9].tar")):
        time.sleep(0.02)
    kill(proc)
    assert not (folder / "supcon_classifier.tar").exists()  # the old run's classifier went with the old run
    aside = [p for p in folder.parent.iterdir() if p.name.startswith("supcon.old-")]
    assert len(aside) == 1 and (aside[0] / "supcon_classifier.tar").is_file() and (aside[0] / "results.json").is_file()
    res = command(["evaluate.py", "--method", "supcon", "--config", str(cfg), "--no-plots"])
    one_line_error(res, "holds an unfinished run", "--resume")


# ------------------------------------------------------------------------------------------ 5, 6. checks before writes
@pytest.mark.slow
def test_a_refused_start_changes_nothing_and_resume_refuses_other_data(tiny_demo, tmp_path):
    demo = tmp_path / "demo"
    shutil.copytree(tiny_demo, demo)
    cfg = config_file(tmp_path, demo, pt={"steps": 300, "batch_size": 8}, checkpoint_every=5, log_every=1)
    folder = tmp_path / "runs" / "tiny" / "pt"
    proc = start([PY, "train_pt.py", "--config", str(cfg)])
    while not list((folder / "checkpoints").glob("ckpt-*.tar")) and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # saves a checkpoint and stops: an unfinished run
    proc.communicate(timeout=60)
    before = {name: (folder / name).read_bytes() for name in ("splits.csv", "log.txt", "config.yaml")}
    refused = command(["train_pt.py", "--config", str(cfg), "data.labeled_fraction=0.2", "--run-name", "tiny"])
    one_line_error(refused, "holds an unfinished run")
    assert {name: (folder / name).read_bytes() for name in before} == before
    # One labeled video less: --resume would not continue the run it began.
    rows = [r for r in csv.DictReader((folder / "splits.csv").open()) if r["role"] == "labeled"]
    n = sum(int(r["frames"]) for r in rows)
    shutil.rmtree(demo / "FaceForensics++" / "train_set" / rows[0]["video"].split(":")[1])  # ff:<method>/<video>
    res = command(["train_pt.py", "--config", str(cfg), "--resume"])
    one_line_error(res, "--resume: the data differ", f"labeled: {n} -> {n - int(rows[0]['frames'])} images",
                   "--allow-data-change")
    res = command(["train_pt.py", "--config", str(cfg), "--resume", "--allow-data-change", "pt.steps=300"])
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------------------------------ 7. settings and input
NONSENSE = [
    ("mpl.T=0", "'mpl.T' must be positive"),
    ("supcon.feat_dim=0", "'supcon.feat_dim' must be positive"),
    ("supcon.temperature=0", "'supcon.temperature' must be positive"),
    ("mpl.temperature=-1", "'mpl.temperature' must be positive"),
    ("pt.weight_decay=-1", "'pt.weight_decay' must be >= 0"),
    ("aug.scale=[2,1]", "'aug.scale' must be [min, max]"),
    ("aug.scale=0.5", "'aug.scale' must be [min, max]"),
    ("aug.hflip=2", "'aug.hflip' must be a probability"),
    ("aug.color_jitter=[0.4,0.4,0.4,0.9]", "hue in [0, 0.5]"),
    ("aug.unlabeled_strong.grayscale_p=-1", "'aug.unlabeled_strong.grayscale_p' must be a probability"),
    ("data.frames_per_video=-1", "'data.frames_per_video' must be a positive integer"),
    ("data.frames_per_video=abc", "'data.frames_per_video' must be a positive integer"),
    ("seed=-1", "'seed' must be >= 0"),
    ("log_every=0", "'log_every' must be positive"),
    ("mpl_options.ema=1", "'mpl_options.ema' must be in [0, 1)"),
]


@pytest.mark.parametrize("override, message", NONSENSE)
def test_nonsense_settings_are_refused(override, message):
    from engine.config import load_config
    from utils import UserError
    with pytest.raises(UserError) as err:
        load_config("configs/demo.yaml", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nonsense_settings_stop_the_command_with_one_line(tiny_config_file):
    one_line_error(command(["train_supconmpl.py", "--config", str(tiny_config_file), "mpl.T=0"]), "'mpl.T' must be positive")


def test_bad_command_line_values_are_one_line(tiny_config_file):
    one_line_error(command(["evaluate.py", "--method", "pt", "--config", str(tiny_config_file), "--batch-size", "0"]),
                   "--batch-size must be positive")


def test_a_symbolic_link_loop_in_a_dataset_tree(tiny_config_file, tmp_path):
    root = tmp_path / "set"
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        cv2.imwrite(str(root / label / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (root / "real" / "loop").symlink_to(root / "real")
    one_line_error(command(["train_pt.py", "--config", str(tiny_config_file), f"data.labeled=[folder:{root}]",
                        "data.index_dir=null"]), "symbolic link loop")


def test_a_full_disk_is_one_line(tiny_config_file, tmp_path, monkeypatch):
    """torch.save fails with ENOSPC (as on a full disk): one line, and no temporary file left behind."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    res = command(["train_pt.py", "--config", str(tiny_config_file)])
    lines = res.stderr.strip().splitlines()  # the log lines of the steps before, then one error line
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert lines[-1].startswith("error: disk full (") and "pt.tar" in lines[-1] or "ckpt-" in lines[-1]
    assert "--resume" in lines[-1] and not list((tmp_path / "runs").rglob("*.tmp"))


# ------------------------------------------------------------------------------------------ 8. names
def test_test_set_names_must_be_unique_and_not_a_role(tiny_demo, tiny_config_file, tmp_path):
    ff = tiny_demo / "FaceForensics++"
    for name in ("A", "B"):
        (tmp_path / name / "test").mkdir(parents=True)
        (tmp_path / name / "test" / "real").symlink_to(ff / "test_set" / "Real")
        (tmp_path / name / "test" / "fake").symlink_to(ff / "test_set" / "Deepfakes")
    cfg = yaml.safe_load(tiny_config_file.read_text())
    pt = tmp_path / "pt.tar"
    from engine.release import save_release
    from models import build_baseline
    save_release(pt, build_baseline("test_resnet"), {**cfg, "input_scale": "project"}, "pt", 0)
    one_line_error(command(["evaluate.py", "--method", "pt", "--weights", str(pt), "--test", f"folder:{tmp_path}/A/test",
                        "--test", f"folder:{tmp_path}/B/test"]), "test set name 'test' is used twice")
    role = "data.test=[{name: labeled, kind: folder, root: %s}]" % (tmp_path / "A" / "test")
    one_line_error(command(["train_pt.py", "--config", str(tiny_config_file), role]), "is the name of a training role")


@pytest.mark.parametrize("name", ["off", "007", "yes"])
def test_run_names_are_folder_names_not_yaml(name):
    from engine.config import load_config
    assert load_config("configs/demo.yaml", [f"run_name={name}"])["run_name"] == name


def test_a_run_name_that_yaml_would_read_as_false_names_the_folder(tiny_config_file, tmp_path):
    res = command(["train_pt.py", "--config", str(tiny_config_file), "--run-name", "off", "pt.steps=1"])
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "runs" / "off" / "pt" / "pt.tar").is_file()


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", ".."])
def test_run_names_outside_out_dir_are_refused(tiny_config_file, name):
    one_line_error(command(["train_pt.py", "--config", str(tiny_config_file), "--run-name", name]),
                   "run_name must be a plain folder name")


# ------------------------------------------------------------------------------------------ 10, 11. data edges
def test_twenty_five_unreadable_images_in_a_row_are_skipped(tiny_config_file, tmp_path):
    root = tmp_path / "set"
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(root / label / f"ok{i}.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    for i in range(25):
        (root / "fake" / f"bad{i:02d}.png").write_bytes(b"broken")  # sorted together: 25 in a row
    res = command(["train_pt.py", "--config", str(tiny_config_file), f"data.labeled=[folder:{root}]",
               "pt.steps=6", "pt.batch_size=16", "data.test=[]", "data.balance=false"])
    assert res.returncode == 0, res.stderr
    listed = (tmp_path / "runs" / "tiny" / "pt" / "bad_images.txt").read_text().split()
    assert len(listed) == len(set(listed)) and len(listed) >= 20


def test_a_jpeg_with_bytes_after_its_end_marker_is_read_and_a_truncated_one_is_not(tmp_path):
    from datasets.images import BadImageError, read_image
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    (tmp_path / "trailer.jpg").write_bytes(buf.tobytes() + b"\0camera trailer" * 50)
    assert read_image(str(tmp_path / "trailer.jpg")).shape == (3, 16, 16)
    (tmp_path / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(BadImageError, match="truncated"):
        read_image(str(tmp_path / "cut.jpg"))


def test_a_video_holding_fewer_frames_than_its_header_claims_is_sampled_from_what_it_holds(tmp_path, capsys):
    from preprocess.video import read_frames
    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(40):
        writer.write(np.full((64, 64, 3), i * 5, np.uint8))
    writer.release()
    data = (tmp_path / "v.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])  # the header still says 40 frames
    frames = read_frames(tmp_path / "cut.avi", 8, None)
    held = int(capsys.readouterr().err.split("holds ")[1].split(";")[0])
    assert 4 <= held < 40 and len(frames) == min(8, held)
    assert [i for i, _ in frames] == sorted({int(round(x)) for x in np.linspace(0, held - 1, min(8, held))})


@pytest.mark.slow
def test_training_on_test_identities_stops(tiny_config_file):
    ff = yaml.safe_load(tiny_config_file.read_text())["data"]["test"][0]["root"]
    same = f"data.labeled=[{{kind: ff, root: {ff}, subset: test_set, methods: [Real, Deepfakes]}}]"
    one_line_error(command(["train_pt.py", "--config", str(tiny_config_file), same]),
                   "labeled/unlabeled/val/test share", "videos sharing an identity group")


@pytest.mark.slow
def test_the_wrapper_fails_when_an_evaluation_fails(tiny_demo, tmp_path):
    cfg = config_file(tmp_path, tiny_demo)
    assert command(["train_supcon.py", "--config", str(cfg)]).returncode == 0
    teacher = tmp_path / "runs" / "tiny" / "supcon"
    res = run(["bash", "train_supconmpl_model.sh", "--config", str(cfg), "--run-name", "student",
               f"mpl.teacher_encoder={teacher / 'supcon_encoder.tar'}",
               f"mpl.teacher_classifier={teacher / 'supcon_classifier.tar'}"])
    # runs/student/supcon does not exist: the teacher's evaluation fails, the student's still runs
    assert res.returncode != 0 and "checkpoint not found" in res.stderr
    assert (tmp_path / "runs" / "student" / "supconmpl" / "results.json").is_file()


def test_an_empty_test_set_is_reported(tiny_config_file, tmp_path):
    pytest.importorskip("sklearn")
    ff = yaml.safe_load(tiny_config_file.read_text())["data"]["test"][0]["root"]
    empty = f"data.test=[{{name: none, kind: ff, root: {ff}, subset: test_set, methods: [Real], videos: labeled}}]"
    from engine.release import save_release
    from models import build_baseline
    cfg = yaml.safe_load(tiny_config_file.read_text())
    save_release(tmp_path / "pt.tar", build_baseline("test_resnet"), {**cfg, "input_scale": "project"}, "pt", 0)
    res = command(["evaluate.py", "--method", "pt", "--config", str(tiny_config_file), "--weights",
               str(tmp_path / "pt.tar"), "--no-plots", empty, "data.labeled_fraction=0"])
    assert res.returncode == 0, res.stderr
    assert "warning: test set 'none' has no (readable) images" in res.stderr


def test_predict_margin_must_not_be_negative(tmp_path):
    one_line_error(command(["predict.py", str(tmp_path), "--method", "pt", "--weights", "w.tar", "--margin", "-1"]),
                   "--margin must be >= 0")

