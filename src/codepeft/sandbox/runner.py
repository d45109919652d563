"""Runs programs in the sandbox, one isolated process tree each, many in parallel, and classifies the outcome.

Generated code never runs in codepeft's own process: each worker owns a sandbox server (see
``_bootstrap.py`` and ``isolation.py``) that forks every program into namespaces of its own, with its
files in a private tmpfs, and kills what is left of it afterwards. A program with a *checker* (call-,
assert- and standard-input tests) passes only on the verdict of the checker process, which runs the tests
and never the candidate's code; any other program passes only if it exits with status 0 *and* writes
a one-time token on a private file descriptor after its last test, so ``os._exit(0)`` or ``sys.exit()``
before the tests finish does not pass.
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
from typing import Any, Literal

import psutil

from codepeft.sandbox.cgroups import WorkerGroup, create_worker_group
from codepeft.sandbox.isolation import Limits, Mode, choose_mode, default_workers, sandbox_env, server_command

Status = Literal["passed", "failed", "timed out", "crashed"]
NONCE_ENV = "CODEPEFT_NONCE"
STATUS_FD_ENV = "CODEPEFT_STATUS_FD"
SANDBOX_ID_ENV = "CODEPEFT_SANDBOX_ID"
#: seconds a server may take beyond a program's time-out to answer before it is killed and replaced
SERVER_GRACE = 10.0
SERVER_START = 60.0

SIGNAL_REASONS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "output or file size limit exceeded",
    signal.SIGKILL: "killed (memory or process limit, or killed itself)",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
}


@dataclass(frozen=True)
class Program:
    """A Python program to run sandboxed: its source, extra files for its work directory, its stdin, its
    own wall-clock time-out when it needs another than the batch's (several timed tests in one), and
    optionally a ``checker``: test code run in a separate process that never runs the program's code and
    alone decides the verdict (``{"code": ..., "prelude": ..., "remote": [...], "link": bool}``, see
    ``_bootstrap.check``); the program then answers the checker's calls with plain values."""

    source: str
    files: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None
    timeout: float | None = None
    checker: dict[str, Any] | None = None


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


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\b.*")
CUT = "\n[... output cut]"


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


def _label(error: str) -> tuple[Status, str]:
    """The status an exception's last line stands for: a failed test, or a crash for resource limits."""
    if error.startswith("MemoryError"):
        return "crashed", error
    if "[Errno 27]" in error:  # Python ignores SIGXFSZ, so the file-size limit surfaces as EFBIG
        return "crashed", f"output or file size limit exceeded ({error})"
    return "failed", error  # RecursionError included: an exception like any other, its reason kept


def _classify(returncode: int | None, token_ok: bool, stderr: str) -> tuple[Status, str]:
    if returncode is None:
        return "crashed", "the sandbox could not run the program"
    if returncode == 0 and token_ok:
        return "passed", ""
    if returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return "crashed", f"{name}: {SIGNAL_REASONS.get(sig, 'killed by a signal')}"
    if returncode == 0:
        return "crashed", "exited with status 0 before the tests finished"
    error = _last_exception(stderr)
    if error:
        return _label(error)
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


