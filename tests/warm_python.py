"""A warm Python for the commands the tests run: `python ...` forked from a process that already imported torch.

Most of the suite's time on a small CPU machine went to starting Python: each command the tests run (a
training run, an evaluation, a one-line error) spent ~7 s importing torch, torchvision (which imports
torch._dynamo) and timm, and ~1 s tearing them down at exit, around a second of work; the suite starts a few
hundred of them. Here a server process imports those libraries once (third-party libraries only, nothing of
this repository), and each command is a fork of it that then runs like `python`: the command line, working
directory, environment, standard streams, signals and exit status are those of the caller; at its end
threads are joined, atexit functions run and streams flushed, and the modules are not torn down.

Pieces:
  serve(socket)    the server (one per pytest worker, started by conftest): forks a child per request,
                   reports the child's pid and how it ended; kills the child's process group when the caller
                   goes away (killed with SIGKILL, say), before it serves anything else;
  become, main     in the child: the caller's fds, directory, environment and sys.path, then the program
                   run as CPython runs a script, `-m` or `-c`, and its end (status, traceback) as CPython's;
  client (`bin/python`, `bin/python3`, written by `install`)
                   what the tests and the shell scripts run as `python`: sends its argv, cwd, environment
                   and fds 0-2 to the server, forwards the signals it gets, and exits as the child did.
                   Anything it does not understand (`-X`, `-W`, stdin as the program, no server) it hands
                   to the real interpreter with exec.

Where a warm command differs from a fresh interpreter:
  - it shares the server's string hash seed with its siblings, and the modules the server imported (torch &
    co., initialised with the server's environment): a command asking for other start-up settings
    (PYTHON*, HF_*, TORCH*, OMP_* ... see _needs_cold) runs cold, and so do tests comparing separate
    processes for determinism (conftest.cold_env);
  - its pid is not the pid of the process the caller started, and it leads its own process group (a
    SIGKILL of the caller or its group reaches it through the server): tests about pids run cold;
  - code of ours that used torchvision or timm without importing them would work here only.
SUPCON_TESTS_COLD=1 runs the whole suite with fresh interpreters.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys

SOCKET_ENV = "SUPCON_WARM_PYTHON"
_HERE = os.path.abspath(__file__)
PRELOAD = ("numpy", "yaml", "PIL.Image", "cv2", "torch", "torch.nn.functional", "torchvision",
           "torchvision.transforms.v2", "timm", "tqdm")
# Signals a caller forwards to its child (SIGKILL cannot be caught: the server sees the caller's socket close).
FORWARD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

CLIENT = '''#!{python} -SE
# The tests' `python` (tests/warm_python.py): runs the command in a fork of a warm server, or execs the real one.
import sys
sys.path.insert(0, {tests!r})
import warm_python
warm_python.client({python!r})
'''


def _send_msg(sock: socket.socket, obj, fds=()) -> None:
    data = json.dumps(obj).encode()
    if fds:
        socket.send_fds(sock, [struct.pack("!I", len(data)) + data], list(fds))
    else:
        sock.sendall(struct.pack("!I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int, fds: list | None = None) -> bytes:
    buf = b""
    while len(buf) < n:
        if fds is not None and not buf:
            chunk, got, _, _ = socket.recv_fds(sock, n - len(buf), 8)
            fds.extend(got)
        else:
            chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _recv_msg(sock: socket.socket, fds: list | None = None):
    (size,) = struct.unpack("!I", _recv_exact(sock, 4, fds))
    return json.loads(_recv_exact(sock, size))


# ---------------------------------------------------------------------------------------------- client
def _parse(argv: list[str]) -> dict | None:
    """The subset of the interpreter's command line a warm child can run: [-u] [-B] (script | -m mod | -c code)
    args. None for anything else (the real interpreter runs it)."""
    unbuffered = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-u":
            unbuffered = True
        elif arg == "-B":
            pass
        elif arg in ("-m", "-c") and i + 1 < len(argv):
            return {"kind": arg[1], "target": argv[i + 1], "args": argv[i + 2:], "unbuffered": unbuffered}
        elif arg.startswith("-"):
            return None
        else:
            return {"kind": "script", "target": arg, "args": argv[i + 1:], "unbuffered": unbuffered}
        i += 1
    return None  # no program: an interactive interpreter or a program on stdin


def client(python: str) -> None:
    argv = sys.argv[1:]
    cmd = _parse(argv)
    path = os.environ.get(SOCKET_ENV)
    sock = None
    if cmd is not None and path:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
        except OSError:
            sock = None
    if sock is None:
        os.execv(python, [python, *argv])
    try:
        _send_msg(sock, {"cmd": cmd, "cwd": os.getcwd(), "env": dict(os.environ)}, fds=(0, 1, 2))
    except OSError:  # a standard stream closed, say
        os.execv(python, [python, *argv])
    try:
        reply = _recv_msg(sock)
    except EOFError:  # the server ended before starting the command: the real interpreter runs it
        os.execv(python, [python, *argv])
    if reply.get("cold"):
        os.execv(python, [python, *argv])
    pid = reply["pid"]

    def forward(signum, frame):
        os.kill(pid, signum)
    for s in FORWARD:
        signal.signal(s, forward)
    try:  # (a forwarded signal does not interrupt the wait: Python retries the read, PEP 475)
        end = _recv_msg(sock)
    except EOFError:
        sys.stderr.write("tests/warm_python.py: the server went away while the command ran\n")
        os._exit(1)
    if end.get("signal"):  # end as the child did: killed by the same signal
        signal.signal(end["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), end["signal"])
    os._exit(end["code"])


def install(bin_dir: str) -> str:
    """Writes the `python` / `python3` clients into bin_dir; returns the path of `python`."""
    os.makedirs(bin_dir, exist_ok=True)
    text = CLIENT.format(python=sys.executable, tests=os.path.dirname(_HERE))
    for name in ("python", "python3"):
        path = os.path.join(bin_dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
    return os.path.join(bin_dir, "python")


# ---------------------------------------------------------------------------------------------- server
def serve(path: str, parent: int) -> dict:
    """Preloads, then serves requests until the parent (the pytest worker) is gone. Returns only in a child,
    with its request; the server itself ends with sys.exit."""
    import importlib
    global _START_ENV, _PRELOAD_ENV
    _START_ENV = dict(os.environ)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    # What the imports set in the environment (cv2: LD_LIBRARY_PATH, torchvision: TORCHINDUCTOR_CACHE_DIR) is
    # set again in each child's environment, as a fresh interpreter importing them would have it.
    _PRELOAD_ENV = {k: v for k, v in os.environ.items() if _START_ENV.get(k) != v}
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threads != 1:  # a fork keeps only the calling thread: refuse rather than hand out broken children
        sys.exit(f"tests/warm_python.py: {threads} threads after the imports; run the tests cold")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # callers connect only once the imports are done
    children: dict[int, socket.socket] = {}

    def end(pid: int, status: int) -> None:
        conn = children.pop(pid, None)
        if conn is None:
            return
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        try:
            _send_msg(conn, {"code": os.waitstatus_to_exitcode(status) if not sig else 1, "signal": sig})
        except OSError:
            pass
        conn.close()

    # Orphans of the children (the processes of a killed command's group) are reparented here and reaped.
    _prctl_subreaper()
    wake_r, wake_w = os.pipe()  # SIGCHLD wakes the select up: a command's end is reported at once
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    while os.getppid() == parent:
        ready, _, _ = select.select([listener, wake_r, *children.values()], [], [], 1.0)
        if wake_r in ready:
            os.read(wake_r, 512)
        # A caller that went away (killed, SIGKILL included): its command's process group is killed before
        # anything else is served, as the real processes would have been dead already.
        gone = [pid for pid, conn in children.items() if conn in ready and _closed(conn)]
        for pid in gone:
            _kill_group(pid, end)
        _reap(end)
        if gone or listener not in ready:
            continue  # (their children's callers may be gone now too: look again before serving)
        conn, _ = listener.accept()
        fds: list[int] = []
        try:
            request = _recv_msg(conn, fds)
        except (EOFError, OSError):
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        if _needs_cold(request["env"]):
            try:
                _send_msg(conn, {"cold": True})
            except OSError:
                pass
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for sock in (listener, conn, *children.values()):
                sock.close()
            os.close(wake_r)
            os.close(wake_w)
            request["fds"] = fds
            return request
        for fd in fds:
            os.close(fd)
        children[pid] = conn
        try:
            _send_msg(conn, {"pid": pid})
        except OSError:  # the caller is gone already: the next look kills the command
            pass
    for pid in list(children):
        _kill_group(pid, end)
    sys.exit(0)


def _closed(conn: socket.socket) -> bool:
    try:
        return not conn.recv(1)
    except OSError:
        return True


def _reap(ended) -> None:
    """Reaps every child that has ended (commands, and orphans reparented here), reporting each to ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ended(pid, status)


