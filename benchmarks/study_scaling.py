"""Study scaling: the local executor vs the Ray executor on 1 and 2 local Ray nodes, same study.

The study: a tiny random Llama (tests/tiny.py), the toy JSONL data set of the study tests, arms
zero-shot and ICL, 20 seeds: 40 prompt runs of 4 test problems each (greedy, 8 new tokens, EM and
BLEU). Each configuration runs the whole study into a fresh directory; the time is that of
``StudyRunner.run`` (for Ray: connecting, the storage probe and all 40 tasks; the clusters are
started beforehand with ``ray start``, 1 CPU per node, and their start-up is reported apart).
Every configuration must produce the same results.csv up to the timing columns.

    nice -n 10 .venv/bin/python benchmarks/study_scaling.py [--seeds 20] [--repeats 1]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tiny model, the toy data set and the local cluster of the tests

TIMING = {"train_seconds", "generation_seconds", "total_seconds", "cpu_seconds", "peak_memory_mb",
          "peak_gpu_memory_mb"}


def write_study(root: Path, seeds: int) -> Path:
    from test_study_runner import write_dataset
    from tiny import save_tiny

    model = save_tiny(root / "tiny", "causal", chat=True)
    data = write_dataset(root)
    study = root / "study.yaml"
    study.write_text(
        f"name: scaling\nmodels: ['{model}']\ndatasets: ['jsonl:{data}']\narms: [zero-shot, icl]\n"
        f"seeds: {list(range(seeds))}\nmetrics: [em, bleu]\nprimary_metric: em@1\nlimits: {{test_size: 4}}\n"
        "generation: {max_new_tokens: 8, batch_size: 4}\ntracking: none\n"
    )
    return study


def run_study(study: Path, out: Path, address: str | None) -> float:
    from codepeft.report import build_reports
    from codepeft.study.config import load_study
    from codepeft.study.executors import RayExecutor
    from codepeft.study.runner import StudyRunner

    config = load_study(study)
    runner = StudyRunner(config, out, executor=RayExecutor(address) if address else None)
    started = time.perf_counter()
    outcome = runner.run()
    seconds = time.perf_counter() - started
    if outcome.failed:
        raise SystemExit(f"{len(outcome.failed)} runs failed under {out}")
    build_reports(out)
    return seconds


def comparable(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        rows = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]
    return sorted(rows, key=lambda row: row["run_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="runs = 2 arms x seeds")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each configuration; medians reported")
    args = parser.parse_args()
    os.environ.setdefault("CODEPEFT_THREADS", "1")  # one thread per run: what a 1-CPU task gets
    with tempfile.TemporaryDirectory(prefix="study-scaling-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("CODEPEFT_HOME", str(root / "home"))
        times, startup = measure(write_study(root, args.seeds), root, args.repeats)
    report(times, startup, 2 * args.seeds, args.repeats)


def measure(study: Path, root: Path, repeats: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each configuration in turn, ``repeats`` times; stops when one's results differ from the local executor's."""
    from ray_cluster import LocalRayCluster

    times: dict[str, list[float]] = {"local executor": [], "ray, 1 node": [], "ray, 2 nodes": []}
    startup: dict[str, float] = {}
    reference: list[dict[str, str]] | None = None
    for repeat in range(repeats):
        for name in times:
            out = root / f"{name.replace(' ', '').replace(',', '-')}-{repeat}"
            if name == "local executor":
                seconds = run_study(study, out, None)
            else:
                started = time.perf_counter()
                with LocalRayCluster(nodes=1 if "1 node" in name else 2, cpus=1) as cluster:
                    startup[name] = time.perf_counter() - started
                    seconds = run_study(study, out, cluster.address)
            times[name].append(seconds)
            rows = comparable(out)
            reference = reference or rows
            same = rows == reference
            print(f"{name}: {seconds:.1f} s, results identical to the local executor's: {same}", flush=True)
            if not same:
                raise SystemExit(f"results differ: {out}")
    return times, startup


def report(times: dict[str, list[float]], startup: dict[str, float], runs: int, repeats: int) -> None:
    base = statistics.median(times["local executor"])
    print(f"\n{runs} runs, median of {repeats}; machine load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| executor | wall (s) | runs/min | speed-up vs local | cluster start (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        start = f"{startup[name]:.1f}" if name in startup else "-"
        print(f"| {name} | {median:.1f} | {60 * runs / median:.1f} | {base / median:.2f}x | {start} |")


if __name__ == "__main__":
    main()
