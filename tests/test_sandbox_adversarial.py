"""Hostile programs must be contained: the run finishes, each is reported not passed with a reason,
host files survive, nothing connects out and no process is left behind.

All programs run in one parallel batch, as an evaluation would run them, with short time-outs.
"""

from __future__ import annotations

import os
import platform
import socket
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from codepeft.sandbox import Limits, Program, namespaces_available, run_many

MARKER = f"codepeft-hostile-{uuid.uuid4().hex[:8]}"
LIMITS = Limits(cpu_seconds=4, memory_bytes=512 << 20, processes=32, file_size_bytes=1 << 20,
                open_files=64, output_bytes=4096)
TIMEOUT = 3.0
SLEEPER = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{MARKER}'])"
C_LOOP = {"x86_64": b"\xeb\xfe", "aarch64": b"\x00\x00\x00\x14"}.get(platform.machine(), b"")

HOSTILE: dict[str, str] = {
    "fork bomb": "import os\nwhile True:\n    os.fork()\n",
    "memory bomb": "chunks = []\nwhile True:\n    chunks.append(bytearray(50 << 20))\n",
    "infinite loop": "while True:\n    pass\n",
    "busy loop in C via ctypes": f"""
        import ctypes, mmap
        code = {C_LOOP!r}
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        ctypes.CFUNCTYPE(None)(address)()
    """,
    "sleeping children outliving the parent": f"{SLEEPER}\n{SLEEPER}\nimport os\nos._exit(0)\n",
    "detached daemon": f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '{MARKER}'])
            os._exit(0)
        time.sleep(0.3)
        os._exit(0)
    """,
    "write and delete files outside the work directory": """
        import os
        for target in (SENTINEL, os.path.join(os.path.dirname(SENTINEL), "planted.txt")):
            try:
                open(target, "w").write("owned")
            except OSError as err:
                print("write blocked", err)
        os.remove(SENTINEL)
    """,
    "read the user's home": """
        import os, pwd
        for user in pwd.getpwall():
            home = user.pw_dir
            try:
                for name in os.listdir(home):
                    path = os.path.join(home, name)
                    if os.path.isfile(path):
                        print(path, len(open(path, "rb").read()))
            except OSError:
                pass
        raise SystemExit(1)
    """,
    "network connection": """
        import socket
        socket.create_connection(("127.0.0.1", PORT), timeout=1).sendall(b"exfiltrate")
    """,
    "kill the parent process": (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.killpg(0, signal.SIGKILL)\n"),
    "os._exit before the tests": "import os\nos._exit(0)\nassert False\n",
    "huge output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
    "recursion bomb": "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)\n",
    "ignore the time-out signals": """
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGXCPU, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        while True:
            pass
    """,
    "monkey-patch builtins to fake success": """
        import atexit, builtins, os, sys
        builtins.AssertionError = type("Quiet", (Exception,), {})
        builtins.print = lambda *a, **k: None
        sys.excepthook = lambda *a: None
        atexit.register(lambda: os._exit(0))
        assert 1 == 2
    """,
    "thread bomb": "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()\n",
    "sleep past the time-out": "import time\ntime.sleep(60)\n",
    "kill every process it can see": "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)\nassert False\n",
    "fill the disk": "index = 0\nwhile True:\n    index += 1\n    open(f'fill{index}', 'wb').write(b'x' * (1 << 20))\n",
}


@pytest.mark.skipif(not namespaces_available(), reason="needs namespaces")
def test_work_directory_is_bounded_in_size():
    limits = Limits(workdir_bytes=4 << 20)
    outcome = run_many(_programs(["fill the disk"], Path("/nonexistent"), 1), workers=1, timeout=TIMEOUT,
                       limits=limits)[0]
    assert outcome.status == "failed" and "No space left on device" in outcome.reason, outcome


# Work directories of programs in mode rlimits (the isolating modes' live in private mounts): other
# engineers' sandboxes on a shared machine (servers started from a _bootstrap.py file, or programs under
# /dev/shm) are not this test's leftovers.
RLIMITS_WORKDIRS = os.path.join(tempfile.gettempdir(), "codepeft-sbx-")


def _leftovers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if MARKER in cmdline or (proc.cwd().startswith(RLIMITS_WORKDIRS) and "_bootstrap.py" not in cmdline):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _wait_for_no_leftovers(seconds: float = 10.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = []
    for proc in left:
        try:
            described.append(f"{proc.pid} {proc.status()} {proc.cmdline()} ppid={proc.ppid()}")
        except psutil.Error:
            continue
    return described


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


def _accepted(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
        return True
    except BlockingIOError:
        return False


def _programs(names, sentinel: Path, port: int) -> list[Program]:
    programs = []
    for name in names:
        source = textwrap.dedent(HOSTILE[name]).replace("SENTINEL", repr(str(sentinel))).replace("PORT", str(port))
        # What a real evaluation appends: the test that a passing program must reach.
        programs.append(Program(source + "\nimport os as _o\n_o.write(int(_o.environ.pop('CODEPEFT_STATUS_FD')), "
                                "_o.environ.pop('CODEPEFT_NONCE').encode())\n"))
    return programs


def _check_contained(names, mode, tmp_path, listener) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("host data")
    started = time.monotonic()
    outcomes = run_many(_programs(names, sentinel, listener.getsockname()[1]), workers=2, timeout=TIMEOUT,
                        limits=LIMITS, mode=mode)
    elapsed = time.monotonic() - started
    report = {name: (o.status, o.reason) for name, o in zip(names, outcomes, strict=True)}
    for name, outcome in zip(names, outcomes, strict=True):
        assert outcome.status != "passed", f"{name} passed: {report}"
        assert outcome.reason, f"{name} has no reason"
        assert len(outcome.stdout) <= LIMITS.output_bytes + 64
    assert elapsed < len(names) * (TIMEOUT + 2), report
    assert sentinel.read_text() == "host data"
    assert not (tmp_path / "planted.txt").exists()
    assert not _accepted(listener), "a sandboxed program reached a socket on the host"
    left = _wait_for_no_leftovers()
    assert not left, f"processes outlived the sandbox: {left}"


def test_builtin_program_kinds_are_real():
    """Guard against a vacuous suite: a benign program in the same batch passes."""
    ok = _programs(["os._exit before the tests"], Path("/nonexistent"), 1)[0]
    benign = Program(ok.source.replace("os._exit(0)\nassert False\n", "pass\n"))
    outcomes = run_many([benign], workers=1, timeout=TIMEOUT, limits=LIMITS)
    assert outcomes[0].status == "passed", outcomes[0]


@pytest.mark.skipif(not namespaces_available(), reason="unshare namespaces unavailable: rlimits mode tested below")
def test_hostile_programs_are_contained_with_namespaces(tmp_path, listener):
    names = list(HOSTILE)
    if not C_LOOP:
        names.remove("busy loop in C via ctypes")
    _check_contained(names, "namespaces", tmp_path, listener)


@pytest.mark.skipif(not namespaces_available(), reason="needs namespaces")
def test_home_and_listed_directories_are_hidden(tmp_path, monkeypatch):
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.txt").write_text("secret-4711")
    monkeypatch.setenv("CODEPEFT_SANDBOX_HIDE", str(private))
    # Only sizes come out of the sandbox: the test never reads the host's home itself.
    source = textwrap.dedent(f"""
        import os
        print(open({str(private / "secret.txt")!r}).read() if os.path.exists({str(private / "secret.txt")!r}) else "")
        home = {str(Path.home())!r}
        total = 0
        for name in os.listdir(home):
            path = os.path.join(home, name)
            if os.path.isfile(path) and not os.path.islink(path):
                total += len(open(path, "rb").read())
        print("home bytes", total)
        raise SystemExit(1)
    """)
    outcome = run_many([Program(source)], workers=1, timeout=TIMEOUT, limits=LIMITS)[0]
    assert outcome.status == "crashed" and outcome.reason == "exited with status 1"
    assert "secret-4711" not in outcome.stdout
    assert "home bytes 0" in outcome.stdout, outcome.stdout


# The fallback cannot isolate the filesystem, the network or the whole machine's processes, so only
# the hostile programs it can contain run against it (never "kill every process it can see").
FALLBACK_SAFE = [
    "infinite loop", "sleeping children outliving the parent", "detached daemon", "kill the parent process",
    "os._exit before the tests", "huge output", "recursion bomb", "ignore the time-out signals",
    "monkey-patch builtins to fake success", "sleep past the time-out", "memory bomb",
]


def test_rlimits_fallback_contains_processes(tmp_path, listener):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("host data")
    outcomes = run_many(_programs(FALLBACK_SAFE, sentinel, 1), workers=2, timeout=TIMEOUT, limits=LIMITS,
                        mode="rlimits")
    for name, outcome in zip(FALLBACK_SAFE, outcomes, strict=True):
        assert outcome.status != "passed", (name, outcome)
    left = _wait_for_no_leftovers()
    assert not left, f"processes outlived the sandbox: {left}"
