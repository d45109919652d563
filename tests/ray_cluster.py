"""A Ray cluster of several nodes on this machine, each started with ``ray start`` (tests and benchmarks).

Every node is its own ``ray start --block`` process group, stopped by its process group id (never
``ray stop``, which would stop every Ray node of every user on the machine). Ports are picked free
and the temporary directory is private, so several clusters can share a machine. Every node and
this process (the driver, while the cluster is up) say ``RAY_AUTH_MODE=disabled`` (the default of
``ray start`` in 2.60) explicitly: left unset, a ``~/.ray/auth_token`` file (Ray 2.59+ writes one
when ``ray.init()`` starts a local instance) turns token authentication on for the head only, and
the other nodes and the driver, which lack the token, cannot join. (A token of the cluster's own
would not do: a driver that imported Ray before the cluster started may already have read the mode.)
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")


def can_hide_storage() -> bool:
    """Whether this process may start a node in its own mount namespace (root, or user namespaces allowed)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs none /mnt 2>/dev/null || mount -t tmpfs none /tmp"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRayCluster:
    """``with LocalRayCluster(nodes=2, cpus=1) as cluster:`` then ``--address cluster.address``."""

    def __init__(self, nodes: int = 2, cpus: int = 1, object_store_mb: int = 80, hide: bool = False) -> None:
        self.nodes, self.cpus, self.object_store_mb = nodes, cpus, object_store_mb
        self.root = Path(tempfile.mkdtemp(prefix="cpray-"))  # short: Ray's socket paths must stay < 108 chars
        self.address = f"127.0.0.1:{free_port()}"
        # hide: the nodes after the head see an empty directory at `hidden` (a private mount namespace with
        # a tmpfs over it), as a machine that does not mount the head's storage would
        self.hidden: Path | None = self.root / "hidden" if hide else None
        if self.hidden is not None:
            self.hidden.mkdir()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.saved_env: dict[str, str | None] = {}

    def __enter__(self) -> LocalRayCluster:
        self.saved_env = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        try:
            self.start_node(head=True)
            for _ in range(self.nodes - 1):
                self.start_node(head=False)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_node(self, head: bool) -> subprocess.Popen[bytes]:
        index = len(self.processes)
        args = [str(RAY), "start", "--block", f"--num-cpus={self.cpus}", "--disable-usage-stats",
                f"--object-store-memory={self.object_store_mb * 2**20}",
                f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
        if head:
            port = self.address.rsplit(":", 1)[1]
            args += ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={self.root}/t"]
        else:
            args += [f"--address={self.address}"]
        if self.hidden is not None and not head:
            mount = f"mount -t tmpfs none {self.hidden} && exec {shlex.join(args)}"
            args = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount]
        log = self.root / f"node{index}.log"
        env = {**os.environ, **self.env}
        with open(log, "wb") as handle:
            process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.processes.append(process)
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {index} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            _stop_group(process, signal.SIGTERM)
        for process in reversed(self.processes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            _stop_group(process, signal.SIGKILL)  # `ray start --block` may leave its children after SIGTERM
            process.wait()
        self.processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved_env = {}


def _stop_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # the group this cluster created (start_new_session), and only it
