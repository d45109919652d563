"""Runs programs in the sandbox, one process tree each, many in parallel, and classifies the outcome.

Generated code never runs in codepeft's own process: each worker owns a sandbox server (see
``_bootstrap.py``) that forks every program, written to a fresh work directory, into its own session
and namespaces; the session is killed as a whole on time-out and the directory removed afterwards.
A program passes only if it exits with status 0 *and* writes a one-time token on a private file
descriptor after its last test, so a program that calls ``os._exit(0)`` or ``sys.exit()`` before its
tests finish does not pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil

from codepeft.sandbox.cgroups import WorkerGroup, create_worker_group
from codepeft.sandbox.isolation import Limits, Mode, choose_mode, default_workers, sandbox_env, server_command

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
    """A Python program to run sandboxed: its source, extra files for its work directory, its stdin, and
    its own wall-clock time-out when it needs another than the batch's (several timed tests in one)."""

    source: str
    files: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None
    timeout: float | None = None


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


def _tail(path: Path, size: int = 4096) -> str:
    """The end of a file (the sandbox's own notices come last, after any amount of program output)."""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read().decode("utf-8", errors="replace")


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\b.*")


def _last_exception(stderr: str) -> str:
    """The final ``SomeError: message`` line of a traceback, or "" when there is none."""
    marker = "Traceback (most recent call last):"
    if marker in stderr:
        after = stderr[stderr.rindex(marker) + len(marker):].splitlines()
        unindented = [line for line in after if line.strip() and not line[0].isspace()]
        if unindented:
            return unindented[-1].strip()[:300]
    for line in reversed(stderr.strip().splitlines()):
        if EXCEPTION_LINE.match(line):
            return line.strip()[:300]
    return ""


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


def _base_parent(mode: Mode) -> str | None:
    """Where servers keep programs' files: RAM (/dev/shm) with namespaces, where each program's writes
    are confined to its own size-limited tmpfs; the temporary directory otherwise."""
    shm = Path("/dev/shm")
    if mode == "namespaces" and shm.is_dir() and os.access(shm, os.W_OK):
        return str(shm)
    return None


#: processes and memory a worker's control group allows beyond one program's limits (the server, the init)
GROUP_SPARE_PROCESSES = 8
GROUP_SPARE_MEMORY = 256 << 20