def _kill_group(pid: int, ended, timeout: float = 10.0) -> None:
    """SIGKILL to a command's process group (each command leads its own), then waits until it is empty."""
    import time
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        ended(pid, os.waitpid(pid, 0)[1])
    except ChildProcessError:  # reaped already (while waiting for another group)
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        _reap(ended)
        time.sleep(0.005)


def _prctl_subreaper() -> None:
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


# Settings read when the interpreter or the preloaded libraries start (huggingface_hub, imported by timm, reads
# HF_HOME and HF_HUB_OFFLINE then): a command asking for other values than the server's runs cold (a PYTHONPATH
# with a sitecustomize that injects a fault, empty weight caches, say).
_STARTUP_PREFIXES = ("PYTHON", "HF_", "HUGGINGFACE", "XDG_", "TORCH", "OMP_", "MKL_", "OPENBLAS_", "CUDA", "LD_")
_START_ENV: dict = {}    # the server's environment before its imports
_PRELOAD_ENV: dict = {}  # what they added to it


def _needs_cold(env: dict) -> bool:
    keys = {k for k in (*env, *_START_ENV, *_PRELOAD_ENV)
            if (k.startswith(_STARTUP_PREFIXES) or k == "HOME") and k != "PYTHONUNBUFFERED"}
    # (the caller may have imported cv2 or torchvision itself, which set LD_LIBRARY_PATH and
    # TORCHINDUCTOR_CACHE_DIR as they did here)
    return any(env.get(k) not in (_START_ENV.get(k), _PRELOAD_ENV.get(k, _START_ENV.get(k))) for k in keys)


