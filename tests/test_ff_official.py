"""FaceForensics++ as downloaded (preprocess/ff_official.py): the official layout and split lists through
extract_faces --ff-root, the `official_split` of the ff source, and one-line errors for malformed lists."""
import json

import cv2
import numpy as np
import pytest

from conftest import command
from datasets.sources import build_set
from preprocess.ff_official import read_split
from utils import UserError

LISTS = {"train": [["000", "001"], ["002", "003"]], "val": [["004", "005"]], "test": [["006", "007"]]}


def write_lists(folder, lists=LISTS):
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in lists.items():
        (folder / f"{split}.json").write_text(json.dumps(pairs))
    return folder


@pytest.mark.slow
def test_extract_faces_writes_the_authors_layout_from_an_ff_download(tmp_path):
    pytest.importorskip("facenet_pytorch")
    from test_extract_faces import photo, write_video
    root, face = tmp_path / "FF++", photo("astronaut.png")
    ids = [f"{i:03d}" for i in range(8)]
    for vid in ids:
        write_video(root / "original_sequences/youtube/c23/videos" / f"{vid}.mp4", face, frames=3)
    for method in ("Deepfakes", "FaceShifter"):
        for a, b in (p for pairs in LISTS.values() for p in pairs):
            for name in (f"{a}_{b}", f"{b}_{a}"):
                write_video(root / "manipulated_sequences" / method / "c23/videos" / f"{name}.mp4", face, frames=3)
    write_video(root / "original_sequences/actors/c23/videos/01__walking.mp4", face, frames=3)
    write_video(root / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walking__ABC.mp4", face, frames=3)
    write_video(root / "original_sequences/youtube/c23/videos/999.mp4", face, frames=3)  # in no list
    write_lists(root / "splits")
    out = tmp_path / "FF_c23"
    res = command(["-m", "preprocess.extract_faces", "--ff-root", str(root), "--compression", "c23", "--output",
               str(out), "--frames", "2", "--size", "32", "--workers", "1"], timeout=600)
    assert res.returncode == 0, res.stderr
    assert "in no list (left out): 1" in res.stderr
    folders = {p.relative_to(out).as_posix() for p in out.glob("*/*/*") if p.is_dir()}
    assert {f"train_set/Real/{v}" for v in ids[:4]} | {"val_set/Real/004", "test_set/Real/007",
                                                        "test_set/FaceShifter/006_007", "train_set/Deepfakes/001_000",
                                                        "DeepFakeDetection/fake/01_02__walking__ABC"} <= folders
    assert not any("999" in f for f in folders)
    marker = json.loads((out / "FF_OFFICIAL.json").read_text())
    assert marker["compression"] == "c23" and marker["videos"]["test"] == {"Real": 2, "Deepfakes": 2, "FaceShifter": 2}
    assert json.loads((out / "splits" / "test.json").read_text()) == LISTS["test"]
    # The protocol configs' ff specs read it unchanged; the compression is recorded in each sample's source.
    test = build_set({"kind": "ff", "root": str(out), "subset": "test_set", "methods": ["Real", "FaceShifter"]},
                     {"index_dir": None, "labeled_fraction": 0.5, "paths": {}}, 0, "test")
    assert {s.video for s in test} == {"ff:Real/006", "ff:Real/007", "ff:FaceShifter/006_007",
                                       "ff:FaceShifter/007_006"} and {s.source for s in test} == {"ff/c23"}
    # describe counts the val_set and the DeepFakeDetection extra set like any other
    cfg = tmp_path / "official.yaml"
    cfg.write_text(json.dumps({"data": {
        "labeled": [{"kind": "ff", "root": str(out), "subset": "train_set", "methods": ["Real", "Deepfakes"]}],
        "test": [{"name": "FaceShifter", "kind": "ff", "root": str(out), "subset": "test_set",
                  "methods": ["Real", "FaceShifter"]},
                 {"name": "DFD", "kind": "folder", "root": str(out / "DeepFakeDetection")}]}}))
    res = command(["-m", "datasets", "describe", "--protocol", str(cfg)])
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[3:] if line.strip()}
    assert rows["labeled"][3] == str(8 * 2) and rows["FaceShifter"][3] == str(4 * 2) and rows["DFD"][3] == "4"


def _image_tree(root, videos):
    for rel in videos:
        (root / rel).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel / "0000.png"), np.full((8, 8, 3), 128, np.uint8))


def test_official_split_places_videos_by_the_lists_whatever_their_folder(tmp_path):
    root = tmp_path / "ff"
    # The authors' folders: 000-005 in train_set, 006-007 in test_set; the lists say otherwise for 000/001.
    lists = {"train": [["002", "003"], ["004", "005"]], "val": [["006", "007"]], "test": [["000", "001"]]}
    _image_tree(root, [f"train_set/Real/{i:03d}" for i in range(6)] + ["train_set/Deepfakes/000_001",
                                                                        "train_set/Deepfakes/002_003",
                                                                        "test_set/Real/006", "test_set/Real/007",
                                                                        "test_set/Deepfakes/006_007"])
    write_lists(root / "splits", lists)
    data = {"index_dir": None, "labeled_fraction": 0.5, "paths": {}}
    spec = {"kind": "ff", "root": str(root), "methods": ["Real", "Deepfakes"], "official_split": "auto"}
    test = {s.video for s in build_set({**spec, "subset": "test_set"}, data, 0, "test")}
    train = {s.video for s in build_set({**spec, "subset": "train_set"}, data, 0, "labeled")}
    assert test == {"ff:Real/000", "ff:Real/001", "ff:Deepfakes/000_001"}
    assert train == {"ff:Real/002", "ff:Real/003", "ff:Real/004", "ff:Real/005", "ff:Deepfakes/002_003"}
    # Without it: the folders decide (the authors' split).
    plain = {s.video for s in build_set({**spec, "subset": "test_set", "official_split": "off"}, data, 0, "test")}
    assert plain == {"ff:Real/006", "ff:Real/007", "ff:Deepfakes/006_007"}


@pytest.mark.parametrize("content, problem", [
    ("not json", "is not valid JSON"),
    ("[]", "non-empty JSON list of pairs"),
    ('[["071", "054"], ["071"]]', "entry 2 is"),
    ('[["71", "054"]]', "not a pair of three-digit video ids"),
    ('{"a": 1}', "non-empty JSON list"),
])
def test_a_malformed_split_list_is_one_line_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "train.json"
    path.write_text(content)
    with pytest.raises(UserError, match=problem) as err:
        read_split(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_extract_faces_ff_root_errors_are_one_line(tmp_path):
    root = tmp_path / "FF++"
    (root / "original_sequences/youtube/c23/videos").mkdir(parents=True)
    res = command(["-m", "preprocess.extract_faces", "--ff-root", str(root), "--compression", "c40", "--output",
               str(tmp_path / "out")])
    assert res.returncode == 2 and "c40/videos is missing" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = command(["-m", "preprocess.extract_faces", "--ff-root", str(root), "--output", str(tmp_path / "out")])
    assert res.returncode == 2 and "split list not found" in res.stderr and "dataset/splits" in res.stderr
    write_lists(root / "splits", {**LISTS, "val": [["000", "004"]]})  # 000 is in train.json too
    res = command(["-m", "preprocess.extract_faces", "--ff-root", str(root), "--output", str(tmp_path / "out")])
    assert res.returncode == 2 and "video 000 is also in train.json" in res.stderr
