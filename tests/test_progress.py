"""Long commands say where they are when their output goes to a file or a pipe (slurm, nohup): a line every
SUPCON_PROGRESS_EVERY seconds with done/total, rate, elapsed time and ETA, and one at the end."""
import os
import re
import subprocess

import pytest

import evaluate
import train_pt
from conftest import PY, REPO, cli, command

LINE = r"{what}: (\d+)/(\d+) {unit} \(\d+%\), [\d.]+ {unit}/s, \d:\d\d:\d\d elapsed, (ETA \d:\d\d:\d\d|done)"


def progress_lines(text, what, unit):
    return [m.groups() for m in re.finditer(LINE.format(what=re.escape(what), unit=unit), text)]


def test_evaluation_reports_its_progress_off_a_terminal(tiny_config_file, monkeypatch):
    assert cli(train_pt.main, "--config", tiny_config_file).returncode == 0
    monkeypatch.setenv("SUPCON_PROGRESS_EVERY", "0")
    res = cli(evaluate.main, "--method", "pt", "--config", tiny_config_file, "--no-plots", "--batch-size", "8")
    assert res.returncode == 0, res.stderr
    lines = progress_lines(res.stderr, "evaluate: test images", "images")
    assert len(lines) >= 2 and lines[-1][2] == "done" and lines[0][2].startswith("ETA")
    assert lines[-1][0] == lines[-1][1] and int(lines[0][0]) < int(lines[0][1])


def test_predict_and_face_extraction_report_progress_through_a_pipe(tmp_path, monkeypatch):
    pytest.importorskip("facenet_pytorch", reason="pip install --no-deps facenet-pytorch==2.6.0 (done by .ci/run)")
    from test_extract_faces import photo, write_video
    import cv2
    import torch
    from engine.config import DEFAULTS
    from engine.release import save_release
    from models import build_baseline
    media = tmp_path / "media"
    media.mkdir()
    for k in range(3):
        cv2.imwrite(str(media / f"a{k}.png"), photo("astronaut.png"))
    write_video(media / "clip.mp4", photo("astronaut.png"), frames=4)
    write_video(media / "clip2.mp4", photo("astronaut.png"), frames=4)
    save_release(tmp_path / "pt.tar", build_baseline("test_resnet"), {**DEFAULTS, "backbone": "test_resnet",
                                                                         "img_size": 32}, "pt", 0)
    torch.manual_seed(0)
    env = {**os.environ, "SUPCON_PROGRESS_EVERY": "0"}
    # a real process whose streams are pipes: the boundary is the behaviour here
    res = subprocess.run([PY, "predict.py", str(media), "--method", "pt", "--weights", str(tmp_path / "pt.tar")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = progress_lines(res.stderr, "predict", "inputs")
    assert [int(n) for n, _, _ in lines][-1] == 5 and lines[-1][2] == "done" and len(lines) >= 3
    monkeypatch.setenv("SUPCON_PROGRESS_EVERY", "0")
    res = command(["-m", "preprocess.extract_faces", "--input", str(media), "--output", str(tmp_path / "crops"),
                   "--frames", "2", "--workers", "1"])
    assert res.returncode == 0, res.stderr
    assert progress_lines(res.stderr, "face extraction", "videos")[-1][2] == "done"
