"""Celeb-DF-v2's official test list (List_of_testing_videos.txt) decides the test role of a Celeb-DF source,
checked on a generated tree in the published layout through `python -m datasets describe`."""
import json

import cv2
import numpy as np
import pytest
import yaml

from conftest import command

VIDEOS = {"Celeb-real": ["id0_0000", "id0_0001", "id1_0000", "id1_0001", "id2_0000"],
          "Celeb-synthesis": ["id0_id1_0000", "id0_id2_0001", "id1_id0_0000", "id1_id2_0002", "id2_id0_0000",
                              "id2_id1_0001"],
          "YouTube-real": ["00000", "00001", "00002", "00003"]}
LISTED = ["1 YouTube-real/00001.mp4", "0 Celeb-synthesis/id0_id1_0000.mp4", "1 Celeb-real/id1_0001.mp4",
          "0 Celeb-synthesis/id2_id1_0001.mp4"]


@pytest.fixture
def celebdf(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    rng = np.random.default_rng(0)
    for folder, names in VIDEOS.items():
        for name in names:
            (root / folder / name).mkdir(parents=True)
            for frame in range(2):
                cv2.imwrite(str(root / folder / name / f"{frame:03d}.png"), rng.integers(0, 255, (8, 8, 3), np.uint8))
    (root / "List_of_testing_videos.txt").write_text("\n".join(LISTED) + "\n")
    return root


def describe(tmp_path, root, **celebdf_keys):
    src = {"kind": "celebdf", "root": str(root), **celebdf_keys}
    cfg = {"out_dir": str(tmp_path / "runs"), "data": {
        "labeled": [{**src, "videos": "labeled"}], "unlabeled": [{**src, "videos": "unlabeled"}],
        "test": [{"name": "CelebDF", "split": "known", **src}]}}
    path = tmp_path / "celebdf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = command(["-m", "datasets", "describe", "--protocol", str(path), "--json", str(tmp_path / "d.json")])
    return res, (json.loads((tmp_path / "d.json").read_text()) if res.returncode in (0, 1) else None)


def test_the_official_list_is_the_test_set_and_the_rest_trains(celebdf, tmp_path):
    res, d = describe(tmp_path, celebdf)
    assert res.returncode == 0, res.stderr
    sets = d["sets"]
    assert sets["CelebDF"]["videos"] == 4 and sets["CelebDF"]["real"] == 4 and sets["CelebDF"]["fake"] == 4
    total = sum(len(v) for v in VIDEOS.values())
    assert sets["labeled"]["videos"] + sets["unlabeled"]["videos"] == total - 4
    assert sets["labeled"]["videos"] > 0 and sets["unlabeled"]["videos"] > 0
    assert d["overlapping_videos"] == 0  # the official split is by video: its test ids are not a leak
    assert "CelebDF" in res.stdout and "labeled" in res.stdout


def test_without_the_list_a_split_by_identity_collapses_and_says_how_to_split(celebdf, tmp_path):
    """Celeb-DF's idA_idB names link its celebrities: one identity group holds most videos, so a split by
    identity is no split: one line naming the fix (issue 33)."""
    res, d = describe(tmp_path, celebdf, test_list="off")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "split_by: video" in lines[0], res.stderr
    res, d = describe(tmp_path, celebdf, test_list="off", split_by="video")
    assert d["sets"]["CelebDF"]["videos"] == sum(len(v) for v in VIDEOS.values())  # the test set: every video
    assert res.returncode == 1 and d["overlapping_videos"] > 0  # which the labeled ones are: reported


@pytest.mark.parametrize("line, words", [("2 Celeb-real/id0_0000.mp4", "line 2: expected"),
                                         ("Celeb-real/id0_0000.mp4", "line 2: expected"),
                                         ("0 Celeb-real/id0_0000.mp4", "line 2: 0 (fake) for a video in 'Celeb-real'")])
def test_a_malformed_list_is_one_line_naming_the_file_and_line(celebdf, tmp_path, line, words):
    (celebdf / "List_of_testing_videos.txt").write_text(LISTED[0] + "\n" + line + "\n")
    res, _ = describe(tmp_path, celebdf)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "List_of_testing_videos.txt" in res.stderr and words in res.stderr


def test_a_named_list_that_is_missing_is_refused(celebdf, tmp_path):
    res, _ = describe(tmp_path, celebdf, test_list=str(tmp_path / "nowhere.txt"))
    assert res.returncode == 2 and "Celeb-DF test list not found" in res.stderr