#: processes and memory a worker's control group allows beyond one program's limits (server, checker, inits)
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
        self._pending = b""
        # Tests go to the server's checker parent on a pipe of their own, never through the server (whose
        # memory every program inherits).
        spec_read, self._specs = os.pipe()
        try:
            self.proc = subprocess.Popen(server_command(mode, spec_read), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=sandbox_env({}), start_new_session=True,
                                         close_fds=True, pass_fds=(spec_read,))
        finally:
            os.close(spec_read)
        self._replies = self.proc.stdout
        hello = self._reply(SERVER_START)
        if hello is None:
            self.kill()
            raise RuntimeError(f"the sandbox server (mode {mode}) did not start")
        self.notices: list[str] = json.loads(hello).get("notices", [])
        if mode == "rlimits":
            self.notices.append("mode rlimits is NOT isolation: generated code could read and write the host's "
                                "files and reach its network (install bubblewrap)")
        if limits is not None:
            self.group = create_worker_group(
                (limits.processes + GROUP_SPARE_PROCESSES) if limits.processes else None,
                (limits.memory_bytes + GROUP_SPARE_MEMORY) if limits.memory_bytes else None)
        if self.group is not None:
            try:  # the server is idle: every program it forks later starts inside the group
                for pid in self._tree():
                    self.group.add(pid)
            except OSError:
                self.group.close()
                self.group = None

    def _tree(self) -> list[int]:
        try:
            root = psutil.Process(self.proc.pid)
            return [self.proc.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.Error:
            return [self.proc.pid]

    def _reply(self, timeout: float | None) -> str | None:
        """The next reply line, or None if none came within ``timeout`` seconds.

        Replies are read from the raw pipe into our own buffer, so polling the pipe never misses a
        line a buffered reader would already hold.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        fd = self._replies.fileno()
        while b"\n" not in self._pending:
            if deadline is not None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise RuntimeError("the sandbox server exited")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode().strip()

    def run(self, request: dict[str, object], timeout: float, checker: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one request; the server enforces ``timeout`` itself (a server that does not answer is killed)."""
        self.proc.stdin.write(json.dumps({**request, "checker": checker is not None}).encode() + b"\n")
        self.proc.stdin.flush()
        if checker is not None:
            data = json.dumps({"checker": checker, "timeout": timeout, "limits": request["limits"]}).encode() + b"\n"
            while data:
                data = data[os.write(self._specs, data):]
        line = self._reply(timeout + SERVER_GRACE)
        if line is None:
            self.kill()
            raise TimeoutError(f"the sandbox server did not answer within {timeout + SERVER_GRACE:g} s")
        return json.loads(line)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc.stdout.close()
        with contextlib.suppress(OSError):
            os.close(self._specs)
        if self.group is not None:
            self.group.close()
            self.group = None


def _returncode(wait_status: int | None) -> int | None:
    if wait_status is None:
        return None
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _verdict_outcome(reply: dict[str, Any], returncode: int | None, stderr: str) -> tuple[Status, str]:
    verdict = reply["verdict"]
    if verdict is None:
        return "crashed", "the checker ended without a verdict"
    if verdict.get("passed") is True:
        return "passed", ""
    if verdict.get("gone"):  # the program ended during the tests: say how
        status, reason = _classify(returncode, False, stderr)
        return status, reason or str(verdict.get("reason", ""))
    return _label(str(verdict.get("reason", "")))


def _outcome(reply: dict[str, Any], program: Program, timeout: float, nonce: str) -> Outcome:
    out = reply["stdout"] + (CUT if reply["stdout_cut"] else "")
    err = reply["stderr"] + (CUT if reply["stderr_cut"] else "")
    # A traceback longer than the kept output still names its exception: read it from the end.
    reasons_from = reply["stderr_tail"] if reply["stderr_cut"] else reply["stderr"]
    returncode = _returncode(reply["wait_status"])
    if reply["timed_out"]:
        status, reason = "timed out", f"wall-clock time-out after {timeout:g} s"
    elif program.checker is not None:
        status, reason = _verdict_outcome(reply, returncode, reasons_from)
    else:
        status, reason = _classify(returncode, reply["token"] == nonce, reasons_from)
    return Outcome(status, reason, reply["seconds"], out, err, tuple(reply["notices"]))


def _with_notices(outcome: Outcome, notices: list[str]) -> Outcome:
    if not notices:
        return outcome
    return Outcome(outcome.status, outcome.reason, outcome.seconds, outcome.stdout, outcome.stderr,
                   (*notices, *outcome.notices))


def _run_on(server: SandboxServer, program: Program, timeout: float, limits: Limits) -> Outcome:
    timeout = program.timeout or timeout
    nonce = secrets.token_hex(16)
    sandbox_id = secrets.token_hex(8)
    extra = {SANDBOX_ID_ENV: sandbox_id}
    if program.checker is None:
        extra.update({NONCE_ENV: nonce, STATUS_FD_ENV: "3"})
    request: dict[str, Any] = {
        "source": program.source, "files": program.files, "stdin": program.stdin or "", "env": sandbox_env(extra),
        "limits": limits.rlimits(), "workdir_bytes": limits.workdir_bytes, "output_bytes": limits.output_bytes,
        "timeout": timeout}
    if server.mode == "rlimits":
        request["host_workdir"] = tempfile.mkdtemp(prefix="codepeft-sbx-")
    try:
        reply = server.run(request, timeout, program.checker)
    finally:
        if server.mode == "rlimits":
            if server.group is not None:  # the group knows every process the program left
                server.group.kill(keep=set(server._tree()))
            else:
                _kill_leftovers(sandbox_id)
            shutil.rmtree(request["host_workdir"], ignore_errors=True)
    return _with_notices(_outcome(reply, program, timeout, nonce), server.notices)


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
        except TimeoutError as err:
            outcome = Outcome("timed out", f"wall-clock time-out after {program.timeout or timeout:g} s ({err})",
                              program.timeout or timeout)
        except (RuntimeError, OSError, ValueError, KeyError) as err:
            server.kill()
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
