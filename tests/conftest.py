"""Shared fixtures: a tiny demo tree in the FF++ layout and a tiny config pointing at it."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

import warm_python

REPO = Path(__file__).resolve().parent.parent

# pytest.ini runs the suite in two worker processes (pytest-xdist): one core each, so that the commands the
# tests start (training runs, mostly) use one thread of arithmetic instead of competing for both cores. (Also
# with -n 0: the warm server below is started with it, and a command asking for other threads runs cold.)
os.environ.setdefault("OMP_NUM_THREADS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
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


class Result:
    """What a command gave: its exit status and what it printed (as subprocess.CompletedProcess)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(main, *argv) -> Result:
    """An entry point's main(argv) called in this process, as its command would run: the exit status and one-line
    errors of utils.exit_code, stdout and stderr captured."""
    import contextlib
    import io
    from utils import exit_code
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = exit_code(main, [str(a) for a in argv])
        except SystemExit as stop:  # argparse (--help, bad flags)
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    return Result(code, out.getvalue(), err.getvalue())


def run(args: list[str], cwd: Path = REPO, timeout: int = 300, cold: bool = False) -> subprocess.CompletedProcess:
    """Run a command the way a user would, from the repository root (cold: in fresh interpreters)."""
    env = {**(cold_env() if cold else os.environ), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


# `python` for the commands the tests run: tests/warm_python.py's client, which runs them in forks of a server
# that imported torch & co. once (the suite's time was mostly those imports), or execs the real interpreter
# while the server is starting, for what it cannot run, and with SUPCON_TESTS_COLD=1.
REAL_PY = sys.executable
_BIN = tempfile.mkdtemp(prefix="supcon-warm-")
if len(_BIN) > 90:  # a Unix socket's path must fit in 108 bytes
    shutil.rmtree(_BIN)
    _BIN = tempfile.mkdtemp(prefix="supcon-warm-", dir="/tmp")
atexit.register(shutil.rmtree, _BIN, True)
PY = warm_python.install(_BIN)


def cold_env() -> dict:
    """The environment for fresh interpreters: for tests comparing separate processes (a warm server's
    children share its string hash seed)."""
    env = {k: v for k, v in os.environ.items() if k != warm_python.SOCKET_ENV}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != _BIN)
    return env


@pytest.fixture(scope="session", autouse=True)
def warm_python_server():
    if os.environ.get("SUPCON_TESTS_COLD"):
        yield None
        return
    sock = os.path.join(_BIN, "server.sock")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import warm_python; "
            "warm_python.main()")
    with open(os.path.join(_BIN, "server.log"), "w") as log:
        # (OMP_NUM_THREADS=1, above: OpenBLAS would otherwise start threads at import, and a server with
        # threads refuses to fork children that would lack them.)
        server = subprocess.Popen([REAL_PY, "-c", code, sock, str(os.getpid())], cwd=REPO,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    # The clients use the server once its socket is there (after its imports); until then they run cold.
    os.environ[warm_python.SOCKET_ENV] = sock
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")
    yield server
    server.terminate()
    server.wait(timeout=30)
