"""Run a study: every planned run in turn, reusing finished ones, resuming killed ones, surviving failures.

For each run: a train arm calls ``codepeft.training.train`` into ``<run>/train``; every arm then
calls ``codepeft.generation.evaluate`` into ``<run>/eval`` (with the adapter for train arms) and
``codepeft.metrics.score.score_run`` on it. Each stage is skipped when its output is already there,
so a killed study resumes where it stopped; ``force`` deletes a run and redoes it.

A failing run is marked ``failed`` with its error and the study goes on; a full disk stops the
study with a one-line error (finished runs stay on disk). At the end the results table and the
reports are written.

By default the runs go one after another in this process; an ``executor`` (``study.executors``:
Ray) runs them elsewhere, each through the same ``run_one``, and yields each outcome as it ends.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codepeft.errors import CodepeftError
from codepeft.provenance import environment
from codepeft.rundir import METRICS, RunDir, read_json, saved_generations, write_json
from codepeft.study.config import StudyConfig, dump_study
from codepeft.study.runs import (
    STUDY_INDEX,
    RunSpec,
    RunStatus,
    plan_runs,
    read_run_state,
    write_run_state,
)

if TYPE_CHECKING:
    from codepeft.study.executors import Executor

TRAIN_DIR = "train"
EVAL_DIR = "eval"


@dataclass
class RunEvent:
    """What the progress display hears about: a run changed status (``cached`` when it was reused).

    ``elapsed`` is this attempt's time; ``work_seconds`` (when done) the run's recorded training,
    generation and scoring time over all its attempts, which is what a fresh run of its kind costs.
    """

    spec: RunSpec
    status: RunStatus
    cached: bool = False
    error: str | None = None
    elapsed: float = 0.0
    score: float | None = None
    work_seconds: float | None = None


@dataclass
class StudyOutcome:
    study_dir: Path
    runs: list[RunSpec]
    statuses: dict[str, RunStatus] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [run_id for run_id, status in self.statuses.items() if status == "failed"]


class DiskFull(CodepeftError):
    pass


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC anywhere in the chain (libraries often re-raise it wrapped, or only in the message)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


class PeakMemory:
    """Peak resident memory of this process while a stage runs (sampled), plus the CUDA allocator's peak.

    ``peak_tree_rss`` is the sampled peak of this process and its child processes together (vLLM's
    worker, sandboxed programs): the memory the stage needed on the machine, which ``peak_rss`` alone
    leaves out when the work runs in a child. RSS is summed over processes, so pages they share count
    more than once (an upper bound)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_rss = 0
        self.peak_tree_rss = 0
        self.peak_gpu: int | None = None
        self._exact = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        process = psutil.Process()
        while True:
            own = process.memory_info().rss
            self.peak_rss = max(self.peak_rss, own)
            self.peak_tree_rss = max(self.peak_tree_rss, own + _children_rss(process))
            if self._stop.wait(self.interval):
                break

    def __enter__(self) -> PeakMemory:
        from codepeft.training.costs import reset_peak_memory

        self._exact = reset_peak_memory()  # the kernel's own peak from here on (Linux), besides the samples
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from codepeft.training.costs import peak_rss_bytes

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._exact:
            self.peak_rss = max(self.peak_rss, peak_rss_bytes())
        try:
            import torch

            if torch.cuda.is_available():
                self.peak_gpu = int(torch.cuda.max_memory_allocated())
        except ImportError:
            pass


def _children_rss(process: Any) -> int:
    """Resident memory of ``process``'s descendants now (those that exit while being read count 0)."""
    import psutil

    total = 0
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, CodepeftError) else f"{type(err).__name__}: {text}"[:500]


