"""Each entry point end to end on a tiny config, through the commands users run; bad input is one line."""
import json

import pytest
import yaml

from conftest import PY, command, run, tiny_config, train_and_evaluate

SCRIPTS = ["train_pt.py", "train_supcon.py", "train_supconmpl.py", "train_mpl.py", "evaluate.py", "-m preprocess.demo",
           "-m reproduce", "-m models.fetch_weights"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    res = command([*script.split(), "--help"])
    assert res.returncode == 0 and "usage:" in res.stdout and "example" in res.stdout


def check_outputs(folder, tests=("Deepfakes", "NeuralTextures")):
    results = json.loads((folder / "results.json").read_text())
    assert list(results) == ["weights", "produced_by", *tests]
    results.pop("weights"), results.pop("produced_by")
    assert results["Deepfakes"]["split"] == "known" and results["NeuralTextures"]["split"] == "unknown"
    for m in results.values():
        assert m["n"] == 12 and all(0.0 <= m[k] <= 1.0 for k in ("acc", "auc", "auc_hard", "f1", "eer", "ap"))
    lines = (folder / "predictions.csv").read_text().splitlines()
    assert lines[0] == "set,path,video,label,score" and len(lines) == 1 + 2 * 12  # each set's Real and fake frames
    assert {line.split(",")[0] for line in lines[1:]} == set(tests)
    assert (folder / "config.yaml").is_file() and (folder / "log.txt").is_file()


@pytest.mark.slow
def test_pt_script_end_to_end(tiny_config_file):
    res = run(["bash", "train_pt_model.sh", "--config", str(tiny_config_file)])
    assert res.returncode == 0, res.stderr
    assert "ACC" in res.stdout and "NeuralTextures" in res.stdout
    folder = tiny_config_file.parent / "runs" / "tiny" / "pt"
    check_outputs(folder)
    assert (folder / "pt.tar").is_file()


@pytest.mark.slow
def test_supcon_then_mpl_scripts_end_to_end(tiny_config_file):
    res = run(["bash", "train_supcon_model.sh", "--config", str(tiny_config_file)])
    assert res.returncode == 0, res.stderr
    runs = tiny_config_file.parent / "runs" / "tiny"
    check_outputs(runs / "supcon")
    # the student from that teacher, as its wrapper does, in this process (test_distributed.py and
    # test_run_safety.py run train_supconmpl_model.sh itself)
    res = train_and_evaluate("supconmpl", "--config", str(tiny_config_file), "mpl.steps=3")
    assert res.returncode == 0, res.stderr
    assert "training it first" not in res.stdout + res.stderr  # the teacher exists
    check_outputs(runs / "supconmpl")
    saved = yaml.safe_load((runs / "supconmpl" / "config.yaml").read_text())
    assert saved["mpl"]["steps"] == 3  # the resolved config, overrides included
    log = [json.loads(line) for line in (runs / "supconmpl" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["stage"] == "mpl"] == [1, 2, 3]


def test_mpl_trains_missing_teacher_first(tiny_config_file):
    # in this process: what is trained, not the wrapper (the test above runs train_supconmpl_model.sh)
    res = command(["train_supconmpl.py", "--config", str(tiny_config_file)])
    assert res.returncode == 0, res.stderr
    assert "SupCon teacher not found" in res.stdout + res.stderr
    runs = tiny_config_file.parent / "runs" / "tiny"
    assert (runs / "supcon" / "supcon_encoder.tar").is_file() and (runs / "supcon" / "supcon_classifier.tar").is_file()
    assert (runs / "supconmpl" / "mpl_supcon_encoder.tar").is_file()


@pytest.mark.slow
def test_training_is_deterministic_on_cpu(tiny_demo, tmp_path):
    import torch
    weights = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_config(tiny_demo, tmp_path / name)))
        res = run([PY, "train_pt.py", "--config", str(path)])  # fresh interpreters: own hash seeds
        assert res.returncode == 0, res.stderr
        weights.append(torch.load(tmp_path / name / "tiny" / "pt" / "pt.tar", weights_only=True)["model_state_dict"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def one_line_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_config_key(tiny_config_file):
    one_line_error(command(["train_pt.py", "--config", str(tiny_config_file), "pt.stepz=3"]),
                   "unknown config key 'pt.stepz'")
    one_line_error(command(["train_supcon.py", "--config", str(tiny_config_file), "supcon.lr=fast"]),
                   "'supcon.lr' must be a number")
    one_line_error(command(["train_pt.py", "--config", "configs/nope.yaml"]), "config file not found")


def test_unknown_dataset_and_missing_folder(tiny_config_file, tmp_path):
    one_line_error(command(["train_pt.py", "--config", str(tiny_config_file), "data.labeled=[imagenet:/x]"]),
                   "unknown dataset 'imagenet:/x'")
    one_line_error(command(["train_pt.py", "--config", str(tiny_config_file),
                        f"data.labeled=[folder:{tmp_path / 'missing'}]"]), "dataset folder not found")


def test_empty_real_folder(tiny_config_file, tmp_path):
    (tmp_path / "set" / "real").mkdir(parents=True)
    (tmp_path / "set" / "fake").mkdir()
    (tmp_path / "set" / "fake" / "a.png").write_bytes(b"")
    one_line_error(command(["train_supconmpl.py", "--config", str(tiny_config_file),
                        f"data.labeled=[folder:{tmp_path / 'set'}]"]), "no images in", "real")
    one_line_error(command(["evaluate.py", "--method", "pt", "--weights", str(tmp_path / "none.tar"),
                        "--test", f"folder:{tmp_path / 'set'}"]), "checkpoint not found")
