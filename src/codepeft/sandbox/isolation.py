"""How sandboxed programs are started: resource limits, namespaces when the OS allows them, or a fallback.

In the preferred mode, ``namespaces``, a sandbox server (``_bootstrap.py``) runs under ``unshare`` in
its own user and network namespaces and forks every program into fresh mount and PID namespaces with
a read-only filesystem except its work directory, hidden home directories and no capabilities (see
``_bootstrap.py``). Where ``unshare`` is missing or refused (no user namespaces), the ``rlimits``
mode runs the same server without namespaces: the same resource limits, sessions and clean-up of
escaped processes (by the sandbox id in their environment), but no network or filesystem isolation,
so it is announced with a logged warning.
"""

from __future__ import annotations

import functools
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
UNSHARE_FLAGS = ["--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--net", "--mount", "--mount-proc"]
SERVER_UNSHARE_FLAGS = ["--user", "--map-root-user", "--net", "--mount"]
Mode = Literal["namespaces", "rlimits"]


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits (``None`` leaves one unset)."""

    cpu_seconds: int | None = 20
    memory_bytes: int | None = 2 << 30
    processes: int | None = 64
    file_size_bytes: int | None = 16 << 20
    open_files: int | None = 256
    output_bytes: int = 64 << 10  # how much of stdout/stderr is kept in the result
    workdir_bytes: int = 64 << 20  # size of the work directory (a tmpfs of its own, with namespaces)

    def rlimits(self) -> dict[str, int | None]:
        return {"cpu": self.cpu_seconds, "as": self.memory_bytes, "nproc": self.processes,
                "fsize": self.file_size_bytes, "nofile": self.open_files, "core": 0}


@functools.cache
def namespaces_available() -> bool:
    """Whether this machine lets an unprivileged ``unshare`` create the namespaces the sandbox uses."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        done = subprocess.run([unshare, *UNSHARE_FLAGS, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@functools.cache
def _warn_fallback() -> None:
    log.warning(
        "sandbox: unshare (user/PID/network namespaces) is not available here; generated code runs with "
        "resource limits and process clean-up only, without network or filesystem isolation"
    )


def choose_mode(requested: Mode | None = None) -> Mode:
    """The isolation mode to use: ``requested`` if given, else namespaces when available."""
    if requested is not None:
        return requested
    if namespaces_available():
        return "namespaces"
    _warn_fallback()
    return "rlimits"


def _keep_paths() -> list[str]:
    """Paths a hidden home directory must still show: the interpreter and its installation."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(sys.executable).resolve().parent.parent)}
    return sorted(str(Path(p).resolve()) for p in paths)


HIDE_ENV = "CODEPEFT_SANDBOX_HIDE"


def _hidden_paths() -> list[str]:
    """Home directories, plus any listed in ``$CODEPEFT_SANDBOX_HIDE`` (separated by ``:``)."""
    paths = {str(Path.home()), "/root", "/home", *filter(None, os.environ.get(HIDE_ENV, "").split(os.pathsep))}
    return sorted(p for p in paths if Path(p).exists())


def server_command(mode: Mode, base: Path) -> list[str]:
    """The command line of a sandbox server (see ``_bootstrap.py``); programs' files live under ``base``."""
    import json

    namespaced = mode == "namespaces"
    config = {"namespaces": namespaced, "base": str(Path(base).resolve()),
              "hide": _hidden_paths() if namespaced else [], "keep": _keep_paths(),
              "site_packages": [p for p in site.getsitepackages() if Path(p).is_dir()]}
    server = [sys.executable, "-I", "-S", str(BOOTSTRAP), json.dumps(config)]
    if namespaced:
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