class StudyRunner:
    """Runs the planned runs of one study into ``study_dir`` (``runs/``, ``study.yaml``, ``study.json``)."""

    def __init__(
        self,
        config: StudyConfig,
        study_dir: Path,
        *,
        force: bool = False,
        data_dir: Path | None = None,
        on_event: Callable[[RunEvent], None] | None = None,
        check_models: bool = True,
        executor: Executor | None = None,
        runs: list[RunSpec] | None = None,
    ) -> None:
        self.config = config
        self.study_dir = Path(study_dir)
        self.force = force
        self.data_dir = Path(data_dir) if data_dir else (Path(config.data_dir) if config.data_dir else None)
        self.on_event = on_event or (lambda event: None)
        # ``runs`` given: already planned (a Ray worker running one run of a study planned by the driver)
        self.runs = runs if runs is not None else plan_runs(config, self.data_dir, check_models=check_models)
        self.executor = executor
        self.tracker: Any = None
        # where each attempt ran, kept in run.json (an executor adds e.g. its cluster node)
        self.where: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}

    # -- study-level files -------------------------------------------------------------------------
    def write_index(self) -> None:
        self.study_dir.mkdir(parents=True, exist_ok=True)
        (self.study_dir / "runs").mkdir(exist_ok=True)
        text = dump_study(self.config)
        previous = self.study_dir / "study.yaml"
        if previous.exists() and previous.read_text() != text:
            # Keep the earlier study definition: its runs stay under runs/ and its results are re-creatable.
            from codepeft.provenance import sha256_json

            kept = self.study_dir / f"study.previous-{sha256_json(previous.read_text())[:8]}.yaml"
            if not kept.exists():
                previous.replace(kept)
        previous.write_text(text)
        write_json(self.study_dir / STUDY_INDEX, {
            "name": self.config.name,
            "description": self.config.description,
            "created": now(),
            "config": self.config.model_dump(mode="json"),
            "runs": [run.index_entry() for run in self.runs],
        })

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> StudyOutcome:
        from codepeft.study.tracking import open_tracker

        self.tracker = open_tracker(self.config.tracking, self.study_dir, self.config.name)  # fails before writing
        self.write_index()
        outcome = StudyOutcome(self.study_dir, self.runs)
        for spec in self.runs:
            self.on_event(RunEvent(spec, "queued"))
        finished = self.executor.run_all(self) if self.executor is not None else (
            (spec, *self.run_one(spec)) for spec in self.runs)
        try:
            for spec, status, error in finished:
                outcome.statuses[spec.run_id] = status
                if error:
                    outcome.errors[spec.run_id] = error
        finally:
            if self.tracker is not None:
                self.tracker.close()
        return outcome

    def run_dir(self, spec: RunSpec) -> Path:
        return self.study_dir / "runs" / spec.dirname

    def run_one(self, spec: RunSpec) -> tuple[RunStatus, str | None]:
        """Run (or reuse) one run; a lock (``.locks/<run>.lock``) keeps two studies sharing it from racing."""
        from filelock import FileLock

        run_dir = self.run_dir(spec)
        locks = self.study_dir / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / f"{spec.dirname}.lock")):
            return self._run_locked(spec, run_dir)

    def owned_state(self, spec: RunSpec) -> dict[str, Any] | None:
        """The run's saved state; a directory holding another run (same name, other key) is an error."""
        run_dir = self.run_dir(spec)
        state = read_run_state(run_dir)
        if state is not None and state.get("key") != spec.key:
            raise CodepeftError(f"run directory {run_dir} holds a different run: move it away or rerun with --force")
        return state

    def _run_locked(self, spec: RunSpec, run_dir: Path) -> tuple[RunStatus, str | None]:
        state = self.owned_state(spec)
        if self.force and run_dir.exists():
            RunDir(run_dir).wipe()
            state = None
        if state is not None and state.get("status") == "done" and self._scored(run_dir, spec, state):
            self.on_event(RunEvent(spec, "done", cached=True, score=primary_score(run_dir, spec),
                                   work_seconds=recorded_work_seconds(state.get("timings", {})) or None))
            return "done", None
        state = state or self._new_state(spec)
        state["attempts"] = state.get("attempts", 0) + 1
        state.setdefault("ran_on", []).append({**self.where, "started": now()})
        state.pop("error", None)
        started = time.perf_counter()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not (run_dir / "environment.json").exists():
                write_json(run_dir / "environment.json", environment(spec.seed, spec.dataset.checksums))
            if spec.kind == "train":
                self._stage(spec, run_dir, state, "training", self._train)
            self._stage(spec, run_dir, state, "generating", self._generate)
            self._stage(spec, run_dir, state, "scoring", self._score)
        except KeyboardInterrupt:
            self._save_failure(run_dir, state, "interrupted")
            raise
        except Exception as err:
            message = one_line(err)
            if is_disk_full(err):
                self._save_failure(run_dir, state, f"disk full: {message}")
                raise DiskFull(
                    f"disk full while running {spec.label} (under {self.study_dir}): free some space and rerun "
                    "the same command; finished runs were kept and will be reused"
                ) from None
            self._save_failure(run_dir, state, message)
            self.on_event(RunEvent(spec, "failed", error=message, elapsed=time.perf_counter() - started))
            return "failed", message
        finally:
            gc.collect()
        state["status"] = "done"
        state["finished"] = now()
        write_run_state(run_dir, state)
        score = primary_score(run_dir, spec)
        if self.tracker is not None:
            self.tracker.log_run(spec, run_dir)
        self.on_event(RunEvent(spec, "done", elapsed=time.perf_counter() - started, score=score,
                               work_seconds=recorded_work_seconds(state["timings"])))
        return "done", None

    def _new_state(self, spec: RunSpec) -> dict[str, Any]:
        return {"run_id": spec.run_id, "model": spec.model, "dataset": spec.dataset.spec.task, "arm": spec.arm,
                "method": spec.method, "kind": spec.kind, "seed": spec.seed, "key": spec.key,
                "status": "queued", "created": now(), "timings": {}, "peak_memory": {}}

    def mark_failed(self, spec: RunSpec, message: str) -> None:
        """Record a failure the run could not record itself (its worker or node died): ``failed``, with why."""
        run_dir = self.run_dir(spec)
        self._save_failure(run_dir, read_run_state(run_dir) or self._new_state(spec), message)

    def _save_failure(self, run_dir: Path, state: dict[str, Any], message: str) -> None:
        state["status"] = "failed"
        state["error"] = message
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_run_state(run_dir, state)
        except OSError:
            pass  # the disk may be full; the run will simply be redone

    def _stage(self, spec: RunSpec, run_dir: Path, state: dict[str, Any], status: RunStatus,
               work: Callable[[RunSpec, Path, dict[str, Any]], bool]) -> None:
        """Run one stage unless its output exists; time and peak memory add up over resumed attempts."""
        state["status"] = status
        write_run_state(run_dir, state)
        self.on_event(RunEvent(spec, status))
        started, cpu_started = time.perf_counter(), cpu_seconds()
        with PeakMemory() as memory:
            did_work = work(spec, run_dir, state)
        if did_work:
            name = {"training": "train", "generating": "generation", "scoring": "scoring"}[status]
            timings = state["timings"]
            timings[f"{name}_seconds"] = round(timings.get(f"{name}_seconds", 0.0) + time.perf_counter() - started, 3)
            # CPU time (all threads, finished children too): on a shared machine, what the wall time would be alone
            timings[f"{name}_cpu_seconds"] = round(
                timings.get(f"{name}_cpu_seconds", 0.0) + cpu_seconds() - cpu_started, 3)
            state["cpu_counts_children"] = True  # older runs counted the study process alone
            peak = max(memory.peak_rss, state["peak_memory"].get(f"{name}_rss_bytes", 0))
            state["peak_memory"][f"{name}_rss_bytes"] = peak
            tree = max(memory.peak_tree_rss, peak, state["peak_memory"].get(f"{name}_with_children_rss_bytes", 0))
            state["peak_memory"][f"{name}_with_children_rss_bytes"] = tree
            if memory.peak_gpu is not None:
                state["peak_memory"][f"{name}_gpu_bytes"] = memory.peak_gpu
        write_run_state(run_dir, state)

    # -- stages ------------------------------------------------------------------------------------
    def _train(self, spec: RunSpec, run_dir: Path, state: dict[str, Any]) -> bool:
        out = run_dir / TRAIN_DIR
        if (out / "adapter").is_dir() and (out / "costs.json").exists():
            return False
        from codepeft.study.engines import train_arm

        train_arm(spec, out, self.data_dir)
        return True

    def _generate(self, spec: RunSpec, run_dir: Path, state: dict[str, Any]) -> bool:
        out = run_dir / EVAL_DIR
        if state.get("generated"):
            return False
        from codepeft.study.engines import generate_arm

        earlier = saved_generations(out)
        adapter = run_dir / TRAIN_DIR / "adapter" if spec.kind == "train" else None
        generate_arm(spec, out, adapter, self.data_dir)
        count_killed_attempts(state["timings"], earlier, saved_generations(out))
        state["generated"] = True
        return True

    def _scored(self, run_dir: Path, spec: RunSpec, state: dict[str, Any]) -> bool:
        return (run_dir / EVAL_DIR / METRICS).exists() and state.get("scored_with") == self.scoring_config(spec)

    def scoring_config(self, spec: RunSpec) -> dict[str, Any]:
        from codepeft.metrics.exact_match import EM_AT_K_RULE  # lazily, as the engines: numpy, sandbox

        config = {"metrics": spec.dataset.metrics, "ks": self.config.ks, "timeout": self.config.scoring.timeout}
        if spec.dataset.metrics is None or "em" in spec.dataset.metrics:
            config["em_at_k"] = EM_AT_K_RULE  # EM's estimator changed once: rescore runs scored before
        return config

    def _score(self, spec: RunSpec, run_dir: Path, state: dict[str, Any]) -> bool:
        if self._scored(run_dir, spec, state):
            return False
        from codepeft.study.engines import score_arm

        score_arm(run_dir / EVAL_DIR, spec.dataset.metrics, self.config.ks, self.config.scoring.workers,
                  self.config.scoring.timeout, force=(run_dir / EVAL_DIR / METRICS).exists())
        state["scored_with"] = self.scoring_config(spec)
        return True


