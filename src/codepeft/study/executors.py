"""Where a study's runs execute: here, one after another (the runner's own loop), or as Ray tasks.

``executor: ray`` makes every run a Ray task that asks for the run's resources (``resources``,
overridable per arm) and calls the same ``StudyRunner.run_one`` on the worker: run directories,
locks, reuse, resume and failures are the local executor's, on storage every node sees. The driver

- checks, before anything runs, that every node sees (and can write) the study directory and sees
  the study's local paths (models, data), and that some node has what each arm asks for;
- deletes the runs itself under ``--force``, so that a retried task resumes instead of starting over;
- feeds the live table from task states (queued on submission, done or failed on completion) and
  from the stage events the workers send through a small relay actor;
- logs finished runs to the experiment tracker, and marks a run whose worker died on both attempts
  as failed (the study goes on).

A task whose worker process or node dies is retried once by Ray (``max_retries=1``), on whichever
node has room; the retry resumes from what the first attempt saved (training checkpoints,
generations so far). Exceptions inside a run are not retried: they fail the run, as locally.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from codepeft.errors import CodepeftError, first_line
from codepeft.rundir import RunDir
from codepeft.study.config import Resources, StudyConfig
from codepeft.study.runner import DiskFull, RunEvent, StudyRunner, one_line
from codepeft.study.runs import RunSpec, RunStatus

INSTALL_HINT = "pip install 'codepeft[ray]'"
RETRIES = 1  # a run whose worker or node dies is retried once
FORWARDED_ENV = ("CODEPEFT_", "HF_", "TRANSFORMERS_")  # the driver's settings that workers must share
STAGES = ("training", "generating", "scoring")


class Executor(Protocol):
    """Runs every planned run of ``runner``, yielding ``(spec, status, error)`` as each one finishes."""

    def run_all(self, runner: StudyRunner) -> Iterator[tuple[RunSpec, RunStatus, str | None]]: ...


def make_executor(config: StudyConfig) -> Executor | None:
    """The study's executor; ``None`` for ``local`` (the runner's own loop, no Ray needed)."""
    if config.executor == "local":
        return None
    import_ray()  # fail before anything is written
    return RayExecutor(config.ray.address)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CodepeftError(
            f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}, or use --executor local"
        ) from None
    return ray


def task_options(resources: Resources) -> dict[str, Any]:
    """Ray task options for one run: its resources, one retry on a lost worker, no retry on exceptions."""
    options: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_retries": RETRIES,
                               "retry_exceptions": False}
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * 2**30)
    return options


def describe(resources: Resources) -> str:
    parts = [f"{resources.cpus:g} CPU", f"{resources.gpus:g} GPU"]
    if resources.memory_gb:
        parts.append(f"{resources.memory_gb:g} GiB memory")
    return ", ".join(parts)


def fits(resources: Resources, node: dict[str, float]) -> bool:
    need = {"CPU": resources.cpus, "GPU": resources.gpus, "memory": (resources.memory_gb or 0) * 2**30}
    return all(node.get(key, 0.0) >= value for key, value in need.items() if value)


def check_resources(config: StudyConfig, nodes: list[dict[str, float]]) -> None:
    """Some node must have what each arm asks for, else its tasks would wait forever."""
    for arm in config.arms:
        wanted = config.resources_for(arm)
        if not any(fits(wanted, node) for node in nodes):
            have = "; ".join(f"{node.get('CPU', 0):g} CPU, {node.get('GPU', 0):g} GPU" for node in nodes) or "none"
            raise CodepeftError(
                f"arm {arm!r} asks for {describe(wanted)} per run, more than any Ray node has (nodes: {have}): "
                f"lower arms.{arm}.resources / resources, or add a node that has them"
            )


def local_paths(config: StudyConfig, data_dir: Path | None) -> list[str]:
    """The study's paths on this machine (local models, data files and directory) that workers must see too."""
    candidates = [*config.models, *(d.task.partition(":")[2] for d in config.datasets)]
    paths = [c for c in candidates if c and Path(c).expanduser().exists()]
    if data_dir is not None:
        paths.append(str(data_dir))
    return paths


