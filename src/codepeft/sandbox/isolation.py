"""How sandbox servers are started: bubblewrap where installed, hand-made namespaces, or a bare fallback.

Three modes, best first (``choose_mode``):

- ``bubblewrap``: the server runs under ``bwrap`` in new PID, network, IPC and UTS namespaces, with a
  new root holding only the Python runtime (read-only), a minimal ``/dev``, private ``/tmp`` and
  ``/dev/shm`` and a ``/proc`` of its own, as an unprivileged uid with no capabilities. When codepeft
  runs as root, bubblewrap sets up the root as root and ``setpriv`` then switches the server to uid
  ``SANDBOX_UID`` (bubblewrap's own user namespace would map the sandbox onto the host's root).
- ``namespaces``: ``unshare`` gives the server its own user, mount, network, IPC and UTS namespaces;
  the host's file system stays visible read-only (home directories, ``/run``, password hashes and the
  current directory hidden), and the sandbox's uid is the invoking user's.
- ``rlimits``: no isolation at all, only resource limits, sessions and clean-up; announced with a warning.

Inside the server every program gets fresh user, mount, PID, network and IPC namespaces (but in
``rlimits`` mode) and a separate checker process for its verdict: see ``_bootstrap.py``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

BOOTSTRAP = Path(__file__).with_name("_bootstrap.py")
Mode = Literal["bubblewrap", "namespaces", "rlimits"]
MODES: tuple[str, ...] = ("bubblewrap", "namespaces", "rlimits")
#: the host uid (and gid) sandboxed code runs as when codepeft runs as root: ``nobody``
SANDBOX_UID = 65534
SERVER_UNSHARE_FLAGS = ["--user", "--map-root-user", "--net", "--mount", "--ipc", "--uts"]
HIDE_ENV = "CODEPEFT_SANDBOX_HIDE"
# A program's own namespaces (see ``_bootstrap.enter_namespaces``): what the availability checks try.
NESTED_CHECK = ("import ctypes\n"
                "assert ctypes.CDLL(None).unshare(0x10000000 | 0x20000 | 0x20000000 | 0x40000000 | 0x08000000) == 0\n")


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits (``None`` leaves one unset)."""

    cpu_seconds: int | None = 20
    memory_bytes: int | None = 2 << 30
    processes: int | None = 64
    file_size_bytes: int | None = 16 << 20
    open_files: int | None = 256
    output_bytes: int = 64 << 10  # how much of stdout/stderr is kept in the result
    workdir_bytes: int = 64 << 20  # size of the private /tmp holding the work directory (and of /dev/shm)

    def rlimits(self) -> dict[str, int | None]:
        return {"cpu": self.cpu_seconds, "as": self.memory_bytes, "nproc": self.processes,
                "fsize": self.file_size_bytes, "nofile": self.open_files, "core": 0}


def _works(command: list[str]) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=20, env=sandbox_env({}))
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@functools.cache
def bubblewrap_available() -> bool:
    """Whether ``bwrap`` (and, as root, ``setpriv``) can start a server here, programs' namespaces included."""
    if shutil.which("bwrap") is None or (os.geteuid() == 0 and shutil.which("setpriv") is None):
        return False
    return _works([*_bubblewrap_prefix(), sys.executable, "-I", "-S", "-c", NESTED_CHECK])


