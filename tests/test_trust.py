"""Numbers that come from what they say (issue 30, items 1-6) and runs that are never overwritten (issue 31,
item 2), through the commands users run, called in-process: NaN scores never score, overlap is checked on
images and videos whatever named them, results of other weights never land in a run folder, stored
thresholds are checked, a finished run is never replaced."""
import json
import math

import cv2
import numpy as np
import pytest
import torch
import yaml

import evaluate
import train_pt
from engine.config import DEFAULTS
from conftest import cli, tiny_config
from datasets.protocols import protocol_sets, training_sets
from datasets.splits import hold_out
from engine.release import save_release
from evaluation.metrics import binary_metrics
from models import build_baseline
from utils import UserError


def one_line_error(res, *needles):
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (res.returncode, res.stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]


def weights_file(path, scale=None, **extra):
    torch.manual_seed(0)
    model = build_baseline("test_resnet")
    if scale is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
    save_release(path, model, {**DEFAULTS, "backbone": "test_resnet", "img_size": 32}, "pt", 0, **extra)
    return path


def files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ 1. NaN scores
def test_non_finite_scores_are_no_metric():
    with pytest.raises(ValueError, match="4 of 8 scores are not finite"):
        binary_metrics([0, 0, 0, 0, 1, 1, 1, 1], [.9, .8, .7, .6, math.nan, math.nan, math.nan, math.nan])


def test_weights_holding_nan_are_refused_before_scoring(tiny_config_file, tmp_path):
    path = weights_file(tmp_path / "nan.tar", scale=math.nan)
    res = cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--weights", path, "--no-plots")
    one_line_error(res, "hold NaN or inf values", str(path))
    assert not list(tmp_path.rglob("results.json"))


def test_scores_that_overflow_to_nan_stop_evaluation(tiny_config_file, tmp_path):
    path = weights_file(tmp_path / "huge.tar", scale=1e30)  # finite weights, infinite activations
    res = cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--weights", path, "--no-plots")
    one_line_error(res, "a non-finite score (NaN or inf)", "18 of 18 test images")  # distinct images (both sets hold the Real ones)
    assert not list(tmp_path.rglob("results.json"))


# ------------------------------------------------------------------------------------------ 2-3. overlap
def celebdf_tree(root):
    rng = np.random.default_rng(0)
    for folder, names in {"Celeb-real": ["id0_0000", "id1_0000"], "Celeb-synthesis": ["id0_id1_0000", "id1_id0_0000"],
                          "YouTube-real": ["00000", "00001"]}.items():
        for name in names:
            (root / folder / name).mkdir(parents=True)
            cv2.imwrite(str(root / folder / name / "000.png"), rng.integers(0, 255, (8, 8, 3), np.uint8))
    (root / "List_of_testing_videos.txt").write_text("1 YouTube-real/00001.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n")
    return root