def probe_node(probe_file: str, token: str, paths: list[str], cwd: str) -> str | None:
    """On one node: what it cannot see or write of the study's storage, or None (runs as a Ray task)."""
    if os.path.isdir(cwd):
        os.chdir(cwd)  # relative paths in the study mean the same on every node that shares the driver's cwd
    probe = Path(probe_file)
    try:
        seen = probe.read_text()
    except OSError:
        seen = None
    if seen != token:
        return f"cannot see the study directory {probe.parent}"
    try:
        written = probe.with_name(f"{probe.name}-{os.getpid()}")
        written.write_text(token)
        written.unlink()
    except OSError as err:
        return f"cannot write to the study directory {probe.parent} ({err.strerror or err})"
    missing = [p for p in paths if not Path(p).expanduser().exists()]
    return f"cannot see {missing[0]}" if missing else None


@dataclass
class TaskResult:
    """What a run's task returns to the driver; ``fatal`` ("disk" or "input") stops the whole study."""

    status: RunStatus
    error: str | None = None
    cached: bool = False
    score: float | None = None
    elapsed: float = 0.0
    fatal: str | None = None
    work_seconds: float | None = None


class EventRelay:
    """A tiny actor holding the workers' stage events until the driver drains them for the live table."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def push(self, run_id: str, status: str) -> None:
        self.events.append((run_id, status))

    def drain(self) -> list[tuple[str, str]]:
        events, self.events = self.events, []
        return events


def run_task(config: StudyConfig, study_dir: str, data_dir: str | None, spec: RunSpec, relay: Any,
             cwd: str) -> TaskResult:
    """One run on a Ray worker: the local executor's ``run_one``, with stage events sent to the relay."""
    import ray

    if os.path.isdir(cwd):
        os.chdir(cwd)
    final: list[RunEvent] = []
    pushed: list[Any] = []

    def forward(event: RunEvent) -> None:
        if event.status in STAGES:
            pushed.append(relay.push.remote(event.spec.run_id, event.status))
        else:
            final.append(event)

    runner = StudyRunner(config, Path(study_dir), data_dir=Path(data_dir) if data_dir else None, on_event=forward,
                         runs=[spec])
    runner.where["node"] = ray.get_runtime_context().get_node_id()
    try:
        status, error = runner.run_one(spec)
    except DiskFull as err:
        return TaskResult("failed", str(err), fatal="disk")
    except CodepeftError as err:
        return TaskResult("failed", str(err), fatal="input")
    if pushed:
        # one caller's actor calls run in order: once the last is in, the driver has every stage before the end
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get(pushed[-1], timeout=30)
    last = final[-1] if final else RunEvent(spec, status)
    return TaskResult(status, error, last.cached, last.score, last.elapsed, work_seconds=last.work_seconds)