class SandboxServer:
    """One sandbox server process (``_bootstrap.py``): runs one program at a time, each isolated.

    With ``limits``, the server and everything it forks live in a control group of their own
    (``cgroups.py``) where the machine allows it: a fair share of the CPU, and the group's processes
    and memory capped at one program's limits plus the server's needs.
    """

    def __init__(self, mode: Mode, limits: Limits | None = None) -> None:
        self.mode = mode
        self.group: WorkerGroup | None = None
        if limits is not None:
            self.group = create_worker_group(
                (limits.processes + GROUP_SPARE_PROCESSES) if limits.processes else None,
                (limits.memory_bytes + GROUP_SPARE_MEMORY) if limits.memory_bytes else None)
        # Every program's work directory and output files live under this base, the only place the
        # server keeps writable.
        self.base = Path(tempfile.mkdtemp(prefix="codepeft-sbx-", dir=_base_parent(mode)))
        self.proc = subprocess.Popen(server_command(mode, self.base), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=sandbox_env({}), start_new_session=True, close_fds=True)
        if self.group is not None:
            try:
                self.group.add(self.proc.pid)  # before the first request: every program forks from inside the group
            except OSError:
                self.group.close()
                self.group = None
        self._replies = self.proc.stdout
        self._pending = b""
        self._trash: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._cleaner: threading.Thread | None = None

    def discard(self, directory: Path) -> None:
        """Remove a finished program's directory; a background thread does it, off the critical path."""
        if self._cleaner is None:
            self._cleaner = threading.Thread(target=self._clean, daemon=True)
            self._cleaner.start()
        self._trash.put(directory)

    def _clean(self) -> None:
        while (directory := self._trash.get()) is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _reply(self, timeout: float | None) -> str | None:
        """The next reply line, or None if none came within ``timeout`` seconds.

        Replies are read from the raw pipe into our own buffer: "started" and "done" often arrive
        together, and a buffered reader would hold "done" where polling the pipe cannot see it.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        fd = self._replies.fileno()
        while b"\n" not in self._pending:
            if deadline is not None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the sandbox server exited")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode().strip()

    def run(self, request: dict[str, object], timeout: float) -> tuple[int, bool]:
        """Run one request; returns (wait status, timed out). The process group is killed either way."""
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        started = self._reply(None)
        pid = int(started.split()[1])
        done = self._reply(timeout)
        timed_out = done is None
        if timed_out:
            # The child's session holds the namespace's init, whose death takes every process in the
            # namespace with it. (A child that finished has already cleared its own session.)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            done = self._reply(None)
        return int(done.split()[1]), timed_out

    def close(self) -> None:
        if self._cleaner is not None:
            self._trash.put(None)
            self._cleaner.join()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        if self.group is not None:
            self.group.close()
        shutil.rmtree(self.base, ignore_errors=True)


def _returncode(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _run_on(server: SandboxServer, program: Program, timeout: float, limits: Limits) -> Outcome:
    timeout = program.timeout or timeout
    nonce = secrets.token_hex(16)
    sandbox_id = secrets.token_hex(8)
    private = Path(tempfile.mkdtemp(prefix="run-", dir=server.base))
    workdir = private / "work"
    workdir.mkdir()
    started = time.perf_counter()
    try:
        (workdir / "main.py").write_text(program.source, encoding="utf-8")
        for name, text in program.files.items():
            (workdir / name).write_text(text, encoding="utf-8")
        (private / "stdin").write_text(program.stdin or "", encoding="utf-8")
        for name in ("stdout", "stderr", "status"):
            (private / name).touch()
        env = sandbox_env({NONCE_ENV: nonce, STATUS_FD_ENV: "3", SANDBOX_ID_ENV: sandbox_id,
                           "HOME": str(workdir), "TMPDIR": str(workdir)})
        request = {"workdir": str(workdir.resolve()), "script": "main.py", "env": env, "limits": limits.rlimits(),
                   "workdir_bytes": limits.workdir_bytes,
                   **{name: str(private / name) for name in ("stdin", "stdout", "stderr", "status")}}
        try:
            status, timed_out = server.run(request, timeout)
        finally:
            if server.mode == "rlimits":
                if server.group is not None:  # the group knows every process the program left
                    server.group.kill(keep={server.proc.pid})
                else:
                    _kill_leftovers(sandbox_id)
        seconds = time.perf_counter() - started
        returncode = _returncode(status)
        token = (private / "status").read_text(errors="replace")[:64]
        out = _read_capped(private / "stdout", limits.output_bytes)
        err_full = _read_capped(private / "stderr", limits.output_bytes)
        notices = [line[len(NOTICE):] for line in (err_full + "\n" + _tail(private / "stderr")).splitlines()
                   if line.startswith(NOTICE)]
        err = "\n".join(line for line in err_full.splitlines() if not line.startswith(NOTICE)).rstrip("\n")
        # How the program ended: its parent reports a death by signal, the session leader the status.
        signals = [n for n in notices if n.startswith("signal ")]
        exits = [n for n in notices if n.startswith("exit ")]
        if signals:
            returncode = -int(signals[0].split()[1])
        elif exits:
            returncode = int(exits[-1].split()[1])
        notices = [n for n in notices if not n.startswith(("signal ", "exit "))]
        if timed_out:
            outcome, reason = "timed out", f"wall-clock time-out after {timeout:g} s"
        else:
            outcome, reason = _classify(returncode, token == nonce, err)
        return Outcome(outcome, reason, seconds, out, err, tuple(notices))
    finally:
        server.discard(private)


def run_program(program: Program, *, timeout: float = 10.0, limits: Limits | None = None,
                mode: Mode | None = None) -> Outcome:
    """Run ``program`` sandboxed and say whether it passed, failed, timed out or crashed, and why."""
    return run_many([program], workers=1, timeout=timeout, limits=limits, mode=mode)[0]


def run_many(programs: Sequence[Program], *, workers: int | None = None, timeout: float = 10.0,
             limits: Limits | None = None, mode: Mode | None = None,
             on_done: Callable[[int], None] | None = None) -> list[Outcome]:
    """Run programs in parallel (one worker per core by default), each in its own sandbox, in order.

    Each worker owns one sandbox server; a server that dies is replaced and its program reported
    as crashed, so one program can never take another's result with it.
    """
    mode = choose_mode(mode)
    limits = limits or Limits()
    workers = max(1, min(workers or default_workers(), len(programs) or 1))
    idle: queue.SimpleQueue[SandboxServer] = queue.SimpleQueue()
    servers: list[SandboxServer] = []
    lock = threading.Lock()

    def one(program: Program) -> Outcome:
        try:
            server = idle.get_nowait()
        except queue.Empty:
            server = SandboxServer(mode, limits)
            with lock:
                servers.append(server)
        try:
            outcome = _run_on(server, program, timeout, limits)
        except (RuntimeError, OSError, ValueError) as err:
            server.close()
            outcome = Outcome("crashed", f"sandbox server failed: {err}", 0.0)
        else:
            idle.put(server)
        if on_done is not None:
            on_done(1)
        return outcome

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, programs))
    finally:
        for server in servers:
            server.close()
