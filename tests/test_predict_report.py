"""predict.py on real photographs and videos of faces; report.py; plots and TensorBoard logs of a run."""
import json

import os

import cv2
import numpy as np
import pytest
import torch

from conftest import PY, run
from models import build_baseline
from config import DEFAULTS
from engine.release import save_release

pytest.importorskip("facenet_pytorch", reason="pip install --no-deps facenet-pytorch==2.6.0 (done by .ci/run)")
from test_extract_faces import photo, write_video  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    cv2.imwrite(str(root / "astronaut.png"), photo("astronaut.png"))
    cv2.imwrite(str(root / "coffee.jpg"), photo("coffee.png"))
    write_video(root / "clip.mp4", photo("astronaut.png"), frames=8)
    (root / "broken.png").write_bytes(b"not an image at all")
    torch.manual_seed(0)
    cfg = {**DEFAULTS, "backbone": "test_resnet", "img_size": 32}
    save_release(root / "pt.tar", build_baseline("test_resnet"), cfg, "pt", 0)
    return root


def test_predict_images_videos_and_a_broken_file(media, tmp_path):
    out = tmp_path / "out.json"
    res = run([PY, "predict.py", str(media / "astronaut.png"), str(media / "clip.mp4"), str(media / "coffee.jpg"),
               str(media / "broken.png"), "--method", "pt", "--weights", str(media / "pt.tar"), "--json", str(out),
               "--csv", str(tmp_path / "faces.csv"), "--frames", "4"])
    assert res.returncode == 1, res.stderr  # one input could not be read; the others were scored
    data = json.loads(out.read_text())
    image = data[str(media / "astronaut.png")]
    assert image["error"] is None and len(image["faces"]) == 1 and image["faces"][0]["frame"] is None
    x1, y1, x2, y2 = image["faces"][0]["box"]
    assert 150 < x1 < 200 and 40 < y1 < 90 and 240 < x2 < 290 and 150 < y2 < 200  # the astronaut's face
    assert 0.0 <= image["score"] <= 1.0 and image["score"] == image["faces"][0]["score"]
    video = data[str(media / "clip.mp4")]
    assert video["error"] is None and len(video["faces"]) == 4
    assert sorted({f["frame"] for f in video["faces"]}) == [0, 2, 5, 7]
    assert video["score"] == pytest.approx(sum(f["score"] for f in video["faces"]) / 4, abs=1e-5)  # mean rule
    assert data[str(media / "coffee.jpg")] == {"faces": [], "score": None, "error": None}
    broken = data[str(media / "broken.png")]
    assert broken["score"] is None and broken["error"]
    assert "no face" in res.stdout and "1 input(s) could not be read" in res.stderr
    assert len((tmp_path / "faces.csv").read_text().splitlines()) == 1 + 5


def test_every_input_gets_its_own_result_even_a_tiny_image_and_a_name_that_is_not_utf8(media, tmp_path):
    cv2.imwrite(str(tmp_path / "dot.png"), np.zeros((1, 1, 3), np.uint8))  # the face detector fails on it
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png")  # not valid UTF-8
    with open(odd, "wb") as f:  # (cv2.imwrite cannot take such a name)
        f.write(cv2.imencode(".png", photo("astronaut.png"))[1].tobytes())
    res = run([PY, "predict.py", str(tmp_path / "dot.png"), odd, "--method", "pt", "--weights",
               str(media / "pt.tar"), "--json", str(tmp_path / "out.json"), "--csv", str(tmp_path / "faces.csv")])
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr, res.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert set(data) == {str(tmp_path / "dot.png"), odd}
    assert data[odd]["error"] is None and len(data[odd]["faces"]) == 1
    assert data[str(tmp_path / "dot.png")]["score"] is None and data[str(tmp_path / "dot.png")]["error"]
    rows = (tmp_path / "faces.csv").read_bytes().splitlines()
    assert len(rows) == 2 and rows[1].startswith(bytes(tmp_path) + b"/caf\xe9.png,")  # the name as on disk


def test_predict_needs_weights():
    res = run([PY, "predict.py", "x.png", "--method", "supcon"])
    assert res.returncode == 2 and "needs --encoder and --classifier" in res.stderr


@pytest.mark.slow
def test_demo_like_run_leaves_logs_plots_and_a_report(tiny_config_file):
    res = run(["bash", "train_pt_model.sh", "--config", str(tiny_config_file)])
    assert res.returncode == 0, res.stderr
    res = run(["bash", "train_supcon_model.sh", "--config", str(tiny_config_file)])
    assert res.returncode == 0, res.stderr
    runs = tiny_config_file.parent / "runs" / "tiny"
    for method in ("pt", "supcon"):
        folder = runs / method
        assert list((folder / "tb").glob("events.out.tfevents.*"))
        rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        assert all("images_per_s" in r and any(k.startswith("lr_") for k in r) for r in rows)
        for png in ("roc.png", "training_curves.png") + (("embedding.png",) if method == "supcon" else ()):
            img = cv2.imread(str(folder / png))
            assert img is not None and img.shape[0] > 300 and img.shape[1] > 300, png
    res = run([PY, "report.py", str(runs), "--out", str(runs / "report.md")])
    assert res.returncode == 0, res.stderr
    text = (runs / "report.md").read_text()
    assert "| Baseline |" in text and "| SupCon |" in text and "Deepfakes (known) ACC / AUC / F1" in text
    assert "[roc.png](pt/roc.png)" in text and "[embedding.png](supcon/embedding.png)" in text


def test_report_without_results_is_a_one_line_error(tmp_path):
    res = run([PY, "report.py", str(tmp_path)])
    assert res.returncode == 2 and "no results.json" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("projection", ["pca", "tsne"])
def test_embedding_plot_projects_two_classes_apart(projection, tmp_path):
    import plots
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 1, (60, 16)), rng.normal(0, 1, (60, 16)) + 6]).astype(np.float32)
    labels = np.array([0] * 60 + [1] * 60)
    xy = plots.embed_2d(feats, projection)
    assert xy.shape == (120, 2)
    gap = np.linalg.norm(xy[labels == 0].mean(0) - xy[labels == 1].mean(0))
    assert gap > 2 * max(xy[labels == 0].std(0).max(), xy[labels == 1].std(0).max())  # the classes stay apart
    path = plots.embedding_plot(feats, labels, ["Real"] * 60 + ["Deepfakes"] * 60, tmp_path / "e.png", "t",
                                projection)
    assert cv2.imread(str(path)).shape[1] > 300
