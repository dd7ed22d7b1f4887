"""predict.py on real photographs and videos of faces; report.py; plots and TensorBoard logs of a run."""
import json

import os

import cv2
import numpy as np
import pytest
import torch

from conftest import check_page, command, train_and_evaluate
from models import build_baseline
from engine.config import DEFAULTS
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
    res = command(["predict.py", str(media / "astronaut.png"), str(media / "clip.mp4"), str(media / "coffee.jpg"),
               str(media / "broken.png"), "--method", "pt", "--weights", str(media / "pt.tar"), "--json", str(out),
               "--csv", str(tmp_path / "faces.csv"), "--frames", "4", "--cam", str(tmp_path / "cam")])
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
    # --cam: one heat-map picture per scored face, recorded beside its score
    cams = [f["cam"] for e in data.values() for f in e["faces"]]
    assert len(cams) == 5 and sorted(map(str, (tmp_path / "cam").iterdir())) == sorted(cams)
    assert all(cv2.imread(c) is not None for c in cams)


def test_every_input_gets_its_own_result_even_a_tiny_image_and_a_name_that_is_not_utf8(media, tmp_path):
    cv2.imwrite(str(tmp_path / "dot.png"), np.zeros((1, 1, 3), np.uint8))  # the face detector fails on it
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png")  # not valid UTF-8
    with open(odd, "wb") as f:  # (cv2.imwrite cannot take such a name)
        f.write(cv2.imencode(".png", photo("astronaut.png"))[1].tobytes())
    res = command(["predict.py", str(tmp_path / "dot.png"), odd, "--method", "pt", "--weights",
               str(media / "pt.tar"), "--json", str(tmp_path / "out.json"), "--csv", str(tmp_path / "faces.csv")])
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr, res.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert set(data) == {str(tmp_path / "dot.png"), odd}
    assert data[odd]["error"] is None and len(data[odd]["faces"]) == 1
    assert data[str(tmp_path / "dot.png")]["score"] is None and data[str(tmp_path / "dot.png")]["error"]
    rows = (tmp_path / "faces.csv").read_bytes().splitlines()
    assert len(rows) == 2 and rows[1].startswith(bytes(tmp_path) + b"/caf\xe9.png,")  # the name as on disk


def test_the_validation_threshold_in_the_weights_decides_the_verdicts(media, tmp_path):
    image = str(media / "astronaut.png")
    res = command(["predict.py", image, "--method", "pt", "--weights", str(media / "pt.tar"), "--json",
               str(tmp_path / "plain.json")])
    assert res.returncode == 0, res.stderr
    plain = json.loads((tmp_path / "plain.json").read_text())[image]
    assert plain["threshold"] == 0.5 and plain["verdict"] == ("fake" if plain["score"] >= 0.5 else "real")
    # The same weights with a validation threshold on the other side of the score: the verdict flips.
    state = torch.load(media / "pt.tar", weights_only=True)
    flipped = "real" if plain["verdict"] == "fake" else "fake"
    state["calibration"] = {"threshold": plain["score"] + (0.01 if flipped == "real" else -0.01), "rule": "eer"}
    torch.save(state, tmp_path / "calibrated.tar")
    res = command(["predict.py", image, "--method", "pt", "--weights", str(tmp_path / "calibrated.tar"), "--json",
               str(tmp_path / "calibrated.json")])
    assert res.returncode == 0, res.stderr
    entry = json.loads((tmp_path / "calibrated.json").read_text())[image]
    assert entry["score"] == plain["score"] and entry["verdict"] == flipped
    assert "chosen on the run's validation set" in res.stderr and flipped.upper() in res.stdout.upper()


def test_predict_needs_weights():
    res = command(["predict.py", "x.png", "--method", "supcon"])
    assert res.returncode == 2 and "needs --encoder and --classifier" in res.stderr


