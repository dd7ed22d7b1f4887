"""The field's protocols: DeepfakeBench's cross-dataset protocol and DF40 on generated trees in their exact
formats (JSON nesting, label names, absolute frame paths of another machine), their adapt variants, an absent
dataset named as missing, DeepfakeBench's metric definitions, and the field tables of `python -m reproduce`."""
import json

import cv2
import numpy as np
import pytest

from conftest import command, train_and_evaluate
from evaluation.metrics import deepfakebench_metrics
from test_deepfakebench import make_tree

FOREIGN = "/home/someone/DeepfakeBench/datasets/rgb"  # the machine that wrote the JSONs


def _frames(rgb, rel_dir, n, seed):
    rels = []
    for k in range(n):
        rel = f"{rel_dir}/{k:03d}.png"
        (rgb / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(rgb / rel), np.random.default_rng([seed, k]).integers(0, 255, (24, 24, 3), np.uint8))
        rels.append(f"{FOREIGN}/{rel}")
    return rels


def add_celebdf(rgb, json_dir):
    """Celeb-DF-v2.json as DeepfakeBench ships it: no compression level, labels CelebDFv2_real / CelebDFv2_fake."""
    index = {label: {"train": {}, "val": {}, "test": {}} for label in ("CelebDFv2_real", "CelebDFv2_fake")}
    for split, ids in (("train", range(0, 4)), ("test", range(4, 7))):
        for i in ids:
            real, fake = f"id{i}_{i:04d}", f"id{i}_id{i + 10}_{i:04d}"
            for label, folder, video, seed in (("CelebDFv2_real", "Celeb-real", real, i),
                                               ("CelebDFv2_fake", "Celeb-synthesis", fake, 100 + i)):
                index[label][split][video] = {
                    "label": label, "frames": _frames(rgb, f"Celeb-DF-v2/{folder}/frames/{video}", 2, seed)}
    (json_dir / "Celeb-DF-v2.json").write_text(json.dumps({"Celeb-DF-v2": index}))


def add_df40(rgb, json_dir, method="simswap"):
    """<method>_ff.json as DF40 ships it: fakes under DF40/<method>/ff/, reals = FF++'s test frames."""
    index = {f"{method}_{kind}": {"train": {}, "val": {}, "test": {}} for kind in ("Real", "Fake")}
    for video in ("010", "011", "012", "013"):
        index[f"{method}_Real"]["test"][video] = {"label": f"{method}_Real", "frames": [
            f"{FOREIGN}/FaceForensics++/original_sequences/youtube/c23/frames/{video}/{k:03d}.png" for k in range(2)]}
    for video in ("010_011", "012_013"):
        index[f"{method}_Fake"]["test"][video] = {"label": f"{method}_Fake",
                                                  "frames": _frames(rgb, f"DF40/{method}/ff/frames/{video}", 2, 7)}
        train = video.replace("01", "00")  # 000_001, 002_003: DF40's training fakes (df40_adapt.yaml's unlabeled)
        index[f"{method}_Fake"]["train"][train] = {
            "label": f"{method}_Fake", "frames": _frames(rgb, f"DF40/{method}/ff/frames/{train}", 2, 8)}
    (json_dir / f"{method}_ff.json").write_text(json.dumps({f"{method}_ff": index}))


def field_args(tmp_path, rgb, json_dir, *extra):
    return [f"data.paths.dfb_rgb={rgb}", f"data.paths.dfb_json={json_dir}", f"data.paths.df40_rgb={rgb}",
            f"data.paths.df40_json={json_dir}", f"data.paths.df40_train_json={json_dir}",
            f"data.index_dir={tmp_path / 'ix'}", "backbone=test_resnet", "pretrained=none", "img_size=32", "workers=0",
            "pt.steps=2", "pt.batch_size=8", "log_every=1", "supcon.steps=2", "supcon.batch_size=8",
            "supcon.classifier_steps=1", "supcon.classifier_batch_size=8", "mpl.steps=2", "mpl.batch_labeled=4",
            "mpl.batch_unlabeled=4", "mpl.finetune_steps=1", "mpl.finetune_classifier_steps=1",
            "--out", str(tmp_path / "runs"), *extra]


@pytest.fixture
def field(tmp_path):
    rgb, ff_json = make_tree(tmp_path)
    add_celebdf(rgb, ff_json.parent)
    add_df40(rgb, ff_json.parent)
    return rgb, ff_json.parent


