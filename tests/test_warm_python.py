"""tests/warm_python.py: a command run by the tests' `python` behaves as under the real interpreter."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import warm_python
from conftest import PY, REAL_PY, REPO

pytestmark = pytest.mark.skipif(bool(os.environ.get("SUPCON_TESTS_COLD")), reason="the suite runs cold")

REPORT = ("import json, os, sys; print(json.dumps({'argv': sys.argv, 'cwd': os.getcwd(), 'path0': sys.path[0], "
          "'name': __name__, 'file': globals().get('__file__'), 'env': os.environ.get('WARM_TEST'), "
          "'warm': 'torch' in sys.modules, 'stdin': sys.stdin.read()}))")


@pytest.fixture
def warm(warm_python_server):
    """Waits for this worker's server to have finished its imports."""
    sock = os.environ[warm_python.SOCKET_ENV]
    deadline = time.time() + 180
    while not os.path.exists(sock):
        log = Path(sock).with_name("server.log")
        assert warm_python_server.poll() is None, f"the warm server ended: {log.read_text()[-2000:]}"
        assert time.time() < deadline, "the warm server did not start in 3 minutes"
        time.sleep(0.2)


def call(args, cwd=REPO, env=None, **kw):
    env = {**os.environ, **(env or {})}
    return subprocess.run([PY, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kw)


def test_argv_cwd_environment_streams_and_status_are_the_callers(warm, tmp_path):
    res = call(["-c", REPORT + "; print('to stderr', file=sys.stderr); sys.exit(7)", "a", "b c"], cwd=tmp_path,
               env={"WARM_TEST": "yes"}, input="from stdin")
    assert res.returncode == 7 and res.stderr == "to stderr\n"
    got = json.loads(res.stdout)
    assert got == {"argv": ["-c", "a", "b c"], "cwd": str(tmp_path), "path0": "", "name": "__main__", "file": None,
                   "env": "yes", "warm": True, "stdin": "from stdin"}


def test_a_script_and_a_module_see_what_python_gives_them(warm, tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "tool.py").write_text(REPORT + "\n")
    (tmp_path / "script.py").write_text(REPORT + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = json.loads(call([str(tmp_path / "script.py"), "x"], cwd=elsewhere).stdout)
    assert script["argv"] == [str(tmp_path / "script.py"), "x"] and script["path0"] == str(tmp_path)
    assert script["name"] == "__main__" and script["file"] == str(tmp_path / "script.py") and script["warm"]
    module = json.loads(call(["-m", "pkg.tool", "y"], cwd=tmp_path).stdout)
    assert module["argv"] == [str(tmp_path / "pkg" / "tool.py"), "y"] and module["path0"] == str(tmp_path)
    assert module["name"] == "__main__" and module["warm"]


def test_errors_end_as_under_python(warm):
    res = call(["-c", "def f():\n    raise ValueError('boom')\nf()"])
    assert res.returncode == 1 and res.stderr.startswith("Traceback (most recent call last):\n")
    assert res.stderr.endswith("ValueError: boom\n") and "warm_python" not in res.stderr and "runpy" not in res.stderr
    res = call(["-c", "import sys; sys.exit('error: a message')"])
    assert (res.returncode, res.stderr) == (1, "error: a message\n")
    res = call(["-c", "raise KeyboardInterrupt"])
    assert res.returncode == -signal.SIGINT and "KeyboardInterrupt" in res.stderr


def test_exit_flushes_and_runs_atexit(warm, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered
    code = (f"import atexit, pathlib; atexit.register(pathlib.Path({str(tmp_path / 'atexit')!r}).write_text, 'ran'); "
            "print('buffered')")
    res = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == "buffered\n"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_signals_reach_the_command_and_its_end_is_the_callers(warm, tmp_path):
    handled = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); "
               "print('ready', flush=True); time.sleep(60)")
    for code, expected in ((handled, 143), (handled.replace("signal.signal", "(lambda *a: 0)"), -signal.SIGTERM)):
        proc = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"
        proc.terminate()
        assert proc.wait(timeout=30) == expected


def test_a_killed_caller_takes_the_command_and_what_it_started_with_it(warm, tmp_path):
    pids = tmp_path / "pids"
    code = textwrap.dedent(f"""
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(60)
    """)
    proc = subprocess.Popen([PY, "-c", code])
    deadline = time.time() + 60
    while not (pids.is_file() and pids.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert call(["-c", "pass"]).returncode == 0  # served only after the killed command's group is gone
    for pid in map(int, pids.read_text().split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_what_it_cannot_serve_warm_runs_cold(warm, tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import os; os.environ['WARM_TEST'] = 'sitecustomize ran'\n")
    cold = json.loads(call(["-c", REPORT], env={"PYTHONPATH": str(tmp_path)}).stdout)
    assert cold["env"] == "sitecustomize ran" and not cold["warm"]
    cold = json.loads(call(["-c", REPORT], env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}).stdout)
    assert not cold["warm"]
    res = subprocess.run([PY, "-W", "error", "-c", "print('flags')"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == "flags\n"
    assert subprocess.run([PY, "-"], input="print('stdin program')", capture_output=True, text=True,
                          timeout=60).stdout == "stdin program\n"
    assert REAL_PY == sys.executable and PY != REAL_PY