@pytest.mark.slow
def test_demo_like_run_leaves_logs_plots_and_a_report(tiny_config_file):
    res = train_and_evaluate("pt", "--config", str(tiny_config_file))
    assert res.returncode == 0, res.stderr
    res = train_and_evaluate("supcon", "--config", str(tiny_config_file))
    assert res.returncode == 0, res.stderr
    runs = tiny_config_file.parent / "runs" / "tiny"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for method in ("pt", "supcon"):
        folder = runs / method
        assert list((folder / "tb").glob("events.out.tfevents.*"))
        # the evaluation in the same log: every test set's metrics, the plots, the settings (HPARAMS tab)
        tags = EventAccumulator(str(folder / "tb"), size_guidance={"images": 0}).Reload().Tags()
        assert {"eval/Deepfakes/auc", "eval/NeuralTextures/acc"} <= set(tags["scalars"]), tags["scalars"]
        assert "eval/roc" in tags["images"] and list((folder / "tb" / "hparams").glob("events.out.tfevents.*"))
        rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        assert all("images_per_s" in r and any(k.startswith("lr_") for k in r) for r in rows)
        # host memory with every logged step: torch alone holds well over 50 MB, private pages are part of all
        assert all(50 < r["private_mb"] <= r["rss_mb"] < 64_000 for r in rows if "images_per_s" in r)
        for png in ("roc.png", "training_curves.png") + (("embedding.png",) if method == "supcon" else ()):
            img = cv2.imread(str(folder / png))
            assert img is not None and img.shape[0] > 300 and img.shape[1] > 300, png
    res = command(["evaluate.py", "--method", "supcon", "--config", str(tiny_config_file), "--cam", "1", "--no-plots"])
    assert res.returncode == 0, res.stderr
    for name in ("Deepfakes", "NeuralTextures"):  # the most confident right and wrong decision of each test set
        pngs = sorted(p.name for p in (runs / "supcon" / "cam" / name).glob("*.png"))
        assert pngs and set(pngs) <= {"right-1.png", "wrong-1.png"}
    assert cv2.imread(str(runs / "supcon" / "cam" / "contact_sheet.png")) is not None
    # the real images every set shares: one row of their own, not repeated in each set's
    assert sorted(p.name for p in (runs / "supcon" / "cam" / "real_images_every_set").glob("*.png"))
    res = command(["-m", "evaluation.report", str(runs), "--out", str(runs), "--html", str(runs / "report.html")])
    assert res.returncode == 0, res.stderr
    text = (runs / "report.md").read_text()
    assert "[cam/contact_sheet.png](supcon/cam/contact_sheet.png)" in text
    assert "| Baseline |" in text and "| SupCon |" in text and "## AUC" in text and "| Deepfakes (known) |" in text
    assert "[roc.png](pt/roc.png)" in text and "[embedding.png](supcon/embedding.png)" in text
    check_page(runs / "report.html", images=6, words=("Baseline", "SupCon", "config changes from the defaults",
                                                      "backbone: &#x27;resnet50&#x27; -&gt; &#x27;test_resnet&#x27;"))


def test_report_without_results_is_a_one_line_error(tmp_path):
    res = command(["-m", "evaluation.report", str(tmp_path)])
    assert res.returncode == 2 and "no results.json" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("projection", ["pca", "tsne"])
def test_embedding_plot_projects_two_classes_apart(projection, tmp_path):
    from evaluation import plots
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


def pan(image, i, size=160):
    """Frame i of a slow pan and zoom over `image`, as a size x size view."""
    h, w = image.shape[:2]
    win = int(min(h, w) * (0.9 - 0.015 * i))
    x, y = int((w - win) * (0.3 + 0.015 * i)), int((h - win) * 0.2)
    return cv2.resize(image[y:y + win, x:x + win], (size, size), interpolation=cv2.INTER_AREA)


