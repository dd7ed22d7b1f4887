"""Shared fixtures: a tiny demo tree in the FF++ layout and a tiny config pointing at it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# pytest.ini runs the suite in two worker processes (pytest-xdist): one core each, so that the commands the
# tests start (training runs, mostly) use one thread of arithmetic instead of competing for both cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    from preprocess.demo import generate
    return generate(tmp_path_factory.mktemp("demo") / "demo", seed=1, size=32, train_ids=6, test_ids=3, frames=2,
                    quiet=True)


def tiny_config(root: Path, out: Path, **extra) -> dict:
    ff = str(root / "FaceForensics++")
    cfg = {
        "backbone": "test_resnet", "pretrained": "none", "img_size": 32, "workers": 0, "log_every": 1,
        "out_dir": str(out), "run_name": "tiny",
        "data": {
            "labeled": [{"kind": "ff", "root": ff, "subset": "train_set", "videos": "labeled",
                         "methods": ["Real", "Deepfakes", "Face2Face"]}],
            "unlabeled": [{"kind": "ff", "root": ff, "subset": "train_set", "videos": "unlabeled",
                           "methods": ["Real", "Deepfakes", "Face2Face", "NeuralTextures"]}],
            "test": [
                {"name": "Deepfakes", "split": "known", "kind": "ff", "root": ff, "subset": "test_set",
                 "methods": ["Real", "Deepfakes"]},
                {"name": "NeuralTextures", "split": "unknown", "kind": "ff", "root": ff, "subset": "test_set",
                 "methods": ["Real", "NeuralTextures"]},
            ],
        },
        "pt": {"steps": 2, "batch_size": 8},
        "supcon": {"steps": 2, "batch_size": 8, "classifier_steps": 2, "classifier_batch_size": 8},
        "mpl": {"steps": 2, "batch_labeled": 4, "batch_unlabeled": 8, "finetune_steps": 1,
                "finetune_classifier_steps": 1},
    }
    for key, value in extra.items():
        cfg[key] = value
    return cfg


@pytest.fixture
def tiny_config_file(tiny_demo, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_demo, tmp_path / "runs")))
    return path


def run(args: list[str], cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command the way a user would, from the repository root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


PY = sys.executable
