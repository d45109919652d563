"""``codepeft study --executor ray``: the same runs and results as the local executor, on a Ray cluster.

The slow tests start a real two-node cluster on this machine (``ray start`` twice, 1 CPU each) and
run a tiny-model study through the CLI; the fast ones cover what needs no cluster (configuration,
errors, the storage probe and the resource check).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from codepeft.study.config import load_study
from codepeft.study.executors import check_resources, probe_node, task_options
from test_study_runner import read_rows, run_cli, write_dataset, write_study


def measured(column: str) -> bool:
    """Times and memory peaks: they differ between any two runs, so the comparison leaves them out."""
    return column.endswith("_seconds") or "memory" in column


# checkpoints every step, so a worker can be killed mid-training and the retry resume from one
EXTRA = ("generation: {max_new_tokens: 8, batch_size: 4}\n"
         "training: {batch_size: 2, max_length: 64, eval_every: 1, val_limit: 2}\n")
STEPS = "limits.max_steps=30"


# -- without a cluster ---------------------------------------------------------------------------

def test_executor_ray_without_ray_installed_is_one_line(tmp_path, tiny_causal_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    study = write_study(tmp_path, tiny_causal_dir, write_dataset(tmp_path))
    code, _, stderr = run_cli(["study", str(study), "--out", str(tmp_path / "out"), "--executor", "ray"], capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "pip install 'codepeft[ray]'" in errors[0], stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_address_without_the_ray_executor_is_an_error(tmp_path, tiny_causal_dir, capsys):
    study = write_study(tmp_path, tiny_causal_dir, write_dataset(tmp_path))
    code, _, stderr = run_cli(["study", str(study), "--address", "auto"], capsys)
    assert code == 2 and "--executor ray" in stderr


def test_resources_are_per_arm_overridable_and_become_task_options(tmp_path, tiny_causal_dir):
    study = write_study(tmp_path, tiny_causal_dir, write_dataset(tmp_path),
                        "executor: ray\nresources: {cpus: 2, memory_gb: 1.5}\n")
    config = load_study(study, ["arms.lora.resources.gpus=0.5", "arms.lora.resources.cpus=1"])
    assert config.executor == "ray"
    lora = task_options(config.resources_for("lora"))
    assert lora == {"num_cpus": 1.0, "num_gpus": 0.5, "memory": int(1.5 * 2**30), "max_retries": 1,
                    "retry_exceptions": False}
    assert task_options(config.resources_for("icl"))["num_cpus"] == 2.0
    with pytest.raises(Exception, match=r"arms\.lora\.resources: gpus: .*whole number"):
        load_study(study, ["arms.lora.resources.gpus=1.5"])
    with pytest.raises(Exception, match=r"executor: Input should be 'local' or 'ray'"):
        load_study(study, ["executor=slurm"])


def test_an_arm_no_node_can_fit_is_refused(tmp_path, tiny_causal_dir):
    study = write_study(tmp_path, tiny_causal_dir, write_dataset(tmp_path), "resources: {cpus: 1}\n")
    config = load_study(study, ["arms.lora.resources.gpus=1"])
    nodes = [{"CPU": 1.0, "memory": 2.0**34}, {"CPU": 4.0, "memory": 2.0**34}]
    with pytest.raises(Exception, match=r"arm 'lora' asks for 1 CPU, 1 GPU per run, more than any Ray node has"):
        check_resources(config, nodes)
    check_resources(config, [*nodes, {"CPU": 1.0, "GPU": 1.0}])  # one GPU node is enough


def test_storage_probe_says_what_a_node_cannot_see(tmp_path):
    shared = tmp_path / "study"
    shared.mkdir()
    probe = shared / ".probe-x"
    assert "cannot see the study directory" in probe_node(str(probe), "token", [], str(tmp_path))
    probe.write_text("another study's token")
    assert "cannot see the study directory" in probe_node(str(probe), "token", [], str(tmp_path))
    probe.write_text("token")
    assert probe_node(str(probe), "token", [str(tmp_path)], str(tmp_path)) is None
    assert probe_node(str(probe), "token", ["/no/such/model"], str(tmp_path)) == "cannot see /no/such/model"


# -- on a two-node Ray cluster ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'codepeft[ray]'")
    from ray_cluster import LocalRayCluster

    with LocalRayCluster(nodes=2, cpus=1) as started:
        yield started


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, tiny_causal_dir):
    """The study run by the local executor: the results the Ray runs must reproduce."""
    root = tmp_path_factory.mktemp("ray-study")
    study = write_study(root, tiny_causal_dir, write_dataset(root), EXTRA)
    out = root / "local"
    from codepeft.cli import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODEPEFT_THREADS", "1")  # as conftest sets for every test: same numerics in every worker
        with pytest.raises(SystemExit) as exit_info:
            main(["study", str(study), "--out", str(out), STEPS])
    assert exit_info.value.code in (0, None)
    return study, out


def comparable(out: Path) -> dict[str, dict[str, str]]:
    return {row["run_id"]: {k: v for k, v in row.items() if not measured(k)} for row in read_rows(out)}


def states(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/run.json")}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_ray_study_matches_the_local_executor(cluster, local_reference, tmp_path, capsys):
    study, local = local_reference
    out = tmp_path / "ray"
    args = ["study", str(study), "--out", str(out), STEPS, "--executor", "ray", "--address", cluster.address]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr[-3000:]
    assert "results:" in stdout
    assert {p.name for p in (out / "runs").iterdir()} == {p.name for p in (local / "runs").iterdir()}
    assert comparable(out) == comparable(local)
    with open(out / "results.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    ran = states(out)
    assert all(s["status"] == "done" and s["attempts"] == 1 for s in ran.values())
    assert len({s["ran_on"][0]["node"] for s in ran.values()}) == 2  # both nodes took runs
    # again: every run reused, none redone
    code, _, stderr = run_cli(args, capsys)
    assert code == 0 and stderr.count("reused") >= 3
    assert {name: s["attempts"] for name, s in states(out).items()} == {name: 1 for name in ran}
    # an arm no node can run is refused before anything runs
    code, _, stderr = run_cli([*args, "arms.lora.resources.gpus=1"], capsys)
    assert code == 2 and "asks for 1 CPU, 1 GPU per run, more than any Ray node has" in stderr


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_killed_worker_is_retried_and_its_run_resumes(cluster, local_reference, tmp_path, capsys):
    from codepeft.training.checkpoints import complete_checkpoints

    study, local = local_reference
    out = tmp_path / "ray-killed"
    killed: dict[str, int] = {}
    finished = threading.Event()

    def kill_lora_worker_after_its_first_checkpoint() -> None:
        while not finished.is_set():
            for path in out.glob("runs/*lora*/run.json"):
                try:
                    state = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                checkpoints = complete_checkpoints(path.parent / "train" / "checkpoints")
                if state.get("status") == "training" and checkpoints and state.get("ran_on"):
                    os.kill(state["ran_on"][-1]["pid"], signal.SIGKILL)
                    killed.update(pid=state["ran_on"][-1]["pid"], checkpoints=len(checkpoints))
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_lora_worker_after_its_first_checkpoint, daemon=True)
    killer.start()
    try:
        code, _, stderr = run_cli(["study", str(study), "--out", str(out), STEPS, "--executor", "ray",
                                   "--address", cluster.address], capsys)
    finally:
        finished.set()
        killer.join()
    assert killed, "the lora run finished before its worker could be killed"
    assert code == 0, stderr[-3000:]
    lora = next(s for name, s in states(out).items() if "lora" in name)
    assert lora["status"] == "done" and lora["attempts"] == 2
    assert lora["ran_on"][0]["pid"] == killed["pid"] != lora["ran_on"][1]["pid"]
    others = [s for name, s in states(out).items() if "lora" not in name]
    assert all(s["attempts"] == 1 for s in others)  # finished runs were not redone
    log = [json.loads(line) for line in (next(out.glob("runs/*lora*")) / "train" / "train_log.jsonl")
           .read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e].count(1) == 1  # resumed from a checkpoint, not restarted
    assert comparable(out) == comparable(local)


def test_eta_divides_the_work_left_by_the_runs_going_at_once(tmp_path, tiny_causal_dir, monkeypatch):
    import io

    from rich.console import Console

    from codepeft.study import progress as progress_module
    from codepeft.study.progress import StudyProgress
    from codepeft.study.runner import RunEvent
    from codepeft.study.runs import plan_runs

    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    study = write_study(tmp_path, tiny_causal_dir, write_dataset(tmp_path))
    zero, icl, lora = plan_runs(load_study(study), check_models=False)
    table = StudyProgress(Console(file=io.StringIO()), title="toy")
    table(RunEvent(zero, "generating"))
    clock[0] += 10
    table(RunEvent(zero, "done"))
    table(RunEvent(icl, "generating"))  # two workers take the next two runs at once
    table(RunEvent(lora, "training"))
    clock[0] += 4
    assert table.eta_seconds() == pytest.approx((6 + 6) / 2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_table_failures_and_force_under_ray(cluster, local_reference, tmp_path):
    """Through the Python API: stages relayed to the table, a failing run reported while the rest go on, --force."""
    from codepeft.study.executors import RayExecutor
    from codepeft.study.runner import StudyRunner

    study, _ = local_reference
    out = tmp_path / "api"
    events: list[tuple[str, str, str, bool]] = []

    def run(overrides: list[str], force: bool = False):
        runner = StudyRunner(load_study(study, overrides), out, force=force, executor=RayExecutor(cluster.address),
                             on_event=lambda e: events.append((e.spec.model, e.spec.arm, e.status, e.cached)))
        return runner, runner.run()

    # a checkpoint without its weights passes planning (config.json is there) and fails on the worker
    broken = tmp_path / "broken-model"
    broken.mkdir()
    shutil.copy(Path(load_study(study).models[0]) / "config.json", broken)
    runner, outcome = run([f"models=['{load_study(study).models[0]}', '{broken}']", "arms=[zero-shot,icl]"])
    failed = sorted(spec.run_id for spec in runner.runs if spec.model == str(broken))
    assert len(failed) == 2 and sorted(outcome.failed) == failed and all(outcome.errors[i] for i in failed)
    assert all(json.loads((runner.run_dir(spec) / "run.json").read_text())["status"] == "failed"
               for spec in runner.runs if spec.run_id in failed)
    ok = [spec for spec in runner.runs if spec.run_id not in failed]
    assert len(ok) == 2 and all(outcome.statuses[spec.run_id] == "done" for spec in ok)  # the rest went on
    for arm in ("zero-shot", "icl"):
        # queued on submission, stages relayed from the worker, done or failed from the task's result
        assert [status for m, a, status, _ in events if a == arm and m != str(broken)] == [
            "queued", "generating", "scoring", "done"]
        assert [status for m, a, status, _ in events if a == arm and m == str(broken)] == [
            "queued", "generating", "failed"]
    events.clear()
    run(["arms=[zero-shot]"])
    assert [e[1:] for e in events] == [("zero-shot", "queued", False), ("zero-shot", "done", True)]  # reused
    events.clear()
    run(["arms=[zero-shot]"], force=True)
    assert [e[1:] for e in events] == [("zero-shot", s, False) for s in ("queued", "generating", "scoring", "done")]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_node_that_cannot_see_the_study_directory_stops_the_study(tmp_path, tiny_causal_dir, capsys):
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'codepeft[ray]'")
    from ray_cluster import LocalRayCluster, can_hide_storage

    if not can_hide_storage():
        pytest.skip("cannot start a Ray node in its own mount namespace here (needs root or user namespaces)")
    study = write_study(tmp_path, tiny_causal_dir, write_dataset(tmp_path))
    with LocalRayCluster(nodes=2, cpus=1, hide=True) as cluster:
        assert cluster.hidden is not None
        out = cluster.hidden / "study"  # the head sees it, the second node sees an empty directory there
        code, _, stderr = run_cli(["study", str(study), "--out", str(out), "--executor", "ray",
                                   "--address", cluster.address], capsys)
        assert not list(out.glob("runs/*/run.json"))  # nothing ran
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, stderr[-2000:]
    assert f"cannot see the study directory {out}" in errors[0] and "storage every node mounts" in errors[0]
