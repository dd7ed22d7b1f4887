"""The method's premise: unlabeled images that carry no labels at all (issue 31, item 1). A folder of images
(`unlabeled:DIR`), a list file or a DeepfakeBench JSON serve the unlabeled role of SupCon-MPL and vanilla MPL;
the diagnostics that need true labels are left out; they cannot be labeled or test sets."""
import json
import shutil

import pytest
import yaml

import train_mpl
import train_supconmpl
from conftest import cli, tiny_config
from datasets.__main__ import main as datasets_main


def unlabeled_folder(tiny_demo, root):
    """The demo's unlabeled-share videos copied under names of no dataset (clip0, clip1, ...): no labels."""
    ff = tiny_demo / "FaceForensics++" / "train_set"
    videos = sorted(p for method in ("Real", "NeuralTextures") for p in (ff / method).iterdir())[:6]
    for k, video in enumerate(videos):
        shutil.copytree(video, root / f"clip{k}")
    return root


def config(tiny_demo, tmp_path, unlabeled):
    cfg = tiny_config(tiny_demo, tmp_path / "runs")
    cfg["data"]["unlabeled"] = [unlabeled]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("script, folder", [(train_supconmpl, "supconmpl"), (train_mpl, "mpl")])
def test_mpl_methods_train_from_a_folder_of_images_without_labels(tiny_demo, tmp_path, script, folder):
    root = unlabeled_folder(tiny_demo, tmp_path / "new_generator")
    res = cli(script.main, "--config", config(tiny_demo, tmp_path, f"unlabeled:{root}"))
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "tiny" / folder
    assert "have no true label: the pseudo-label accuracy (pseudo_acc) is not logged" in (run / "log.txt").read_text()
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    mpl_rows = [r for r in rows if r["stage"] == "mpl"]
    assert mpl_rows and all("pseudo_acc" not in r and "pseudo_fake" in r for r in mpl_rows)
    splits = (run / "splits.csv").read_text()
    assert "unlabeled:new_generator/clip0" in splits and ",-1," in splits


def test_a_list_file_and_describe(tiny_demo, tmp_path):
    root = unlabeled_folder(tiny_demo, tmp_path / "imgs")
    images = sorted(root.rglob("*.png"))
    (tmp_path / "list.txt").write_text("# my crops\n" + "\n".join(str(p.relative_to(tmp_path)) for p in images) + "\n")
    path = config(tiny_demo, tmp_path, {"kind": "unlabeled", "root": str(tmp_path / "list.txt")})
    res = cli(datasets_main, "describe", "--protocol", path, "--json", tmp_path / "d.json")
    assert res.returncode == 0, res.stdout + res.stderr
    unl = json.loads((tmp_path / "d.json").read_text())["sets"]["unlabeled"]
    assert unl["images"] == len(images) and unl["unknown"] == len(images) and unl["real"] == unl["fake"] == 0
    assert unl["videos"] == 6 and "no label" in res.stdout


def test_unlabeled_images_cannot_be_labeled_or_tested(tiny_demo, tmp_path):
    root = unlabeled_folder(tiny_demo, tmp_path / "imgs")
    cfg = tiny_config(tiny_demo, tmp_path / "runs")
    cfg["data"]["test"] = [f"unlabeled:{root}"]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = cli(train_supconmpl.main, "--config", path)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "is an unlabeled source: it can only be data.unlabeled" in lines[0]


def test_unlabeled_copies_of_test_images_are_caught(tiny_demo, tmp_path):
    """Symbolic links to the test set's frames in an unlabeled folder are the same images: training stops."""
    root = tmp_path / "leak"
    root.mkdir()
    for k, frame in enumerate(sorted((tiny_demo / "FaceForensics++" / "test_set" / "Real").rglob("*.png"))):
        (root / f"{k}.png").symlink_to(frame)
    res = cli(train_supconmpl.main, "--config", config(tiny_demo, tmp_path, f"unlabeled:{root}"))
    assert res.returncode == 2 and "labeled/unlabeled/val/test share" in res.stderr and "images" in res.stderr


def test_the_frames_of_a_deepfakebench_json_without_their_labels(tmp_path):
    from datasets.sources import build_set
    from engine.config import DEFAULTS
    from test_trust import dfdc_bench_tree
    rgb, path = dfdc_bench_tree(tmp_path)
    samples = build_set({"kind": "unlabeled", "root": str(rgb), "json": str(path)},
                        {**DEFAULTS["data"], "index_dir": None}, 0, "unlabeled")
    assert len(samples) == 8 and {s.label for s in samples} == {-1}  # every listed frame, each split
    # each video its own identity group (the JSON's split decided roles by video)
    assert {s.video for s in samples} == {f"unlabeled-byvideo:{v}" for v in ("aaaa", "bbbb", "cccc", "dddd", "eeee",
                                                                           "ffff")}
    train = build_set({"kind": "unlabeled", "root": str(rgb), "json": str(path), "splits": ["train"]},
                      {**DEFAULTS["data"], "index_dir": None}, 0, "unlabeled")
    assert 0 < len(train) < len(samples)