def test_the_cross_dataset_protocol_scores_every_dataset_present_and_names_the_absent(field, tmp_path):
    rgb, json_dir = field
    res = train_and_evaluate("pt", "--config", "configs/dfb_cross.yaml", *field_args(tmp_path, rgb, json_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "test set 'UADFV' left out" in res.stderr and "UADFV.json not found" in res.stderr
    (path,) = (tmp_path / "runs").glob("dfb_cross-*/pt/results.json")
    results = json.loads(path.read_text())
    assert set(results["missing"]) == {"CDF-v1", "DFD", "DFDC", "DFDC-P", "FaceShifter", "UADFV"}
    for name, videos in (("FF++", 4 + 2 * 4), ("CDF-v2", 6)):  # test videos: 4 real + 2 of each of 4 methods; 3 + 3
        dfb = results[name]["deepfakebench"]
        assert {"auc", "video_auc", "eer", "ap", "acc"} <= set(dfb) and dfb["auc"] is not None
        assert results[name]["video"]["n"] == videos
    assert results["CDF-v2"]["n"] == 12 and "missing: test set 'DFDC'" in res.stdout


@pytest.mark.parametrize("config, images", [
    ("dfb_cross_adapt", 16),  # Celeb-DF-v2's 8 train videos x 2 frames; never its test videos
    ("df40_adapt", 4),        # DF40 simswap_ff's 2 training fakes x 2 frames
])
def test_the_adapt_variants_learn_from_the_targets_train_videos_without_labels(field, tmp_path, config, images):
    rgb, json_dir = field
    res = command(["train_supconmpl.py", "--config", f"configs/{config}.yaml", *field_args(tmp_path, rgb, json_dir)])
    assert res.returncode == 0, res.stderr[-2000:]
    (data,) = (tmp_path / "runs").glob(f"{config}-*/supconmpl/data.json")
    sets = json.loads(data.read_text())["data"]
    assert sets["unlabeled"]["images"] == images
    assert "no true label: the pseudo-label accuracy (pseudo_acc) is not logged" in res.stderr


def test_df40_reads_its_json_and_layout_and_names_the_methods_it_lacks(field, tmp_path):
    rgb, json_dir = field
    res = train_and_evaluate("pt", "--config", "configs/df40.yaml", *field_args(tmp_path, rgb, json_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    (path,) = (tmp_path / "runs").glob("df40-*/pt/results.json")
    results = json.loads(path.read_text())
    assert results["simswap_ff"]["n"] == 8 + 4 and results["simswap_ff"]["deepfakebench"]["auc"] is not None
    assert len(results["missing"]) == 70 and "sd2.1_ff" in results["missing"]  # 31 x 2 + 9 methods, one present
    (pred,) = (tmp_path / "runs").glob("df40-*/pt/predictions.csv")
    assert "/DF40/simswap/ff/frames/010_011/" in pred.read_text()  # re-rooted from the other machine's paths


def test_a_missing_optional_dataset_needs_an_unset_root_or_file_a_malformed_one_is_an_error(field, tmp_path):
    from datasets.protocols import protocol_config, missing_sets
    rgb, json_dir = field
    cfg = protocol_config("dfb_cross", [f"data.paths.dfb_rgb={rgb}"])  # dfb_json not set anywhere
    assert missing_sets(cfg)["CDF-v2"] == "dataset root 'dfb_json' is not set"
    cfg["data"]["test"][1] = {**cfg["data"]["test"][1], "colour": "red"}
    from utils import UserError
    with pytest.raises(UserError, match="unknown key"):
        missing_sets(cfg)


def test_deepfakebench_metrics_follow_its_definitions_where_ours_differ():
    # two fake frames at exactly 0.5: DeepfakeBench calls them real (> 0.5), ours fake (>= 0.5)
    labels = np.array([0, 0, 1, 1, 1, 0])
    scores = np.array([0.1, 0.6, 0.5, 0.5, 0.9, 0.2])
    paths = ["r/a/0.png", "r/a/1.png", "f/b/0.png", "f/b/1.png", "f/c/0.png", "r/c/0.png"]
    dfb = deepfakebench_metrics(paths, labels, scores)
    assert dfb["acc"] == pytest.approx(3 / 6)
    from sklearn.metrics import roc_auc_score, roc_curve
    fpr, tpr, _ = roc_curve(labels, scores)
    assert dfb["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert dfb["eer"] == pytest.approx(fpr[np.nanargmin(np.abs(1 - tpr - fpr))])  # a ROC point, not interpolated
    # videos are folder names: c/ holds a fake and a real frame (one "video", label floor(1/2) = 0)
    v_labels, v_scores = [0, 1, 0], [0.35, 0.5, 0.55]
    assert dfb["video_auc"] == pytest.approx(roc_auc_score(v_labels, v_scores))


def test_the_field_tables_render_their_rows_the_published_ones_and_what_is_missing():
    from reproduce.bench import bench_spec, render_bench
    spec = bench_spec("dfb", demo=False)
    assert [r.test for r in spec["rows"]][:3] == ["FF++", "CDF-v1", "CDF-v2"] and "pt_effb4" in spec["methods"]
    demo = bench_spec("dfb", demo=True)
    assert "pt_effb4" not in demo["methods"] and "EfficientNet-B4" in demo["left_out"][0]
    cell = {"mean": 0.8, "std": 0.01, "n": 3, "values": [0.79, 0.8, 0.81], "paper": None}
    metrics = spec["metrics"]
    rows = [{"row": r.label, "test": r.test, "cells": {m: {k: cell for k in metrics} for m in spec["methods"]},
             "missing": [], "diffs": {}} for r in spec["rows"]]
    text = render_bench("dfb", {**spec, "left_out": []}, rows, [777, 778, 779], False,
                        {"UADFV": "UADFV.json not found"})
    assert "| SPSL (published) | 96.10 | 81.50 | 76.50 |" in text and "80.00 ± 1.00" in text
    assert "- dataset UADFV: UADFV.json not found" in text and "80.00 ± 1.00 | missing |" in text
    from evaluation.html import table_page
    page = table_page(text, None, "dfb", 1)
    assert "<td>SPSL (published)</td>" in page and "<h2>Missing</h2>" in page and "<img" not in page
    df40 = bench_spec("df40", demo=False)
    labels = {r.test: r.label for r in df40["rows"]}
    assert labels["sd2.1_ff"] == "entire-face synthesis: sd2.1_ff (diffusion era)"
    assert labels["simswap_cdf"] == "face swap: simswap_cdf" and len(df40["rows"]) == 72
    res = command(["-m", "reproduce", "--table", "adapt", "--dry-run"])
    assert res.returncode == 2 and "data.paths.unlabeled=DIR" in res.stderr