def recorded_work_seconds(timings: dict[str, float]) -> float:
    """A run's wall-clock training, generation and scoring time as recorded over all its attempts."""
    return sum(timings.get(f"{stage}_seconds", 0.0) for stage in ("train", "generation", "scoring"))


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (vLLM's worker, sandboxed code)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def count_killed_attempts(timings: dict[str, float], earlier: list[tuple[str, float]],
                          final: list[tuple[str, float]]) -> None:
    """Add the generation time of the records earlier, killed attempts saved to ``timings``.

    A killed attempt never reaches ``_stage``'s bookkeeping, so without this a resumed run would
    report only its last attempt's time. The finished file is in data-set order, not the order the
    records were saved in, so records are matched by id. Nothing is added when generation started
    over (a saved record is missing from the final file or carries another time)."""
    kept = dict(final)
    if not earlier or any(kept.get(i) != seconds for i, seconds in earlier):
        return
    seconds = sum(s for _, s in earlier)
    for key in ("generation_seconds", "generation_resumed_seconds"):
        timings[key] = round(timings.get(key, 0.0) + seconds, 3)


def primary_score(run_dir: Path, spec: RunSpec) -> float | None:
    path = run_dir / EVAL_DIR / METRICS
    if not path.exists():
        return None
    try:
        value = read_json(path).get(spec.dataset.primary_metric)
    except CodepeftError:
        return None
    return float(value) if isinstance(value, int | float) else None