def _stdio(fd: int, write: bool, unbuffered: bool, like) -> object:
    """A standard stream as the interpreter makes it at start-up (Python >= 3.9: stderr line-buffered)."""
    import io
    raw = io.FileIO(fd, "w" if write else "r", closefd=False)
    if write and unbuffered:
        buf = raw
    else:
        buf = io.BufferedWriter(raw) if write else io.BufferedReader(raw)
    line = fd == 2 or (fd == 1 and raw.isatty())
    return io.TextIOWrapper(buf, encoding=like.encoding, errors=like.errors, line_buffering=line,
                            write_through=write and unbuffered)


def become(request: dict, base_path: list[str]) -> None:
    """In a forked child: take the caller's fds, cwd, environment and command line, then run the program
    as `python` would (its exceptions and SystemExit propagate to main, which ends the process as CPython)."""
    import importlib
    import random
    import runpy
    import tempfile
    os.setsid()  # its own process group: killing the caller kills the command and what it started (server)
    fds = request["fds"]
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(s, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(_PRELOAD_ENV)
    cmd = request["cmd"]
    unbuffered = cmd["unbuffered"] or bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = sys.__stdin__ = _stdio(0, False, False, sys.__stdin__)
    sys.stdout = sys.__stdout__ = _stdio(1, True, unbuffered, sys.__stdout__)
    sys.stderr = sys.__stderr__ = _stdio(2, True, unbuffered, sys.__stderr__)
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if cmd["kind"] == "script":
        first = os.path.dirname(os.path.realpath(cmd["target"]))
    else:
        first = os.getcwd() if cmd["kind"] == "m" else ""
    sys.path[:] = [first, *extra, *base_path]
    importlib.invalidate_caches()
    tempfile.tempdir = None
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    # The server's own __main__ (its `-c` line) is the program's, emptied, as in a fresh interpreter.
    main = vars(sys.modules["__main__"])
    for key in [k for k in main if k not in ("__builtins__", "__name__")]:
        del main[key]
    main.update(__doc__=None, __package__=None, __spec__=None)
    if cmd["kind"] == "script" and os.path.isfile(cmd["target"]) and cmd["target"].endswith(".py"):
        # As CPython runs a script: in the __main__ module, __file__ absolute, argv[0] as given.
        from importlib.machinery import SourceFileLoader
        path = os.path.abspath(cmd["target"])
        sys.argv = [cmd["target"], *cmd["args"]]
        main.update(__file__=path, __cached__=None, __loader__=SourceFileLoader("__main__", path))
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec")
        exec(code, main)
    elif cmd["kind"] == "script":  # a directory or a zip file with a __main__.py
        sys.argv = [cmd["target"], *cmd["args"]]
        runpy.run_path(cmd["target"], run_name="__main__")
    elif cmd["kind"] == "m":
        sys.argv = ["-m", *cmd["args"]]  # runpy puts the module's file in argv[0], as `python -m` does
        runpy._run_module_as_main(cmd["target"], alter_argv=True)
    else:
        sys.argv = ["-c", *cmd["args"]]
        exec(compile(cmd["target"], "<string>", "exec"), vars(sys.modules["__main__"]))


def _finish(code: int, interrupted: bool = False) -> None:
    """The interpreter's exit, without tearing down the modules (a second with torch loaded, for nothing):
    non-daemon threads joined, atexit functions (weakref finalizers among them), streams flushed."""
    import atexit
    import threading
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # as CPython ends on an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _report(exc: BaseException) -> None:
    """Prints an uncaught exception as the interpreter does, without this module's and runpy's frames."""
    import runpy
    ours = {_HERE, os.path.abspath(runpy.__file__), "<frozen runpy>"}
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)  # (the hook prints the exception's own traceback)


def main() -> None:
    """`python -c "import warm_python; warm_python.main()" SOCKET PARENT_PID` (conftest starts it)."""
    path, parent = sys.argv[1], int(sys.argv[2])
    own = {"", os.path.dirname(_HERE)}
    own |= {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    base = [p for p in sys.path if p not in own]
    request = serve(path, parent)
    try:
        become(request, base)
    except SystemExit as exc:  # as the interpreter reads it: None is 0, an int the status, anything else printed
        if exc.code is None or isinstance(exc.code, int):
            _finish(exc.code or 0)
        print(exc.code, file=sys.stderr)
        _finish(1)
    except KeyboardInterrupt as exc:
        _report(exc)
        _finish(1, interrupted=True)
    except BaseException as exc:
        _report(exc)
        _finish(1)
    _finish(0)
