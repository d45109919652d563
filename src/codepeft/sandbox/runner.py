"""Runs programs in the sandbox, one process tree each, many in parallel, and classifies the outcome.

Generated code never runs in codepeft's own process: each program is a file in a fresh temporary work
directory, started through ``isolation.launch_command`` in its own session, killed as a whole on
time-out, and the directory is removed afterwards. A program passes only if it exits with status 0
*and* writes a one-time token on a private file descriptor after its last test, so a program that
calls ``os._exit(0)`` or ``sys.exit()`` before its tests finish does not pass.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil

from codepeft.sandbox.isolation import Limits, Mode, choose_mode, default_workers, launch_command, sandbox_env

Status = Literal["passed", "failed", "timed out", "crashed"]
NONCE_ENV = "CODEPEFT_NONCE"
STATUS_FD_ENV = "CODEPEFT_STATUS_FD"
SANDBOX_ID_ENV = "CODEPEFT_SANDBOX_ID"
NOTICE = "codepeft-sandbox: "

SIGNAL_REASONS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "output or file size limit exceeded",
    signal.SIGKILL: "killed (memory or process limit, or killed itself)",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
}


@dataclass(frozen=True)
class Program:
    """A Python program to run sandboxed: its source, extra files for its work directory, its stdin."""

    source: str
    files: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str
    seconds: float
    stdout: str = ""
    stderr: str = ""
    notices: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, object]:
        return {"status": self.status, "reason": self.reason, "seconds": round(self.seconds, 3)}


def _read_capped(path: Path, cap: int) -> str:
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    text = data[:cap].decode("utf-8", errors="replace")
    return text + "\n[... output cut]" if len(data) > cap else text


def _last_exception(stderr: str) -> str:
    """The final ``Type: message`` line of a traceback, if any."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0].strip()
        if head and head.replace(".", "").replace("_", "").isalnum() and head[0].isupper() and not line.startswith(" "):
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else ""


def _classify(returncode: int, token_ok: bool, stderr: str) -> tuple[Status, str]:
    if returncode == 0 and token_ok:
        return "passed", ""
    if returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return "crashed", f"{name}: {SIGNAL_REASONS.get(sig, 'killed by a signal')}"
    if returncode == 0:
        return "crashed", "exited with status 0 before the tests finished"
    error = _last_exception(stderr)
    if error.startswith(("MemoryError", "RecursionError")):
        return "crashed", error
    if "[Errno 27]" in error:  # Python ignores SIGXFSZ, so the file-size limit surfaces as EFBIG
        return "crashed", f"output or file size limit exceeded ({error})"
    if error.startswith("AssertionError"):
        return "failed", error
    if error:
        return "failed", error
    return "crashed", f"exited with status {returncode}"


def _kill_leftovers(sandbox_id: str) -> None:
    """Kill processes that left the session but still carry this sandbox's id (rlimits mode)."""
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(SANDBOX_ID_ENV) == sandbox_id:
                proc.kill()


def _wait_for_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``proc`` to exit; True if it did.

    A pidfd wakes up the moment the process exits (``Popen.wait(timeout)`` polls with sleeps of up
    to 50 ms, which would cost more than running a short program).
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(pidfd)


def run_program(program: Program, *, timeout: float = 10.0, limits: Limits | None = None,
                mode: Mode | None = None) -> Outcome:
    """Run ``program`` sandboxed and say whether it passed, failed, timed out or crashed, and why."""
    limits = limits or Limits()
    mode = choose_mode(mode)
    nonce = secrets.token_hex(16)
    sandbox_id = secrets.token_hex(8)
    private = Path(tempfile.mkdtemp(prefix="codepeft-run-"))
    workdir = Path(tempfile.mkdtemp(prefix="codepeft-sbx-"))
    started = time.perf_counter()
    try:
        (workdir / "main.py").write_text(program.source, encoding="utf-8")
        for name, text in program.files.items():
            (workdir / name).write_text(text, encoding="utf-8")
        (private / "stdin").write_text(program.stdin or "", encoding="utf-8")
        status_read, status_write = os.pipe()
        os.set_blocking(status_read, False)
        env = sandbox_env({NONCE_ENV: nonce, STATUS_FD_ENV: str(status_write), SANDBOX_ID_ENV: sandbox_id,
                           "HOME": str(workdir), "TMPDIR": str(workdir)})
        command = launch_command(mode, workdir, "main.py", limits)
        with open(private / "stdin", "rb") as stdin, open(private / "stdout", "wb") as stdout, \
                open(private / "stderr", "wb") as stderr:
            try:
                proc = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=stderr, cwd=workdir,
                                        start_new_session=True, pass_fds=(status_write,), close_fds=True,
                                        env=env)
            finally:
                os.close(status_write)
            try:
                timed_out = not _wait_for_exit(proc, timeout)
            finally:
                # The session holds the program and, in namespaces mode, the PID namespace's init,
                # whose death takes every other process in the namespace with it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
                if mode == "rlimits":
                    _kill_leftovers(sandbox_id)
        seconds = time.perf_counter() - started
        try:
            token = os.read(status_read, 4096).decode(errors="replace")
        except BlockingIOError:
            token = ""
        finally:
            os.close(status_read)
        out = _read_capped(private / "stdout", limits.output_bytes)
        err_full = _read_capped(private / "stderr", limits.output_bytes)
        notices = tuple(line[len(NOTICE):] for line in err_full.splitlines() if line.startswith(NOTICE))
        err = "\n".join(line for line in err_full.splitlines() if not line.startswith(NOTICE))
        for notice in notices:
            if notice.startswith("signal "):
                returncode = -int(notice.split()[1])
        notices = tuple(n for n in notices if not n.startswith("signal "))
        if timed_out:
            status, reason = "timed out", f"wall-clock time-out after {timeout:g} s"
        else:
            status, reason = _classify(returncode, token == nonce, err)
        return Outcome(status, reason, seconds, out, err, notices)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


def run_many(programs: Sequence[Program], *, workers: int | None = None, timeout: float = 10.0,
             limits: Limits | None = None, mode: Mode | None = None,
             on_done: Callable[[int], None] | None = None) -> list[Outcome]:
    """Run programs in parallel (one worker per core by default), each in its own sandbox, in order."""
    mode = choose_mode(mode)
    workers = workers or default_workers()

    def one(program: Program) -> Outcome:
        outcome = run_program(program, timeout=timeout, limits=limits, mode=mode)
        if on_done is not None:
            on_done(1)
        return outcome

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, programs))