@pytest.mark.parametrize("labeled_list, test_list", [("off", "auto"), ("auto", "off")])
def test_celebdf_test_videos_in_training_are_found_whatever_the_test_list_setting(tmp_path, labeled_list, test_list):
    root = celebdf_tree(tmp_path / "celebdf")
    cfg = tiny_config(root, tmp_path / "runs")
    cfg["data"] = {**cfg["data"], "index_dir": None,
                   "labeled": [{"kind": "celebdf", "root": str(root), "test_list": labeled_list}],
                   "unlabeled": [],
                   "test": [{"name": "CelebDF", "kind": "celebdf", "root": str(root), "test_list": test_list}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = cli(train_pt.main, "--config", path)
    one_line_error(res, "labeled/unlabeled/val/test share", "images", "videos (e.g. celebdf:")
    assert not (tmp_path / "runs").exists()
    from datasets.__main__ import main as datasets_main
    res = cli(datasets_main, "describe", "--protocol", path)
    assert res.returncode == 1 and "IN MORE THAN ONE ROLE" in res.stdout and "overlap" in res.stdout


def dfdc_bench_tree(tmp_path):
    """A DeepfakeBench JSON of a dataset that is neither FF++ nor Celeb-DF (DFDC): no compression level, one video
    listed under both train and test."""
    rgb, rng = tmp_path / "rgb", np.random.default_rng(1)
    index = {}
    for label, names in {"DFDC_real": ["aaaa", "bbbb", "cccc"], "DFDC_fake": ["dddd", "eeee", "ffff"]}.items():
        index[label] = {}
        for split, chosen in {"train": names[:2], "test": names[1:]}.items():  # names[1] in both
            index[label][split] = {}
            for name in chosen:
                rel = f"DFDC/{label}/{name}/000.png"
                (rgb / rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(rgb / rel), rng.integers(0, 255, (8, 8, 3), np.uint8))
                index[label][split][name] = {"label": label, "frames": [rel]}
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "DFDC.json").write_text(json.dumps({"DFDC": index}))
    return rgb, tmp_path / "json" / "DFDC.json"


def test_a_deepfakebench_video_listed_under_train_and_test_stops_training(tmp_path):
    rgb, path = dfdc_bench_tree(tmp_path)
    src = {"kind": "deepfakebench", "root": str(rgb), "json": str(path)}
    cfg = tiny_config(rgb, tmp_path / "runs")
    cfg["data"] = {**cfg["data"], "index_dir": None, "labeled": [src], "unlabeled": [],
                   "test": [{"name": "DFDC", **src}]}
    file = tmp_path / "cfg.yaml"
    file.write_text(yaml.safe_dump(cfg))
    one_line_error(cli(train_pt.main, "--config", file), "share 2 images", "2 videos (e.g. deepfakebench:DFDC_fake/eeee)")
    assert not (tmp_path / "runs").exists()


def dfdc_tree(tmp_path):
    """DFDC crops with their parts' metadata: part 0 holds fakes of part 1's originals."""
    crops, meta, rng = tmp_path / "crops", tmp_path / "videos", np.random.default_rng(2)
    parts = {0: {"fake0.mp4": {"label": "FAKE", "original": "orig0.mp4"},
                 "fake1.mp4": {"label": "FAKE", "original": "orig1.mp4"}, "real9.mp4": {"label": "REAL"}},
             1: {"orig0.mp4": {"label": "REAL"}, "orig1.mp4": {"label": "REAL"}, "fake2.mp4": {"label": "FAKE",
                                                                                            "original": "real9.mp4"}}}
    for part, entries in parts.items():
        (meta / f"dfdc_train_part_{part}").mkdir(parents=True)
        (meta / f"dfdc_train_part_{part}" / "metadata.json").write_text(json.dumps(entries))
        for name in entries:
            (crops / name[:-4]).mkdir(parents=True)
            for k in range(2):
                cv2.imwrite(str(crops / name[:-4] / f"{k}.png"), rng.integers(0, 255, (8, 8, 3), np.uint8))
    return crops, meta


def test_dfdc_fakes_and_their_originals_count_as_one_identity_in_the_overlap_check(tmp_path):
    crops, meta = dfdc_tree(tmp_path)
    src = {"kind": "dfdc", "root": str(crops), "metadata": str(meta)}
    cfg = tiny_config(crops, tmp_path / "runs")
    cfg["data"] = {**DEFAULTS["data"], "index_dir": None, "labeled": [{**src, "parts": [0]}], "unlabeled": [],
                   "test": [{"name": "DFDC", **src, "parts": [1]}]}
    cfg = {**DEFAULTS, **cfg, "val": DEFAULTS["val"]}
    with pytest.raises(UserError, match=r"share 6 videos sharing an identity group \(e.g. dfdc:fake0\)"):
        training_sets(cfg)


def test_the_validation_hold_out_keeps_a_dfdc_fake_with_its_original(tmp_path):
    crops, meta = dfdc_tree(tmp_path)
    src = {"kind": "dfdc", "root": str(crops), "metadata": str(meta)}
    cfg = {**DEFAULTS, "data": {**DEFAULTS["data"], "index_dir": None, "labeled": [src]},
           "val": {**DEFAULTS["val"], "enabled": True, "fraction": 0.5}}
    for seed in range(6):
        sets = protocol_sets({**cfg, "seed": seed})
        kept, held = ({s.video for s in sets[role][2]} for role in ("labeled", "val"))
        for fake, original in (("fake0", "orig0"), ("fake1", "orig1"), ("fake2", "real9")):
            assert (f"dfdc:{fake}" in held) == (f"dfdc:{original}" in held)
    samples = sets["labeled"][2] + sets["val"][2]
    assert hold_out(samples, 0.5, 0)  # (without links the pairs could be cut: the links are what keeps them)


# ------------------------------------------------------------------------------------------ 5. foreign weights
def test_results_of_other_weights_never_land_in_a_run_folder(tiny_config_file, tmp_path):
    assert cli(train_pt.main, "--config", tiny_config_file).returncode == 0
    folder = tmp_path / "runs" / "tiny" / "pt"
    assert cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--no-plots").returncode == 0
    before = files_of(folder)
    other = weights_file(tmp_path / "authors.tar")
    res = cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--weights", other, "--no-plots")
    assert res.returncode == 0, res.stderr
    assert files_of(folder) == before  # the run's results are still its own
    (elsewhere,) = (tmp_path / "runs" / "evaluations").glob("pt-*/results.json")
    assert list(json.loads(elsewhere.read_text())["weights"]["files"]) == [str(other)]
    for flag, name in (("--json", "results.json"), ("--predictions", "predictions.csv")):
        res = cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--weights", other, "--no-plots",
                  flag, folder / name)
        one_line_error(res, f"is in the run folder {folder}", "its own weights")
    assert files_of(folder) == before


