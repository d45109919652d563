"""Control groups for sandbox servers: a fair CPU share, a process cap and a memory cap per worker.

Resource limits (``setrlimit``) bind single processes, and the scheduler shares the CPU between
sessions: a hostile program that forks spinning children, each in a session of its own, would take
most of the CPU from the program another worker runs at the same time, and that program could time
out through no fault of its own. Each sandbox server (one per worker, running one program at a
time) is therefore put in a control group of its own, which every process it forks inherits and
none can leave: the CPU is shared per worker whatever a program forks, the group's process count
and memory are capped, and every process still in the group is killed when the worker closes.

Where the machine does not let codepeft create control groups (no permission, no cgroup file
system), servers run without them and a warning says so once; the other limits still hold.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PREFIX = "codepeft-sandbox"


@dataclass
class WorkerGroup:
    """The control group(s) of one sandbox server: one directory per hierarchy (cgroup v1), or one (v2)."""

    directories: list[Path] = field(default_factory=list)

    def add(self, pid: int) -> None:
        for directory in self.directories:
            (directory / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.directories:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        return found

    def kill(self, keep: set[int] | None = None) -> None:
        """Kill every process in the group except those in ``keep``, until none is left."""
        keep = keep or set()
        for _ in range(50):
            left = self.pids() - keep
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def close(self) -> None:
        """Kill every process left in the group, then remove it."""
        self.kill()
        for directory in self.directories:
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still busy for a moment after its last process is reaped
                    time.sleep(0.02)


def _own_path(controller: str) -> str:
    """This process's group in ``controller``'s v1 hierarchy (or the v2 one for ``""``)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller and controller in controllers.split(",")) or (not controller and controllers == ""):
            return path.lstrip("/")
    raise OSError(f"not in a {controller or 'v2'} control group")


@functools.cache
def _warn_unavailable(kind: str, reason: str) -> None:
    log.warning("sandbox: control groups unavailable (%s); CPU is shared per session, not per worker", reason)


_counter = [0]


@functools.cache
def worker_groups_available() -> bool:
    """Whether sandbox servers get control groups on this machine (tries to make one)."""
    group = create_worker_group(None, None)
    if group is None:
        return False
    group.close()
    return True


def create_worker_group(processes: int | None, memory_bytes: int | None) -> WorkerGroup | None:
    """A new control group for one sandbox server, or ``None`` (logged once) where none can be made."""
    _counter[0] += 1
    name = f"{PREFIX}-{os.getpid()}-{_counter[0]}"
    group = WorkerGroup()
    try:
        if (ROOT / "cgroup.controllers").exists():  # unified (v2) hierarchy
            directory = ROOT / _own_path("") / name
            directory.mkdir()
            group.directories.append(directory)
            controllers = set((directory / "cgroup.controllers").read_text().split())
            if "pids" in controllers and processes:
                (directory / "pids.max").write_text(str(processes))
            if "memory" in controllers and memory_bytes:
                (directory / "memory.max").write_text(str(memory_bytes))
            if "cpu" not in controllers:
                raise OSError("the cpu controller is not delegated to codepeft's control group")
        else:  # v1: one hierarchy per controller
            for controller in ("cpu", "pids", "memory"):
                base = ROOT / controller
                if not base.is_dir():
                    if controller == "cpu":
                        raise OSError(f"no {base}")
                    continue
                directory = base / _own_path(controller) / name
                directory.mkdir()
                group.directories.append(directory)
                if controller == "pids" and processes:
                    (directory / "pids.max").write_text(str(processes))
                if controller == "memory" and memory_bytes:
                    (directory / "memory.limit_in_bytes").write_text(str(memory_bytes))
    except OSError as err:
        group.close()
        _warn_unavailable(type(err).__name__, str(err).split(":")[0])  # once per cause, not per group
        return None
    return group
