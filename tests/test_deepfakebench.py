"""DeepfakeBench's preprocessed frames through its dataset JSON (`kind: deepfakebench`): the published layout
(dataset -> label -> split -> compression -> video -> frames), roles by its splits, re-rooted absolute paths,
the Table 1 protocol configs on it, and one-line errors for malformed files."""
import json
import re

import cv2
import numpy as np
import pytest

from conftest import command, train_and_evaluate
from datasets.overlap import find_overlap
from datasets.protocols import protocol_config, protocol_sets
from datasets.sources import build_set
from utils import UserError

FOLDER = {"FF-real": "original_sequences/youtube", "FF-DF": "manipulated_sequences/Deepfakes",
          "FF-F2F": "manipulated_sequences/Face2Face", "FF-FS": "manipulated_sequences/FaceSwap",
          "FF-NT": "manipulated_sequences/NeuralTextures"}
SPLIT_IDS = {"train": ["000", "001", "002", "003", "004", "005", "006", "007"], "val": ["008", "009"],
             "test": ["010", "011", "012", "013"]}


def make_tree(tmp_path, frames=2, foreign_prefix=True):
    """rgb_dir with FaceForensics++ c23 frames and dataset_json/FaceForensics++.json, as DeepfakeBench ships
    them; the fakes' paths are absolute paths of another machine (re-rooted on reading)."""
    rgb, index = tmp_path / "rgb", {}
    for label, folder in FOLDER.items():
        index[label] = {}
        for split, ids in SPLIT_IDS.items():
            videos = ids if label == "FF-real" else [f"{a}_{b}" for a, b in zip(ids[::2], ids[1::2])]
            entry = {}
            for video in videos:
                rels = [f"FaceForensics++/{folder}/c23/frames/{video}/{k:03d}.png" for k in range(frames)]
                for rel in rels:
                    (rgb / rel).parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(rgb / rel), np.random.default_rng(len(rel)).integers(0, 255, (24, 24, 3), np.uint8))
                listed = [f"/mnt/lab/deepfake/rgb/{r}" for r in rels] if foreign_prefix and label != "FF-real" else rels
                entry[video] = {"label": label, "frames": listed}
            index[label][split] = {"c23": entry, "c40": {}}
    (tmp_path / "dataset_json").mkdir()
    path = tmp_path / "dataset_json" / "FaceForensics++.json"
    path.write_text(json.dumps({"FaceForensics++": index}))
    return rgb, path


DATA = {"index_dir": None, "labeled_fraction": 0.5, "paths": {}}


def test_roles_follow_the_json_splits_and_labels_map_to_families(tmp_path):
    rgb, path = make_tree(tmp_path)
    spec = {"kind": "deepfakebench", "root": str(rgb), "json": str(path), "compression": "c23",
            "labels": ["FF-real", "FF-DF", "FF-NT"]}
    test = build_set(spec, DATA, 0, "test")
    train = build_set(spec, DATA, 0, "labeled")
    assert {s.video.rsplit("/", 1)[-1] for s in test} == {"010", "011", "012", "013", "010_011", "012_013"}
    assert {s.video.rsplit("/", 1)[-1].split("_")[0] for s in train} <= set(SPLIT_IDS["train"])
    assert {(s.domain, s.label) for s in test} == {("Real", 0), ("Deepfakes", 1), ("NeuralTextures", 1)}
    assert all(s.path.startswith(str(rgb)) for s in test)  # foreign absolute paths re-rooted
    assert len(test) == (4 + 2 + 2) * 2 and {s.source for s in test} == {"deepfakebench/c23"}


def test_the_table1_protocol_on_deepfakebench_frames_counts_and_has_no_overlap(tmp_path):
    rgb, path = make_tree(tmp_path)
    cfg = protocol_config("dfb_ff_wo_nt", [f"data.paths.dfb_rgb={rgb}", f"data.paths.dfb_json={path.parent}",
                                           "data.index_dir=null"])
    sets = protocol_sets(cfg)
    counts = {name: len(samples) for name, (_, _, samples) in sets.items()}
    # train: 8 real + 4 pairs x (DF, F2F, FS) labeled-or-unlabeled, NT unlabeled only; 2 frames each
    assert counts["labeled"] + counts["unlabeled"] - sum(s.domain == "NeuralTextures" for s in sets["unlabeled"][2]) \
        == (8 + 3 * 4) * 2
    assert counts["NeuralTextures"] == (4 + 2) * 2 and counts["Known"] == (4 + 3 * 2) * 2
    assert len(find_overlap(sets)) == 0
    res = command(["-m", "datasets", "describe", "--protocol", "dfb_ff_wo_nt", f"data.paths.dfb_rgb={rgb}",
               f"data.paths.dfb_json={path.parent}", f"data.index_dir={tmp_path / 'index'}"])
    assert res.returncode == 0, res.stderr
    assert "overlap between labeled, unlabeled, val and test: none" in res.stdout and "Known" in res.stdout


@pytest.mark.slow
def test_training_and_evaluation_run_on_deepfakebench_frames(tmp_path):
    rgb, path = make_tree(tmp_path)
    common = [f"data.paths.dfb_rgb={rgb}", f"data.paths.dfb_json={path.parent}", f"data.index_dir={tmp_path / 'ix'}",
              "backbone=test_resnet", "pretrained=none", "img_size=32", "workers=0", "pt.steps=2", "pt.batch_size=8",
              "log_every=1", "--out", str(tmp_path / "runs")]
    res = train_and_evaluate("pt", "--config", "configs/dfb_ff_wo_nt.yaml", *common)
    assert res.returncode == 0, res.stderr
    (results,) = (tmp_path / "runs").glob("dfb_ff_wo_nt-*/pt/results.json")
    data = json.loads(results.read_text())
    assert data["NeuralTextures"]["n"] == 12 and data["Known"]["n"] == 20


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: "not json", "is not valid JSON"),
    (lambda d: {"FaceForensics++": {"FF-real": {"train": {"c40": {}}}}}, "has no compression 'c23'"),
    (lambda d: {"FaceForensics++": {"FF-real": ["x"]}}, "FF-real must map train/val/test"),
    (lambda d: {"FaceForensics++": {"FF-real": {"train": {"c23": {"000": {"label": "FF-real"}}}}}},
     "FF-real/train/000 needs a 'frames' list"),
    (lambda d: {"Other": {}}, "dataset 'FaceForensics++' not in it"),
])
def test_a_malformed_dataset_json_is_one_line_naming_the_file(tmp_path, mutate, problem):
    rgb, path = make_tree(tmp_path, frames=1)
    bad = mutate(json.loads(path.read_text()))
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    spec = {"kind": "deepfakebench", "root": str(rgb), "json": str(path), "compression": "c23",
            "dataset": "FaceForensics++"}
    with pytest.raises(UserError, match=re.escape(problem)) as err:
        build_set(spec, DATA, 0, "test")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_frames_missing_under_root_say_where_to_point_it(tmp_path):
    rgb, path = make_tree(tmp_path, frames=1)
    spec = {"kind": "deepfakebench", "root": str(tmp_path / "elsewhere"), "json": str(path), "compression": "c23"}
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(UserError, match="set root to DeepfakeBench's rgb_dir"):
        build_set(spec, DATA, 0, "test")
