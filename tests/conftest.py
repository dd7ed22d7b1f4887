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
# tests run (training runs, mostly, in the worker's process) use one thread of arithmetic instead of competing
# for both cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The longest test first (marked `first`), then the other slow ones, then the rest: a long test handed out
    late would run alone at the end while the other worker idles (the suite's two workers, pytest.ini)."""
    items.sort(key=lambda item: (item.get_closest_marker("first") is None, item.get_closest_marker("slow") is None))


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


def command(args: list[str], timeout: int | None = None) -> Result:
    """A command as a user types it, `python SCRIPT.py ARGS` or `python -m MODULE ARGS` (args without the
    `python`), run in this process: the script's main(argv), as `cli`. (timeout: accepted, unused.)"""
    import importlib
    if args[0] == "-m":
        name, argv = args[1], args[2:]
        module = importlib.import_module(name)
        if hasattr(module, "__path__"):  # a package: its __main__
            module = importlib.import_module(f"{name}.__main__")
    else:
        name, argv = args[0].removesuffix(".py").replace("/", "."), args[1:]
        module = importlib.import_module(name)
    return cli(module.main, *argv)


def train_and_evaluate(method: str, *args) -> Result:
    """What `bash train_<method>_model.sh ARGS` does (train, then evaluate; SupCon-MPL's teacher too), in this
    process: for tests of what is trained, not of the wrapper (test_cli.py runs the wrappers themselves)."""
    results = [command([f"train_{method}.py", *args])]
    if results[0].returncode == 0:
        for evaluated in (["supcon", "supconmpl"] if method == "supconmpl" else [method]):
            results.append(command(["evaluate.py", "--method", evaluated, *args]))
    code = next((r.returncode for r in results if r.returncode), 0)
    return Result(code, "".join(r.stdout for r in results), "".join(r.stderr for r in results))


def run(args: list[str], cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command in its own process, from the repository root: for what the process boundary is
    (the .sh wrappers, torchrun, signals, locks held by another process, separate interpreters)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


PY = sys.executable


def check_page(page, images, words):
    """A self-contained page: every plot embedded and a real PNG, nothing fetched from elsewhere; where a
    headless Chromium exists, it renders the page."""
    import base64
    import io
    import re
    import shutil
    from PIL import Image
    text = page.read_text()
    found = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)">', text)
    assert len(found) == images and all(Image.open(io.BytesIO(base64.b64decode(b))).size[0] > 300 for b in found)
    assert "http" not in re.sub(r"data:image/png;base64,[^\"]+", "", text)
    assert all(w in text for w in words), [w for w in words if w not in text]
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser:
        render_in_browser(browser, page, images)


def render_in_browser(browser: str, page, images: int) -> None:
    """Open the page in headless Chromium: a copy with a probe script counts the images the browser decoded
    (complete, with a width), and a screenshot of the page itself lies beside it (<page>.screenshot.png) to look at."""
    import re
    import subprocess
    import tempfile
    import warnings
    from PIL import Image
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile:
        probe = Path(profile) / "probe.html"  # the page's images are embedded: the copy can lie anywhere
        probe.write_text(page.read_text().replace("</body>", (
            "<script>window.addEventListener('load', () => { const i = [...document.images];"
            " document.title = 'decoded ' + i.filter(x => x.complete && x.naturalWidth > 0).length + '/' + i.length;"
            " });</script></body>")))
        dom = subprocess.run([browser, *flags, f"--user-data-dir={profile}/user", "--virtual-time-budget=10000",
                              "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
        if "<html" not in dom.stdout:  # the browser itself did not run here (not the page's fault): a warning in
            # the summary, and the test goes on (it may check more after the page)
            warnings.warn(f"{browser} did not start, {page.name} not rendered: "
                          f"{dom.stderr.strip().splitlines()[-1:] or dom.returncode}")
            return
        decoded = re.search(r"<title>decoded (\d+)/(\d+)</title>", dom.stdout)
        assert decoded and decoded.groups() == (str(images), str(images)), (decoded, dom.stderr[-2000:])
    with tempfile.TemporaryDirectory() as profile:
        shot = page.with_suffix(".screenshot.png")
        subprocess.run([browser, *flags, f"--user-data-dir={profile}", f"--screenshot={shot}",
                        "--window-size=1200,3000", page.as_uri()], capture_output=True, timeout=120)
        with Image.open(shot) as picture:
            assert picture.size == (1200, 3000)