# ------------------------------------------------------------------------------------------ 6. stored thresholds
@pytest.mark.parametrize("calibration, problem", [
    ({"threshold": math.nan, "rule": "eer", "temperature": None}, "has threshold nan"),
    ({"threshold": 7.0, "rule": "eer", "temperature": None}, "has threshold 7.0"),
    ({"threshold": 0.4, "rule": "median", "temperature": None}, "has rule 'median'"),
    ({"threshold": 0.4, "rule": "eer", "temperature": -1.0}, "has temperature -1.0"),
    ("0.5", "is a str"),
])
def test_a_stored_threshold_that_is_not_a_probability_is_refused(tiny_config_file, tmp_path, calibration, problem):
    path = weights_file(tmp_path / "cal.tar", calibration=calibration)
    res = cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--weights", path, "--no-plots")
    one_line_error(res, str(path), f"its validation calibration {problem}")


def test_predict_refuses_a_damaged_threshold_unless_one_is_given(tmp_path):
    pytest.importorskip("facenet_pytorch")
    import predict
    path = weights_file(tmp_path / "cal.tar", calibration={"threshold": math.nan, "rule": "eer", "temperature": None})
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    one_line_error(cli(predict.main, image, "--method", "pt", "--weights", path), "has threshold nan")
    res = cli(predict.main, image, "--method", "pt", "--weights", path, "--threshold", "0.5", "--json",
              tmp_path / "out.json")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "out.json").read_text())[str(image)]["score"] is None  # no face in a black square


# ------------------------------------------------------------------------------------------ 31.2 never overwrite
def test_the_same_training_command_twice_leaves_the_finished_run_byte_identical(tiny_config_file, tmp_path):
    assert cli(train_pt.main, "--config", tiny_config_file).returncode == 0
    folder = tmp_path / "runs" / "tiny" / "pt"
    before = files_of(folder)
    res = cli(train_pt.main, "--config", tiny_config_file)
    one_line_error(res, f"{folder} holds a finished run", "--run-name", "--overwrite")
    assert files_of(folder) == before
    res = cli(train_pt.main, "--config", tiny_config_file, "--resume")
    assert res.returncode == 0 and "nothing to train" in res.stderr and files_of(folder) == before
    # A start that fails (here: its data) says nothing about replacing, and changes nothing.
    res = cli(train_pt.main, "--config", tiny_config_file, "--run-name", "tiny", "data.labeled=[folder:/nowhere]")
    assert res.returncode == 2 and "replace" not in res.stderr and files_of(folder) == before
    # --overwrite moves the run aside, whole; the new run is trained in its place.
    res = cli(train_pt.main, "--config", tiny_config_file, "--overwrite", "--run-name", "tiny", "pt.steps=3")
    assert res.returncode == 0, res.stderr
    (aside,) = folder.parent.glob("pt.old-*")
    assert files_of(aside) == before and f"is now in {aside}" in res.stderr
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_leftovers_of_a_start_that_never_reached_a_checkpoint_are_not_a_run(tiny_config_file, tmp_path):
    folder = tmp_path / "runs" / "tiny" / "pt"
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text("[00:00:00] the old log line\n")
    (folder / "train_log.jsonl").write_text('{"stage": "pt", "step": 1}\n')
    (folder / "pt.tar.12345.tmp").write_bytes(b"x" * 1000)  # what a killed save leaves
    res = cli(train_pt.main, "--config", tiny_config_file)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and not list(folder.rglob("*.tmp"))
    assert "the old log line" not in (folder / "log.txt").read_text()


