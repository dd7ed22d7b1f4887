"""Face-crop extraction on real photographs of faces, made into short videos with OpenCV."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import command

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
    res = command(["-m", "preprocess.extract_faces", "--input", str(videos), "--output", str(out), "--frames", "4",
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
    res = command(["-m", "preprocess.extract_faces", "--input", str(videos), "--output", str(out), "--frames", "4",
               "--workers", "1"])
    assert res.returncode == 0 and "skipping 1 video(s) already extracted" in res.stderr


def test_single_video_stride_margin_and_size(videos, tmp_path):
    out = tmp_path / "crops"
    res = command(["-m", "preprocess.extract_faces", "--input", str(videos / "people" / "astronaut.mp4"),
               "--output", str(out), "--stride", "5", "--margin", "0.5", "--size", "64", "--workers", "1"])
    assert res.returncode == 0, res.stderr
    crops = sorted((out / "astronaut").glob("*.png"))
    assert [p.name for p in crops] == ["00000_0.png", "00005_0.png", "00010_0.png"]
    assert cv2.imread(str(crops[0])).shape == (64, 64, 3)


def pipelined(videos, out, monkeypatch, **options):
    """extract_faces's GPU path (threads decode and write around the detector) with the CPU detector, on every
    video under `videos`, a face written per task (WRITE_PART 1: a video's crops spread over the threads)."""
    from preprocess import extract_faces as ef
    monkeypatch.setattr(ef, "WRITE_PART", 1)
    opt = ef.Options(frames=4, batch_size=3, **options)
    jobs = [(name, path, out, opt) for name, path in ef.find_videos(videos)]
    return ef.extract_pipelined(ef.load_detector(), jobs, opt, threads=2)


def test_pipelined_extraction_writes_what_one_video_at_a_time_writes(videos, tmp_path, monkeypatch):
    import shutil
    from preprocess.extract_faces import Options, run as extract
    videos = Path(shutil.copytree(videos, tmp_path / "videos"))                 # the module's, with one more
    two = photo("astronaut.png").copy()
    two[50:250, 300:500] = cv2.resize(photo("astronaut.png")[0:260, 130:390], (200, 200))   # a second face
    write_video(videos / "people" / "two.mp4", two, frames=6, size=240)
    extract(videos, tmp_path / "serial", Options(frames=4, batch_size=3, all_faces=True), workers=1)
    outcomes = pipelined(videos, tmp_path / "pipelined", monkeypatch, all_faces=True)
    assert sorted((o.name, o.status, o.crops) for o in outcomes) == [
        ("broken", "unreadable", 0), ("objects/coffee", "no_face", 0), ("people/astronaut", "done", 4),
        ("people/two", "done", 8)]
    serial = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob("*") if p.is_file())
    assert len([p for p in serial if p.suffix == ".png"]) == 12
    for rel in serial:
        if rel.name != "extract_summary.json":                      # run() writes it; extract_pipelined does not
            assert (tmp_path / "pipelined" / rel).read_bytes() == (tmp_path / "serial" / rel).read_bytes(), rel


def test_pipelined_extraction_fails_loudly_and_marks_no_failed_video_done(videos, tmp_path, monkeypatch):
    out = tmp_path / "crops"
    out.mkdir()
    (out / "people").write_text("a file where the video's folder goes")          # its crops cannot be written
    with pytest.raises(OSError):
        pipelined(videos / "people", out / "people", monkeypatch)
    assert not list(out.rglob("boxes.csv"))


def test_missing_input_is_a_one_line_error(tmp_path):
    res = command(["-m", "preprocess.extract_faces", "--input", str(tmp_path / "nope"), "--output", str(tmp_path)])
    assert res.returncode == 2 and "Traceback" not in res.stderr and "input not found" in res.stderr


def eye_tilt(detector, crop_path):
    """Vertical offset between the eyes (pixels) and their distance, as MTCNN finds them in a crop."""
    image = cv2.cvtColor(cv2.imread(str(crop_path)), cv2.COLOR_BGR2RGB)
    _, _, points = detector.detect(image, landmarks=True)
    (left, right) = points[0][:2]
    return abs(right[1] - left[1]), float(np.hypot(*(right - left)))


