"""Face-crop extraction on real photographs of faces, made into short videos with OpenCV."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PY, run

pytest.importorskip("facenet_pytorch", reason="pip install --no-deps facenet-pytorch==2.6.0 (done by .ci/run)")


def photo(name):
    import skimage
    return cv2.imread(str(Path(skimage.__file__).parent / "data" / name))


def write_video(path, image, frames=12, size=160):
    """A pan and zoom over `image`, like a hand-held camera."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size, size))
    h, w = image.shape[:2]
    for i in range(frames):
        win = int(min(h, w) * (0.9 - 0.02 * i))
        x, y = int((w - win) * (0.3 + 0.02 * i)), int((h - win) * 0.2)
        writer.write(cv2.resize(image[y:y + win, x:x + win], (size, size), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "people" / "astronaut.mp4", photo("astronaut.png"))
    write_video(root / "objects" / "coffee.mp4", photo("coffee.png"))  # no face
    (root / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8).tobytes())
    return root


def test_extract_crops_faces_and_reports_the_rest(videos, tmp_path):
    out = tmp_path / "crops"
    res = run([PY, "-m", "preprocess.extract_faces", "--input", str(videos), "--output", str(out), "--frames", "4",
               "--workers", "2"])
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "extract_summary.json").read_text())
    assert summary["done"] == ["people/astronaut"]
    assert summary["no_face"] == ["objects/coffee"] and summary["unreadable"] == ["broken"]
    assert "1 without a face, 1 unreadable" in res.stdout
    crops = sorted((out / "people" / "astronaut").glob("*.png"))
    assert len(crops) == 4 and all(p.name.endswith("_0.png") for p in crops)
    rows = list(csv.DictReader(open(out / "people" / "astronaut" / "boxes.csv")))
    assert len(rows) == 4 and all(float(r["prob"]) > 0.9 for r in rows)
    # Each crop really holds the face: the detector finds one filling most of it.
    from preprocess.extract_faces import load_detector
    detector = load_detector()
    for crop_path in crops:
        crop = cv2.cvtColor(cv2.imread(str(crop_path)), cv2.COLOR_BGR2RGB)
        boxes, probs = detector.detect(crop)
        assert boxes is not None and probs[0] > 0.95
        x1, y1, x2, y2 = boxes[0]
        assert (x2 - x1) * (y2 - y1) > 0.3 * crop.shape[0] * crop.shape[1]

    # A rerun skips the finished video and retries the others.
    res = run([PY, "-m", "preprocess.extract_faces", "--input", str(videos), "--output", str(out), "--frames", "4",
               "--workers", "1"])
    assert res.returncode == 0 and "skipping 1 video(s) already extracted" in res.stderr


def test_single_video_stride_margin_and_size(videos, tmp_path):
    out = tmp_path / "crops"
    res = run([PY, "-m", "preprocess.extract_faces", "--input", str(videos / "people" / "astronaut.mp4"),
               "--output", str(out), "--stride", "5", "--margin", "0.5", "--size", "64", "--workers", "1"])
    assert res.returncode == 0, res.stderr
    crops = sorted((out / "astronaut").glob("*.png"))
    assert [p.name for p in crops] == ["00000_0.png", "00005_0.png", "00010_0.png"]
    assert cv2.imread(str(crops[0])).shape == (64, 64, 3)


def test_missing_input_is_a_one_line_error(tmp_path):
    res = run([PY, "-m", "preprocess.extract_faces", "--input", str(tmp_path / "nope"), "--output", str(tmp_path)])
    assert res.returncode == 2 and "Traceback" not in res.stderr and "input not found" in res.stderr