def test_report_reads_only_results_of_the_weights_they_name(tiny_config_file, tmp_path):
    from evaluation import report
    assert cli(train_pt.main, "--config", tiny_config_file).returncode == 0
    assert cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--no-plots").returncode == 0
    folder = tmp_path / "runs" / "tiny" / "pt"
    assert cli(report.main, folder).returncode == 0
    results = json.loads((folder / "results.json").read_text())
    results["weights"]["files"] = {k: "0" * 64 for k in results["weights"]["files"]}
    (folder / "results.json").write_text(json.dumps(results))
    one_line_error(cli(report.main, folder), "scored other weights than the release files now in")
    (folder / "results.json").write_text('{"weights": {"fil')  # truncated
    one_line_error(cli(report.main, folder), "is damaged")


# ------------------------------------------------------------------------------------------ 7-15: one line, exit 2
def test_a_zero_byte_checkpoint_is_one_line(tiny_config_file, tmp_path):
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    one_line_error(cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--weights", empty, "--no-plots"),
                   f"cannot read checkpoint {empty}: the file is empty")
    folder = tmp_path / "runs" / "tiny" / "pt" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "ckpt-00-00000001.tar").write_bytes(b"")
    one_line_error(cli(train_pt.main, "--config", tiny_config_file, "--resume"), "the file is empty")


def test_a_checkpoint_write_that_fails_on_a_full_disk_is_one_line(tiny_config_file, tmp_path, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    def failing_save(*args, **kwargs):  # what torch's writer raises when the disk is full
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")
    monkeypatch.setattr(torch, "save", failing_save)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda path: usage(10 << 30, 10 << 30, 1 << 20))
    res = cli(train_pt.main, "--config", tiny_config_file)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and lines[-1].startswith("error: disk full (") and "--resume" in lines[-1], res.stderr
    assert not list((tmp_path / "runs").rglob("*.tmp"))