def grey(image):
    """The "manipulation" of this test: a face without colour (easy to learn for a tiny detector)."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def write_frames(path, frames):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, frames[0].shape[1::-1])
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.mark.slow
def test_two_person_video_is_flagged_through_its_fake_track(tmp_path):
    """Train a tiny detector on crops extracted from one-person videos (colour faces real, grey faces fake),
    then predict on a video of two people side by side, one of them grey: two tracks, the grey one fake."""
    face = photo("astronaut.png")
    videos = tmp_path / "videos"
    for k, (label, change) in enumerate((("real", lambda im: im), ("fake", grey)) * 2):
        start = 3 * (k // 2)
        write_frames(videos / label / f"v{k}.mp4", [change(pan(face, start + i)) for i in range(12)])
    for label in ("real", "fake"):
        res = command(["-m", "preprocess.extract_faces", "--input", str(videos / label), "--output",
                   str(tmp_path / "crops" / label), "--frames", "12", "--workers", "1"])
        assert res.returncode == 0, res.stderr
    config = tmp_path / "tracks.yaml"
    config.write_text(json.dumps({
        "backbone": "test_resnet", "pretrained": "none", "img_size": 32, "workers": 0, "out_dir": str(tmp_path),
        "run_name": "tracks", "data": {"labeled": [{"kind": "folder", "root": str(tmp_path / "crops")}]},
        "pt": {"steps": 60, "batch_size": 16, "lr": 0.003}}))
    res = command(["train_pt.py", "--config", str(config)])
    assert res.returncode == 0, res.stderr
    two = write_frames(tmp_path / "two.mp4", [np.concatenate([pan(face, i), grey(pan(face, i + 4)[:, ::-1])], 1)
                                              for i in range(8)])
    one = write_frames(tmp_path / "one.mp4", [pan(face, i) for i in range(8)])
    res = command(["predict.py", str(two), str(one), "--method", "pt", "--weights",
               str(tmp_path / "tracks" / "pt" / "pt.tar"), "--json", str(tmp_path / "out.json"), "--frames", "8"])
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    tracks = out[str(two)]["tracks"]
    assert len(tracks) == 2 and all(len(t["frames"]) == 8 for t in tracks), tracks
    boxes = {f["track"]: f["box"][0] for f in out[str(two)]["faces"]}
    real_track, fake_track = sorted(range(2), key=lambda k: boxes[k])  # left face real, right face grey
    assert tracks[fake_track]["score"] > 0.5 > tracks[real_track]["score"], tracks
    assert out[str(two)]["score"] == tracks[fake_track]["score"]  # a video is fake if anyone in it is
    lines = res.stdout.splitlines()
    assert any("two.mp4" in line and line.rstrip().endswith("FAKE") for line in lines), res.stdout
    single = out[str(one)]
    assert len(single["tracks"]) == 1 and single["score"] == single["tracks"][0]["score"]
    assert single["score"] == pytest.approx(np.mean([f["score"] for f in single["faces"]]), abs=1e-5)  # as before


def test_predict_cuts_faces_as_the_training_crops_were_cut(media, tmp_path):
    """31.7: the crop recorded in the training data's boxes.csv (extract_faces) is how predict.py cuts faces."""
    crops = tmp_path / "crops" / "train_set" / "Real" / "000"
    crops.mkdir(parents=True)
    (crops / "boxes.csv").write_text("frame,face,x1,y1,x2,y2,prob,crop,angle\n0,0,1,2,30,40,0.99,scale:1.3,0\n")
    cfg = {**DEFAULTS, "backbone": "test_resnet", "img_size": 32,
           "data": {**DEFAULTS["data"], "labeled": [{"kind": "ff", "root": str(tmp_path / "crops")}]}}
    save_release(tmp_path / "pt.tar", build_baseline("test_resnet"), cfg, "pt", 0)
    image = str(media / "astronaut.png")
    res = command(["predict.py", image, "--method", "pt", "--weights", str(tmp_path / "pt.tar")])
    assert res.returncode == 0 and "faces cut as the training crops were: scale:1.3" in res.stderr, res.stderr
    res = command(["predict.py", image, "--method", "pt", "--weights", str(tmp_path / "pt.tar"), "--margin", "0.4"])
    assert res.returncode == 0 and "faces cut as asked: margin:0.4" in res.stderr
    res = command(["predict.py", image, "--method", "pt", "--weights", str(media / "pt.tar")])
    assert res.returncode == 0 and "extract_faces's default, margin:0.2" in res.stderr  # its data are not here
