"""What a person sees while a study runs: a live table on a terminal, plain lines elsewhere.

On a terminal: one row per run with its status, time and score, and an ETA. When the output is not a
terminal (CI, a log file) a redrawn table would be noise, so each run's stage changes are printed as
one plain line each (``[2/5] smollm2-135m · conala · lora · s0: training``), with the score, time and
ETA when a run ends.

The ETA multiplies the runs left by the mean time of runs of the same kind (prompt or train) that
finished, each by its recorded work over all attempts: a run resumed or only rescored here counts
what it cost in all, not the minutes it took now, and a reused run counts the work its run.json
recorded, so a resumed study has an ETA from its first line. Until one of a kind has finished, the
other kind's mean stands in. With several runs
going at once (``executor: ray``), the time left is divided by how many are going.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from codepeft.study.runner import RunEvent
from codepeft.study.runs import RunSpec, short_dataset, short_model

STYLES = {"queued": "dim", "training": "yellow", "generating": "cyan", "scoring": "magenta", "done": "green",
          "failed": "bold red"}


@dataclass
class RunLine:
    spec: RunSpec
    status: str = "queued"
    cached: bool = False
    started: float | None = None
    elapsed: float | None = None
    score: float | None = None
    error: str | None = None


@dataclass
class StudyProgress:
    """Collects ``RunEvent``s; ``render`` draws the table; use as a context manager for a live display."""

    console: Console
    title: str = "study"
    lines: dict[str, RunLine] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=lambda: {"prompt": [], "train": []})
    live: Live | None = None
    plain: bool = False
    announced: bool = False

    def __enter__(self) -> StudyProgress:
        self.plain = not self.console.is_terminal
        if self.plain:
            return self
        self.live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False,
                         get_renderable=self.render)
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self.render(), refresh=True)
            self.live.__exit__(*exc)
            self.live = None
            if not self.console.is_terminal:
                self.console.line()  # a non-terminal Live leaves the last line open

    def __call__(self, event: RunEvent) -> None:
        line = self.lines.setdefault(event.spec.run_id, RunLine(event.spec))
        if event.status in {"training", "generating", "scoring"} and line.started is None:
            line.started = time.monotonic()
        if event.status in {"done", "failed"}:
            line.elapsed = 0.0 if event.cached else (
                time.monotonic() - line.started if line.started is not None else event.elapsed)
            if event.status == "done" and (event.work_seconds or not event.cached):
                self.durations[event.spec.kind].append(max(line.elapsed, event.work_seconds or 0.0))
        changed = line.status != event.status or event.status in {"done", "failed"}
        line.status, line.cached, line.score, line.error = event.status, event.cached, event.score, event.error
        if self.live is not None:
            self.live.refresh()
        elif self.plain and changed and event.status != "queued":
            if not self.announced:  # every run has been queued by now
                self.announced = True
                self._print(f"{self.title}: {len(self.lines)} runs")
            self._print(self.plain_line(line))

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def plain_line(self, line: RunLine) -> str:
        """One line for a run's new stage; a finished run adds its time, score and the study's counts and ETA."""
        position = list(self.lines).index(line.spec.run_id) + 1
        text = f"[{position}/{len(self.lines)}] {line.spec.label}: {line.status}" + (" (reused)" if line.cached else "")
        if line.status in {"done", "failed"}:
            if line.error:
                text += f": {line.error[:200]}"
            if not line.cached:
                text += f" in {_duration(line.elapsed)}"
            if line.score is not None:
                text += f", {line.spec.dataset.primary_metric} {line.score:.3g}"
            text += f" | {self.summary_text()}"
        return text

    def summary_text(self) -> str:
        counts = {s: sum(1 for ln in self.lines.values() if ln.status == s) for s in STYLES}
        eta = self.eta_seconds()
        text = " · ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs"
        return text + (f" · ETA {_duration(eta)}" if eta is not None else " · ETA after the first run")

    def eta_seconds(self) -> float | None:
        means = {kind: sum(v) / len(v) for kind, v in self.durations.items() if v}
        if not means:
            return None
        fallback = sum(means.values()) / len(means)
        left = 0.0
        at_once = 0
        for line in self.lines.values():
            if line.status in {"done", "failed"}:
                continue
            at_once += line.started is not None
            expected = means.get(line.spec.kind, fallback)
            running = time.monotonic() - line.started if line.started is not None else 0.0
            left += max(expected - running, 0.0)
        return left / max(at_once, 1)  # runs going at once (a Ray cluster's) share the work left

    def render(self) -> Group:
        table = Table(title=self.title, expand=False, show_lines=False)
        for column in ("model", "data set", "arm", "seed", "status", "time", "score"):
            table.add_column(column, justify="right" if column in {"seed", "time", "score"} else "left")
        for line in self.lines.values():
            spec = line.spec
            status = Text(line.status + (" (reused)" if line.cached else ""), style=STYLES.get(line.status, ""))
            if line.error:
                status.append(f": {line.error[:80]}", style="red")
            elapsed = line.elapsed if line.elapsed is not None else (
                time.monotonic() - line.started if line.started is not None else None)
            table.add_row(short_model(spec.model), short_dataset(spec.dataset.spec.task),
                          spec.arm, str(spec.seed), status, _duration(elapsed),
                          "" if line.score is None else f"{line.score:.1f}")
        return Group(table, Text(self.summary_text()))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