def test_a_read_only_or_forbidden_folder_is_one_line(tiny_config_file, monkeypatch):
    import errno
    import engine.run

    for code, words in ((errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")):
        def refuse(path, text, code=code):
            raise OSError(code, "refused", str(path))
        monkeypatch.setattr(engine.run, "atomic_write_text", refuse)
        one_line_error(cli(train_pt.main, "--config", tiny_config_file, "--run-name", f"ro{code}"), words)


def test_packing_on_a_full_disk_stops_with_one_line_and_a_rerun_completes(tmp_path, monkeypatch):
    import errno
    import os as os_module
    from preprocess import pack
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(5):
        cv2.imwrite(str(src / f"{i}.png"), np.full((20, 20, 3), 10 * i, np.uint8))
    cfg = tiny_config(src, tmp_path / "runs")
    cfg["data"] = {**cfg["data"], "labeled": [{"kind": "flat", "root": str(src), "label": "fake"}], "unlabeled": [],
                   "test": [], "index_dir": None}
    file = tmp_path / "cfg.yaml"
    file.write_text(yaml.safe_dump(cfg))

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os_module, "posix_fallocate", no_space)
    res = cli(pack.main, "--config", file, "--out", tmp_path / "pack")
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error: disk full ("), res.stderr
    monkeypatch.undo()
    assert cli(pack.main, "--config", file, "--out", tmp_path / "pack").returncode == 0
    assert json.loads((tmp_path / "pack" / "meta.json").read_text())["count"] == 5


def test_malformed_indexes_and_configs_are_one_line_and_quick(tmp_path):
    import time
    from utils import parse_json
    rgb, path = dfdc_bench_tree(tmp_path)
    index = json.loads(path.read_text())
    index["DFDC"]["DFDC_fake"]["train"]["dddd"]["label"] = 1
    path.write_text(json.dumps(index))
    from datasets.sources import build_set
    with pytest.raises(UserError, match="has label 1: labels are names"):
        build_set({"kind": "deepfakebench", "root": str(rgb), "json": str(path)}, {**DEFAULTS["data"], "index_dir": None},
                  0, "labeled")
    with pytest.raises(UserError, match="nested too deeply"):
        parse_json("[" * 5000 + "]" * 5000, "deep.json")
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]'] + [
        f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")  # 600 bytes that expand to 9^9 values
    start = time.time()
    res = cli(train_pt.main, "--config", bomb)
    one_line_error(res, "aliases expand to more than")
    assert time.time() - start < 10 and len(res.stderr) < 400
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    one_line_error(cli(train_pt.main, "--config", deep), "nested too deeply")


@pytest.mark.parametrize("change, problem", [
    ({"img_size": [64, 64]}, "its img_size must be a whole number of pixels"),
    ({"img_size": 100000}, "its img_size must be a whole number of pixels in [8, 2048], got 100000"),
    ({"backbone": 5}, "its backbone must be a model name, got 5"),
    ({"input_scale": "odd"}, "its input_scale must be project, seed or unit, got 'odd'"),
    ({"model_state_dict": [1, 2, 3]}, "its model_state_dict is not a mapping of names to tensors"),
])
def test_checkpoint_metadata_of_other_projects_is_refused(tiny_config_file, tmp_path, change, problem):
    path = weights_file(tmp_path / "w.tar")
    state = torch.load(path, weights_only=True)
    torch.save({**state, **change}, path)
    res = cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--weights", path, "--no-plots")
    one_line_error(res, str(path), problem)


def test_a_validation_set_of_unreadable_images_stops_before_any_checkpoint(tiny_demo, tmp_path):
    import shutil
    demo = tmp_path / "demo"
    shutil.copytree(tiny_demo, demo)
    cfg = tiny_config(demo, tmp_path / "runs", val={"enabled": True, "fraction": 0.5, "every": 1})
    cfg["data"]["unlabeled"] = []
    file = tmp_path / "cfg.yaml"
    file.write_text(yaml.safe_dump(cfg))
    from engine.config import load_config
    held = protocol_sets(load_config(str(file)))["val"][2]
    for sample in held:
        with open(sample.path, "wb") as f:
            f.write(b"not an image")  # every validation image; the training images are fine
    res = cli(train_pt.main, "--config", file)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and lines[-1].startswith("error: ") and "validation images can be read" in lines[-1], \
        res.stderr
    assert not list((tmp_path / "runs").rglob("ckpt-*.tar"))


def test_deepfakebench_frames_outside_the_root_are_refused(tmp_path):
    rgb, path = dfdc_bench_tree(tmp_path)
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), np.zeros((8, 8, 3), np.uint8))
    index = json.loads(path.read_text())
    index["DFDC"]["DFDC_real"]["train"]["aaaa"]["frames"].append("../secret.png")
    path.write_text(json.dumps(index))
    from datasets.sources import build_set
    with pytest.raises(UserError, match=r"lists the frame '\.\./secret\.png', which is outside the dataset root"):
        build_set({"kind": "deepfakebench", "root": str(rgb), "json": str(path)}, {**DEFAULTS["data"], "index_dir": None},
                  0, "labeled")


def test_two_reproduce_commands_into_one_out_folder(tmp_path):
    from engine.run import RunLock
    from reproduce.__main__ import main as reproduce_main
    out = tmp_path / "out"
    held = RunLock(out).acquire(True, "python -m reproduce")
    try:
        one_line_error(cli(reproduce_main, "--table", "2", "--demo", "--seeds", "1", "--dry-run", "--out", out),
                       f"folder {out} is in use (python -m reproduce", "choose another --out")
    finally:
        held.release()


def test_evaluate_names_the_runs_of_the_same_config_when_its_own_is_missing(tiny_config_file, tmp_path):
    """31.3: trained with overrides, evaluated without them: the error names the run that exists and how."""
    assert cli(train_pt.main, "--config", tiny_config_file, "--run-name", "tiny-x", "pt.lr=0.001").returncode == 0
    res = cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--no-plots")
    one_line_error(res, f"no run in {tmp_path / 'runs' / 'tiny' / 'pt'}",
                   f"{tmp_path / 'runs' / 'tiny-x' / 'pt'} (pt.lr=0.001)", "evaluate with the arguments it was trained with")
    res = cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--run-name", "tiny-x", "pt.lr=0.001",
              "--no-plots")
    assert res.returncode == 0, res.stderr