@functools.cache
def namespaces_available() -> bool:
    """Whether ``unshare`` can give a server its namespaces, and the server its programs theirs."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    return _works([unshare, *SERVER_UNSHARE_FLAGS, sys.executable, "-I", "-S", "-c", NESTED_CHECK])


@functools.cache
def _warn(mode: str) -> None:
    if mode == "namespaces":
        log.warning("sandbox: bubblewrap (bwrap) is not installed; mode 'namespaces': no network, private "
                    "/tmp and /dev/shm, but the host's files stay readable (read-only) by generated code. "
                    "Install the 'bubblewrap' package for full isolation")
    else:
        log.warning("sandbox: mode 'rlimits' is NOT isolation: neither bubblewrap nor user namespaces are "
                    "available, so generated code runs with resource limits only and can read and write the "
                    "host's files and reach its network")


def choose_mode(requested: Mode | None = None) -> Mode:
    """The isolation mode to use: ``requested`` if given, else the best one this machine allows."""
    if requested is not None:
        return requested
    if bubblewrap_available():
        return "bubblewrap"
    mode: Mode = "namespaces" if namespaces_available() else "rlimits"
    _warn(mode)
    return mode


def _reachable(path: str) -> bool:
    try:
        return Path(path).exists()
    except OSError:  # e.g. inside another user's home: this user's interpreter cannot need it
        return False


def _runtime_paths() -> list[str]:
    """What the interpreter needs: its installation, the virtual environment, the system libraries."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(sys.executable).resolve().parent.parent), "/usr",
             *(p for p in site.getsitepackages() if Path(p).is_dir())}
    resolved = sorted({str(Path(p).resolve()) for p in paths if _reachable(p)})
    # Nested paths come with their parent.
    return [p for p in resolved if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in resolved)]


def _bind_arguments() -> list[str]:
    """bubblewrap arguments that recreate the runtime paths read-only (parents world-traversable)."""
    args: list[str] = []
    made: set[str] = set()
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    for path in _runtime_paths():
        for parent in reversed(Path(path).parents):
            if str(parent) != "/" and str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
    if Path("/etc/ld.so.cache").exists():
        args += ["--perms", "0755", "--dir", "/etc", "--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def _bubblewrap_prefix() -> list[str]:
    command = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session", "--unshare-pid",
               "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    root = os.geteuid() == 0
    if root:  # set up as root, then setpriv becomes SANDBOX_UID: no user namespace mapping onto root
        command += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                    "--cap-add", "CAP_SETPCAP"]
    else:
        command += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL"]
    # /tmp first: a runtime living under it (a checkout cloned into /tmp) is then bound on top, not covered.
    command += ["--tmpfs", "/tmp", *_bind_arguments(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm",
                "--chdir", "/"]
    if root:
        command += [shutil.which("setpriv") or "setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}",
                    "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return command


def _hidden_paths() -> list[str]:
    """For mode namespaces: homes, runtime sockets, password hashes, the current directory, $CODEPEFT_SANDBOX_HIDE."""
    paths = {str(Path.home()), "/root", "/home", "/run", "/var/run", "/etc/shadow", "/etc/gshadow", "/etc/sudoers",
             "/etc/ssh", os.getcwd(), *filter(None, os.environ.get(HIDE_ENV, "").split(os.pathsep))}
    return sorted(p for p in paths if p != "/" and Path(p).exists())


def server_command(mode: Mode, spec_fd: int) -> list[str]:
    """The command line of a sandbox server (see ``_bootstrap.py``); tests reach it on ``spec_fd``."""
    site_packages = [p for p in site.getsitepackages() if Path(p).is_dir()]
    config = {"mode": mode, "spec_fd": spec_fd, "site_packages": site_packages, "runtime": _runtime_paths()}
    if mode == "namespaces":
        config.update(hide=_hidden_paths(), keep=_runtime_paths(), staging="/tmp")
    server = [sys.executable, "-I", "-S", "-c", BOOTSTRAP.read_text(encoding="utf-8"), json.dumps(config)]
    if mode == "bubblewrap":
        return _bubblewrap_prefix() + server
    if mode == "namespaces":
        return [shutil.which("unshare") or "unshare", *SERVER_UNSHARE_FLAGS, *server]
    return server


def sandbox_env(extra: dict[str, str]) -> dict[str, str]:
    """A minimal environment: no proxies, tokens or user paths leak into generated code."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    env.update(extra)
    return env


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