def test_align_levels_the_eyes_and_scale_cuts_squares(tmp_path):
    from preprocess.extract_faces import load_detector
    image = photo("astronaut.png")
    h, w = image.shape[:2]
    tilted = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0), (w, h))  # head tilted 20°
    video = write_video(tmp_path / "in" / "tilted.mp4", tilted, frames=4, size=240)
    outs = {}
    for name, extra in (("plain", ["--size", "128"]), ("aligned", ["--align", "--size", "128"]),
                        ("scaled", ["--scale", "1.3"])):
        res = command(["-m", "preprocess.extract_faces", "--input", str(video), "--output", str(tmp_path / name),
                   "--frames", "4", "--workers", "1", *extra])
        assert res.returncode == 0, res.stderr
        outs[name] = list(csv.DictReader(open(tmp_path / name / "tilted" / "boxes.csv")))
        assert len(outs[name]) == 4
    detector = load_detector()
    plain = [eye_tilt(detector, p) for p in sorted((tmp_path / "plain" / "tilted").glob("*.png"))]
    aligned = [eye_tilt(detector, p) for p in sorted((tmp_path / "aligned" / "tilted").glob("*.png"))]
    assert min(dy for dy, _ in plain) > 7, plain  # the tilt shows in ordinary crops (about 10 px)
    assert max(dy for dy, _ in aligned) < 3, aligned  # and is gone after alignment
    assert all(abs(d - 0.3 * 128) < 0.15 * 0.3 * 128 for _, d in aligned)  # eyes 0.3 x size apart
    assert all(r["crop"] == "align:0.3" and abs(abs(float(r["angle"])) - 20) < 5 for r in outs["aligned"])
    for row, crop in zip(outs["scaled"], sorted((tmp_path / "scaled" / "tilted").glob("*.png"))):
        side = 1.3 * max(float(row["x2"]) - float(row["x1"]), float(row["y2"]) - float(row["y1"]))
        ch, cw = cv2.imread(str(crop)).shape[:2]
        assert row["crop"] == "scale:1.3" and abs(cw - side) <= 2 and abs(ch - side) <= 2  # inside the frame here
    bad = command(["-m", "preprocess.extract_faces", "--input", str(video), "--output", str(tmp_path / "x"),
               "--align", "--scale", "1.3"])
    assert bad.returncode == 2 and "not allowed with" in bad.stderr


def test_extraction_benchmark_times_every_row_and_ends_with_the_ratio():
    """bench/extract_bench.py on one tiny video: every row timed, the reference loop and ours on the same frames,
    and the last line the per-core speed-up the issue asks for."""
    res = command(["bench/extract_bench.py", "--videos", "1", "--frames", "8", "--sample", "2", "--size", "160x120",
               "--workers", "2", "--min-face", "40", "--repeat", "2", "--stages"])
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    rows = {line.split("  ")[0].strip(): line for line in lines if "frames/s per core" in line}
    assert set(rows) == {"reference-style loop, 1 process", "extract_faces --workers 1",
                         "extract_faces --workers 1 --reference-detector", "extract_faces --workers 1 --min-face 40",
                         "extract_faces --workers 2"}, lines
    stage = next(line for line in lines if line.startswith("stages, one thread: "))
    assert all(f"{k} " in stage for k in ("decode", "detect", "write")), stage
    for line in rows.values():
        frames_per_s = float(line.split("frames/s")[0].split()[-1])
        assert frames_per_s > 0
    assert lines[-1].startswith("face extraction speed-up over reference-style per core: ") and lines[-1].endswith("x")
    assert float(lines[-1].split(": ")[1][:-1]) > 0


def test_the_authors_preset_cuts_every_frame_in_tight_squares(videos, tmp_path):
    """--preset authors: every frame and every face, a square of the box without margin (crop scale:1), MTCNN's
    stricter thresholds on frames halved in size; the faces found are the same people, cut from the full frames."""
    out = tmp_path / "crops"
    res = command(["-m", "preprocess.extract_faces", "--input", str(videos / "people"), "--out", str(out),
                   "--preset", "authors", "--workers", "1"])
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(out / "astronaut" / "boxes.csv")))
    frames = int(cv2.VideoCapture(str(videos / "people" / "astronaut.mp4")).get(cv2.CAP_PROP_FRAME_COUNT))
    assert {int(r["frame"]) for r in rows} == set(range(frames)) and {r["crop"] for r in rows} == {"scale:1"}
    assert all(float(r["prob"]) >= 0.95 for r in rows)
    crop = cv2.imread(str(sorted((out / "astronaut").glob("*.png"))[0]))
    assert abs(crop.shape[0] - crop.shape[1]) <= 1  # a square
    bad = command(["-m", "preprocess.extract_faces", "--input", str(videos), "--out", str(out), "--preset", "authors",
                   "--frames", "4"])
    assert bad.returncode == 2 and "--preset authors sets the frames and the crop" in bad.stderr
