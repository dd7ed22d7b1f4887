"""Nothing the project did not create is ever deleted, and concurrent runs never leave a partial demo."""
import hashlib
import subprocess

import pytest
import yaml

from conftest import PY, REPO, tiny_config, command

SMALL = ["--train-ids", "4", "--test-ids", "2", "--frames", "1", "--size", "16", "--no-pretrained"]


def one_line_error(res, needle):
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr


def user_data(folder):
    (folder / "ds" / "videos").mkdir(parents=True)
    (folder / "ds" / "videos" / "clip.txt").write_text("precious")
    return folder / "ds" / "videos" / "clip.txt"


def test_demo_command_never_replaces_a_folder_it_did_not_write(tmp_path):
    precious = user_data(tmp_path / "data")
    res = command(["-m", "preprocess.demo", "--out", str(tmp_path / "data"), *SMALL])
    one_line_error(res, "is not a complete demo benchmark written by this project")
    assert precious.read_text() == "precious"


def test_training_with_data_demo_pointing_at_a_dataset_folder_refuses(tmp_path, tiny_demo):
    precious = user_data(tmp_path / "data")
    cfg = tiny_config(tiny_demo, tmp_path / "runs")
    cfg["data"]["demo"] = str(tmp_path / "data")  # the typo of the bug report: data.demo=data
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    one_line_error(command(["train_pt.py", "--config", str(path)]), "refusing to replace it")
    assert precious.read_text() == "precious"
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_a_demo_with_a_file_of_the_user_inside_is_not_replaced(tmp_path):
    out = tmp_path / "demo"
    assert command(["-m", "preprocess.demo", "--out", str(out), *SMALL]).returncode == 0
    (out / "notes.txt").write_text("mine")
    one_line_error(command(["-m", "preprocess.demo", "--out", str(out), *SMALL, "--size", "24"]),
                   "plus other files (e.g. notes.txt)")
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    # A demo of ours and nothing else is replaced by the new one.
    assert command(["-m", "preprocess.demo", "--out", str(out), *SMALL, "--size", "24"]).returncode == 0
    assert '"size": 24' in (out / "DEMO.json").read_text()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name or ".old-" in p.name]


@pytest.mark.slow
def test_two_first_runs_generating_the_demo_at_once_get_the_whole_demo(tmp_path):
    """Two processes that both find the demo missing: one writes it, the other waits and uses it."""
    demo = tmp_path / "demo"
    ff = str(demo / "FaceForensics++")
    cfg = {"data": {"demo": str(demo), "index_dir": None,
                    "labeled": [{"kind": "ff", "root": ff, "subset": "train_set", "videos": "labeled",
                                 "methods": ["Real", "Deepfakes"]}],
                    "test": [{"name": "Deepfakes", "kind": "ff", "root": ff, "subset": "test_set",
                              "methods": ["Real", "Deepfakes"]}]}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = [PY, "-m", "datasets", "describe", "--protocol", str(path), "--json"]
    procs = [subprocess.Popen(args + [str(tmp_path / f"{i}.json")], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    counts = [(tmp_path / f"{i}.json").read_text() for i in range(2)]
    assert counts[0] == counts[1]
    # 100 train ids (half labeled) x (Real + Deepfakes) x 8 frames: the whole demo, not a truncated one.
    assert '"images": 800' in counts[0]
    assert sum(1 for p in demo.rglob("*.png")) == 4960
    # `describe` trains nothing: the stand-in for ImageNet weights waits for a run that starts from it
    assert not (demo / "pretrained-test_resnet.pth").exists()


def test_the_stand_in_weights_are_added_when_a_run_first_needs_them_from_the_same_inputs(tmp_path, monkeypatch):
    """A demo generated without its stand-in weights gets them later from the same inputs (so the same file) as
    a demo generated with them; its images are left as they were."""
    import preprocess.demo_pretrain
    from preprocess.demo import PRETRAINED, demo_params, generate

    def pretrain(out, photos, capture, size, seed):  # records what the weights would be trained from
        digest = hashlib.sha256(b"".join(p.tobytes() for p in photos)).hexdigest()
        out.write_text(f"{digest} size={size} seed={seed} {sorted(capture)}")
    monkeypatch.setattr(preprocess.demo_pretrain, "pretrain", pretrain)
    kw = dict(seed=3, size=16, train_ids=2, test_ids=2, frames=1, quiet=True)
    at_once = generate(tmp_path / "a", pretrained=True, **kw)
    later = generate(tmp_path / "b", pretrained=False, **kw)
    assert not (later / PRETRAINED).exists() and demo_params(later)["pretrained"] is False
    images = {p: p.read_bytes() for p in later.rglob("*.png")}
    generate(later, replace=False, pretrained=True, **kw)
    assert (later / PRETRAINED).read_text() == (at_once / PRETRAINED).read_text()
    assert demo_params(later)["pretrained"] is True
    assert {p: p.read_bytes() for p in later.rglob("*.png")} == images
    assert not list(tmp_path.glob(".b.partial-*"))  # no partial folder left beside it
    generate(later, replace=False, pretrained=False, **kw)  # a run that needs no weights keeps them
    assert (later / PRETRAINED).exists() and demo_params(later)["pretrained"] is True