class RayExecutor:
    """Every run a Ray task on the cluster at ``address`` (``auto``, ``HOST:PORT``, None: start Ray here)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def run_all(self, runner: StudyRunner) -> Iterator[tuple[RunSpec, RunStatus, str | None]]:
        ray = import_ray()
        connected_here = self._connect(ray)
        try:
            yield from self._run(ray, runner)
        finally:
            if connected_here:
                gc.collect()  # object refs must go while the connection is up: freed after it, they can crash
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join the cluster (unless this process already has); True when this call connected."""
        if ray.is_initialized():
            return False
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        try:
            # log_to_driver off: the workers' library output would tear the live table apart
            ray.init(address=self.address, runtime_env={"env_vars": env} if env else None, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = self.address or "this machine"
            raise CodepeftError(f"cannot start or reach a Ray cluster at {where} ({one_line(err)}): start one with "
                                "`ray start --head`, then pass --address auto or HOST:PORT") from None
        return True

    def _run(self, ray: Any, runner: StudyRunner) -> Iterator[tuple[RunSpec, RunStatus, str | None]]:
        study_dir = runner.study_dir.resolve()
        self._check_cluster(ray, runner, study_dir)
        if runner.force:
            for spec in runner.runs:
                self._discard(runner, spec)
        by_id = {spec.run_id: spec for spec in runner.runs}
        relay = ray.remote(num_cpus=0)(EventRelay).options(scheduling_strategy=self._here(ray)).remote()
        remote = ray.remote(run_task)
        config = ray.put(runner.config)
        data_dir = str(runner.data_dir.resolve()) if runner.data_dir else None
        pending = {remote.options(**task_options(runner.config.resources_for(spec.arm))).remote(
            config, str(study_dir), data_dir, spec, relay, os.getcwd()): spec for spec in runner.runs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                self._relay_events(ray, relay, runner, by_id, {s.run_id for s in pending.values()})
                for ref in ready:
                    spec = pending.pop(ref)
                    yield (spec, *self._collect(ray, ref, spec, runner))
        finally:
            for ref in pending:  # interrupted or stopped: what ran stays on disk and resumes next time
                ray.cancel(ref, force=True)

    @staticmethod
    def _here(ray: Any) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)

    def _check_cluster(self, ray: Any, runner: StudyRunner, study_dir: Path) -> None:
        """Every live node sees the study directory and paths; some node fits each arm's resources."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [node for node in ray.nodes() if node.get("Alive")]
        check_resources(runner.config, [node.get("Resources", {}) for node in nodes])
        token = secrets.token_hex(8)
        probe_file = study_dir / f".probe-{token}"
        probe_file.write_text(token)
        paths = local_paths(runner.config, runner.data_dir)
        probe = ray.remote(probe_node)
        try:
            refs = {probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                node["NodeID"], soft=False)).remote(str(probe_file), token, paths, os.getcwd()): node for node in nodes}
            for ref, node in refs.items():
                try:
                    problem = ray.get(ref, timeout=300)
                except ray.exceptions.RayError as err:
                    problem = f"cannot run codepeft ({first_line(err)})"
                if problem:
                    raise CodepeftError(
                        f"Ray node {node.get('NodeManagerAddress')} ({node['NodeID'][:8]}) {problem}: put the study "
                        "directory (ray.storage or --out) and the study's models and data on storage every node "
                        "mounts at the same path, with codepeft installed on every node"
                    )
        finally:
            probe_file.unlink(missing_ok=True)

    @staticmethod
    def _discard(runner: StudyRunner, spec: RunSpec) -> None:
        """--force, done here once: a task retried after a lost worker must resume, not start over."""
        from filelock import FileLock

        locks = runner.study_dir / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / f"{spec.dirname}.lock")):
            runner.owned_state(spec)
            if runner.run_dir(spec).exists():
                RunDir(runner.run_dir(spec)).wipe()

    @staticmethod
    def _relay_events(ray: Any, relay: Any, runner: StudyRunner, by_id: dict[str, RunSpec],
                      running: set[str]) -> None:
        try:
            events = ray.get(relay.drain.remote(), timeout=30)
        except ray.exceptions.RayError:
            return  # the relay only feeds the table; results come from the tasks themselves
        for run_id, status in events:
            spec = by_id.get(run_id)
            if spec is not None and run_id in running:  # a late event must not reopen a finished run
                runner.on_event(RunEvent(spec, status))  # type: ignore[arg-type]

    @staticmethod
    def _collect(ray: Any, ref: Any, spec: RunSpec, runner: StudyRunner) -> tuple[RunStatus, str | None]:
        try:
            result: TaskResult = ray.get(ref)
        except ray.exceptions.RayError as err:
            message = f"lost its worker on every attempt ({type(err).__name__}: {first_line(err, 400)})"
            runner.mark_failed(spec, message)
            runner.on_event(RunEvent(spec, "failed", error=message))
            return "failed", message
        if result.fatal == "disk":
            raise DiskFull(result.error or "disk full")
        if result.fatal:
            raise CodepeftError(result.error or "run failed")
        if result.status == "done" and not result.cached and runner.tracker is not None:
            runner.tracker.log_run(spec, runner.run_dir(spec))
        runner.on_event(RunEvent(spec, result.status, cached=result.cached, error=result.error,
                                 elapsed=result.elapsed, score=result.score, work_seconds=result.work_seconds))
        return result.status, result.error
