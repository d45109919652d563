"""The study runner: run directories keyed by config, reuse, resume, --force, failures, full disk.

Most tests replace the three engines (train, generate, score) with fakes that write the same files
the real ones do, so the runner's bookkeeping is tested in seconds; ``test_end_to_end_tiny_model``
runs the real training, generation and scoring on a tiny random model.
"""

from __future__ import annotations

import csv
import errno
import json
import shutil
from pathlib import Path

import pytest

from codepeft.cli import main
from codepeft.rundir import GENERATIONS, append_generations, read_generations, write_json, write_jsonl

ROWS = [("train" if i < 12 else "validation" if i < 16 else "test", i) for i in range(22)]


def write_dataset(directory: Path) -> Path:
    """A small JSONL data set with train / validation / test rows and assert tests."""
    path = directory / "toy.jsonl"
    lines = []
    for split, i in ROWS:
        lines.append(json.dumps({
            "id": f"t{i}", "split": split, "intent": f"return the number {i} plus one",
            "code": f"def f():\n    return {i} + 1", "tests": [f"assert f() == {i + 1}"],
        }))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_study(directory: Path, model: Path, data: Path, extra: str = "") -> Path:
    path = directory / "study.yaml"
    path.write_text(
        f"name: toy\nmodels: ['{model}']\ndatasets: ['jsonl:{data}']\n"
        "arms: [zero-shot, icl, lora]\nmetrics: [em, bleu]\nprimary_metric: em@1\n"
        "limits: {test_size: 4, max_steps: 2}\ntracking: none\n" + extra
    )
    return path


class FakeEngines:
    """Stand-ins for train / generate that write what the real ones write, and count their calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[tuple[str, str], BaseException] = {}
        self.kill_after: dict[str, tuple[int, float]] = {}  # arm -> (records saved, seconds each), then killed
        self.lora_misses: dict[int, int] = {}  # seed -> how many of the first test problems LoRA gets wrong

    def _maybe_fail(self, stage: str, arm: str) -> None:
        self.calls.append((stage, arm))
        error = self.fail.get((stage, arm))
        if error is not None:
            raise error

    def train(self, spec, output_dir, data_dir):
        self._maybe_fail("train", spec.arm)
        (output_dir / "adapter").mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "costs.json", {"trainable_parameters": 4096, "total_parameters": 100_000,
                                               "peak_rss_bytes": 300 * 2**20, "wall_seconds": 1.5, "steps": 2})
        (output_dir / "train_log.jsonl").write_text(
            '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 2, "val_loss": 1.7, "best": true}\n')

    def generate(self, spec, run_dir, adapter, data_dir):
        """Append the records not saved yet (as the real one resumes) in another order than the data set's
        (the real one batches longest prompt first), then put the file in data-set order; ``kill_after``
        stops early."""
        self._maybe_fail("generate", spec.arm)
        run_dir.mkdir(parents=True, exist_ok=True)
        task = spec.dataset.task
        examples = task.load(spec.dataset.spec.test_split)[: spec.test_size]
        write_json(run_dir / "config.json", {"model_identity": {"spec": spec.model, "num_parameters": 100_000}})
        saved = {r["id"] for r in read_generations(run_dir).records} if (run_dir / GENERATIONS).exists() else set()
        records = []
        for index, example in enumerate(examples):
            right = ((spec.arm == "lora" and index >= self.lora_misses.get(spec.seed, 0))
                     or (spec.arm == "zero-shot" and index % 2 == 0))
            code = example.reference if right else "pass"
            records.append({"id": example.id, "prompt": example.intent, "candidates": [code], "raw": [code],
                            "reference": example.reference, "tests": example.tests,
                            "prompt_tokens": 10 + 40 * (spec.arm == "icl"), "demonstrations": [],
                            "new_tokens": [5], "seconds": 0.01})
        in_query_order = [r["id"] for r in records]
        records = [r for r in reversed(records) if r["id"] not in saved]
        kill = self.kill_after.pop(spec.arm, None)
        if kill is not None:
            count, seconds = kill
            append_generations(run_dir, [{**r, "seconds": seconds} for r in records[:count]])
            raise KeyboardInterrupt
        append_generations(run_dir, records)
        finished = {r["id"]: r for r in read_generations(run_dir).records}
        write_jsonl(run_dir / GENERATIONS, [finished[i] for i in in_query_order])
        return run_dir


@pytest.fixture
def fakes(monkeypatch) -> FakeEngines:
    from codepeft.study import engines

    fake = FakeEngines()
    monkeypatch.setattr(engines, "train_arm", fake.train)
    monkeypatch.setattr(engines, "generate_arm", fake.generate)
    return fake


@pytest.fixture
def toy(tmp_path, tiny_causal_dir) -> tuple[Path, Path]:
    data = write_dataset(tmp_path)
    return write_study(tmp_path, tiny_causal_dir, data), tmp_path / "out"


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def read_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_study_runs_every_arm_and_writes_results(toy, fakes, capsys):
    study_file, out = toy
    code, stdout, _ = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 0
    assert "report:" in stdout and str((out / "report.html").resolve()) in stdout
    assert "lora" in stdout and "zero-shot" in stdout  # the leaderboard is printed
    assert "lora is best on em@1" in " ".join(stdout.split())  # and its findings, in plain words
    rows = {r["arm"]: r for r in read_rows(out)}
    assert set(rows) == {"zero-shot", "icl", "lora"}
    assert all(r["status"] == "done" for r in rows.values())
    assert float(rows["lora"]["em@1"]) == 100.0 and float(rows["zero-shot"]["em@1"]) == 50.0
    assert float(rows["icl"]["em@1"]) == 0.0
    assert rows["lora"]["trainable_params"] == "4096" and float(rows["lora"]["trainable_pct"]) == pytest.approx(4.096)
    assert rows["zero-shot"]["trainable_params"] == "0" and rows["zero-shot"]["total_params"] == "100000"
    assert float(rows["icl"]["prompt_tokens_mean"]) == 50.0
    assert float(rows["lora"]["train_seconds"]) == 1.5 and float(rows["lora"]["peak_memory_mb"]) >= 300
    assert float(rows["zero-shot"]["generation_seconds"]) >= 0
    summary = json.loads((out / "results.json").read_text())
    lora = next(s for s in summary["summary"] if s["arm"] == "lora")
    assert lora["metrics"]["em@1"]["vs_zero_shot"]["wins"] == 2
    assert lora["metrics"]["em@1"]["bootstrap_ci"] == [100.0, 100.0]
    provenance = next(iter(summary["provenance"].values()))
    assert provenance["codepeft_version"] and provenance["packages"]["torch"] and provenance["data_checksums"]
    assert (out / "report.html").exists() and (out / "report.md").exists()
    assert ("train", "lora") in fakes.calls and ("train", "icl") not in fakes.calls


def test_finished_runs_are_reused(toy, fakes, capsys):
    study_file, out = toy
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    metrics = sorted(out.glob("runs/*/eval/metrics.json"))
    stamps = [p.stat().st_mtime_ns for p in metrics]
    fakes.calls.clear()
    code, _, stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 0 and fakes.calls == []
    assert "reused" in stderr
    assert [p.stat().st_mtime_ns for p in metrics] == stamps


def test_runs_scored_by_an_earlier_em_rule_are_rescored_not_regenerated(toy, fakes, capsys):
    """EM@k of sampled candidates changed estimator once: a resumed study rescores what the old rule scored."""
    study_file, out = toy
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    zero_shot = next(out.glob("runs/*zero-shot*"))
    state = json.loads((zero_shot / "run.json").read_text())
    assert state["scored_with"]["em_at_k"]
    del state["scored_with"]["em_at_k"]  # as a run scored before the rule was recorded
    write_json(zero_shot / "run.json", state)
    metrics = zero_shot / "eval" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    fakes.calls.clear()
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    assert fakes.calls == []  # nothing generated or trained again
    assert metrics.stat().st_mtime_ns != stamp
    assert json.loads((zero_shot / "run.json").read_text())["scored_with"]["em_at_k"]
    assert float({r["arm"]: r for r in read_rows(out)}["zero-shot"]["em@1"]) == 50.0


def test_force_redoes_every_run(toy, fakes, capsys):
    study_file, out = toy
    run_cli(["study", str(study_file), "--out", str(out)], capsys)
    fakes.calls.clear()
    assert run_cli(["study", str(study_file), "--out", str(out), "--force"], capsys)[0] == 0
    assert sorted(fakes.calls) == sorted([("generate", "zero-shot"), ("generate", "icl"), ("train", "lora"),
                                          ("generate", "lora")])


def test_killed_study_resumes_without_redoing_finished_work(toy, fakes, capsys):
    study_file, out = toy
    fakes.fail[("generate", "lora")] = KeyboardInterrupt()
    code, _, _stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code != 0
    fakes.fail.clear()
    fakes.calls.clear()
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    assert fakes.calls == [("generate", "lora")]  # zero-shot and icl reused, lora's training kept
    assert all(r["status"] == "done" for r in read_rows(out))


def test_resumed_generation_counts_the_time_of_records_a_killed_attempt_saved(toy, fakes, capsys):
    """A killed attempt never adds its time itself: the records it saved carry it (their ``seconds``)."""
    study_file, out = toy
    fakes.kill_after["zero-shot"] = (2, 30.0)
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] != 0
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    state = json.loads(next(out.glob("runs/*zero-shot*/run.json")).read_text())
    assert state["attempts"] == 2 and state["cpu_counts_children"] is True
    assert state["timings"]["generation_resumed_seconds"] == 60.0
    assert 60.0 <= state["timings"]["generation_seconds"] < 70.0
    rows = {r["arm"]: r for r in read_rows(out)}
    assert float(rows["zero-shot"]["generation_seconds"]) >= 60.0
    assert float(rows["icl"]["generation_seconds"]) < 10.0  # runs that were not killed add nothing


def test_killed_attempts_add_nothing_when_generation_started_over():
    from codepeft.study.runner import count_killed_attempts

    timings = {"generation_seconds": 5.0}
    count_killed_attempts(timings, [("a", 3.0)], [("b", 1.0), ("a", 2.0)])  # generated again: another time
    count_killed_attempts(timings, [("a", 3.0)], [("b", 1.0)])  # the saved record is gone
    count_killed_attempts(timings, [], [("a", 1.0)])  # nothing was saved before
    assert timings == {"generation_seconds": 5.0}
    count_killed_attempts(timings, [("a", 3.0)], [("b", 1.0), ("a", 3.0)])  # kept, the file put in query order
    assert timings == {"generation_seconds": 8.0, "generation_resumed_seconds": 3.0}


def test_cpu_time_counts_finished_child_processes():
    """vLLM's worker and sandboxed programs are child processes: their CPU time is the run's too."""
    import subprocess
    import sys
    import time

    from codepeft.study.runner import cpu_seconds

    before, own_before = cpu_seconds(), time.process_time()
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.5\n"
                    "while time.process_time() < end: pass"], check=True)
    assert cpu_seconds() - before >= 0.5
    assert time.process_time() - own_before < 0.4  # this process alone did not do that work


def test_peak_memory_counts_a_stage_s_child_processes(toy, fakes, capsys, monkeypatch):
    """vLLM generates in a worker process: its memory is the stage's too, beside the study process's own."""
    import subprocess
    import sys

    from codepeft.study import engines

    study_file, out = toy
    real_generate = fakes.generate

    def generate_in_a_child(spec, run_dir, adapter, data_dir):
        if spec.arm == "icl":  # holds 300 MiB for a second, as a worker would
            subprocess.run([sys.executable, "-c", "import time\nblock = bytearray(300 * 2**20)\ntime.sleep(1)"],
                           check=True)
        return real_generate(spec, run_dir, adapter, data_dir)

    monkeypatch.setattr(engines, "generate_arm", generate_in_a_child)
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    rows = {r["arm"]: r for r in read_rows(out)}
    own, with_children = float(rows["icl"]["peak_memory_mb"]), float(rows["icl"]["peak_memory_with_children_mb"])
    assert with_children >= own + 250
    assert float(rows["zero-shot"]["peak_memory_with_children_mb"]) < own + 150  # no child: about its own peak


def test_failed_run_is_reported_and_the_study_goes_on(toy, fakes, capsys):
    study_file, out = toy
    fakes.fail[("generate", "icl")] = RuntimeError("boom in the decoder")
    code, _stdout, stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 1
    assert "1 of 3 runs failed" in stderr
    rows = {r["arm"]: r for r in read_rows(out)}
    assert rows["icl"]["status"] == "failed" and "RuntimeError: boom in the decoder" in rows["icl"]["error"]
    assert rows["lora"]["status"] == "done" and rows["zero-shot"]["status"] == "done"
    assert "boom in the decoder" in (out / "report.md").read_text()
    fakes.fail.clear()
    fakes.calls.clear()
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    assert fakes.calls == [("generate", "icl")]  # a rerun retries only the failed run


def test_full_disk_stops_with_one_line_and_keeps_finished_runs(toy, fakes, capsys):
    study_file, out = toy
    fakes.fail[("train", "lora")] = OSError(errno.ENOSPC, "No space left on device")
    code, _, stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 2
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "disk full" in lines[0] and "finished runs were kept" in lines[0]
    assert "Traceback" not in stderr
    finished = [json.loads(p.read_text()) for p in out.glob("runs/*/run.json")]
    assert sorted(s["arm"] for s in finished if s["status"] == "done") == ["icl", "zero-shot"]
    assert all((out / "runs" / p.parent.name / "eval" / "metrics.json").exists()
               for p in out.glob("runs/*/run.json") if json.loads(p.read_text())["status"] == "done")


def test_changed_config_is_a_new_run_and_keeps_the_old(toy, fakes, capsys):
    study_file, out = toy
    run_cli(["study", str(study_file), "--out", str(out)], capsys)
    before = {p.name for p in (out / "runs").iterdir()}
    fakes.calls.clear()
    assert run_cli(["study", str(study_file), "--out", str(out), "arms.lora.params.r=4"], capsys)[0] == 0
    after = {p.name for p in (out / "runs").iterdir()}
    assert before < after and len(after - before) == 1 and "lora" in next(iter(after - before))
    assert fakes.calls == [("train", "lora"), ("generate", "lora")]
    assert list(out.glob("study.previous-*.yaml"))  # the earlier definition is kept, not overwritten


def test_foreign_run_directory_is_not_overwritten(toy, fakes, capsys):
    study_file, out = toy
    run_cli(["study", str(study_file), "--out", str(out)], capsys)
    state_path = next(out.glob("runs/*zero-shot*/run.json"))
    state = json.loads(state_path.read_text())
    state["key"]["seed"] = 99
    state_path.write_text(json.dumps(state))
    code, _, stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 2 and "holds a different run" in stderr


def test_report_command_rebuilds_from_saved_runs(toy, fakes, capsys):
    study_file, out = toy
    run_cli(["study", str(study_file), "--out", str(out)], capsys)
    (out / "report.html").unlink()
    (out / "report.md").unlink()
    code, stdout, _ = run_cli(["report", str(out)], capsys)
    assert code == 0 and (out / "report.html").exists() and "| lora |" in (out / "report.md").read_text()
    assert "lora" in stdout


def test_report_on_a_directory_that_is_not_a_study(tmp_path, capsys):
    code, _, stderr = run_cli(["report", str(tmp_path)], capsys)
    assert code == 2 and "is not a study directory" in stderr


def test_end_to_end_tiny_model(tmp_path, tiny_causal_dir, capsys):
    """Real training, generation and scoring (pass@k in the sandbox) on a tiny random model."""
    data = write_dataset(tmp_path)
    extra = "generation: {max_new_tokens: 8, batch_size: 4}\ntraining: {batch_size: 2, max_length: 64}\n"
    study_file = write_study(tmp_path, tiny_causal_dir, data, extra)
    study_file.write_text(study_file.read_text().replace("metrics: [em, bleu]", "metrics: [em, bleu, passk]"))
    out = tmp_path / "out"
    code, _stdout, stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 0, stderr
    rows = {r["arm"]: r for r in read_rows(out)}
    assert all(r["status"] == "done" for r in rows.values()), rows
    assert {"em@1", "pass@1", "bleu"} <= set(rows["lora"])
    assert int(rows["lora"]["trainable_params"]) > 0 and float(rows["lora"]["train_seconds"]) > 0
    assert int(rows["lora"]["n"]) == 4
    assert float(rows["icl"]["prompt_tokens_mean"]) > float(rows["zero-shot"]["prompt_tokens_mean"])
    assert (out / "report.html").read_text().count("<svg") >= 2
    run_dirs = list(out.glob("runs/*lora*"))
    assert (run_dirs[0] / "train" / "adapter").is_dir() and (run_dirs[0] / "eval" / "generations.jsonl").exists()


def test_eval_dtype_reaches_generation_and_only_a_set_one_changes_run_ids(tmp_path, tiny_causal_dir, capsys):
    """`eval_dtype: bfloat16` generates in bf16 (recorded in the run's config) as a run of its own;
    the default (float32) leaves run keys as they were before the option existed."""
    data = write_dataset(tmp_path)
    extra = "generation: {max_new_tokens: 4, batch_size: 4}\n"
    study_file = write_study(tmp_path, tiny_causal_dir, data, extra)
    study_file.write_text(study_file.read_text().replace("arms: [zero-shot, icl, lora]", "arms: [zero-shot]"))
    out = tmp_path / "out"
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    assert run_cli(["study", str(study_file), "--out", str(out), "eval_dtype=bfloat16"], capsys)[0] == 0
    states = [json.loads(p.read_text()) for p in out.glob("runs/*/run.json")]
    assert len(states) == 2 and all(s["status"] == "done" for s in states)
    by_dtype = {s["key"].get("eval_dtype", "float32"): s for s in states}
    assert set(by_dtype) == {"float32", "bfloat16"} and "eval_dtype" not in by_dtype["float32"]["key"]
    configs = [json.loads(p.read_text()) for p in out.glob("runs/*/eval/config.json")]
    configs = {c["request"]["dtype"]: c for c in configs}
    assert set(configs) == {"float32", "bfloat16"}
    assert configs["bfloat16"]["model"]["dtype"] == "bfloat16"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about 2 minutes on 2 idle cores; far longer when the machine is shared
def test_default_study_small(tmp_path, real_home, monkeypatch, capsys):
    """The packaged default study (smollm2-135m, CoNaLa, 5 arms), shrunk to fit 2 minutes."""
    monkeypatch.setenv("CODEPEFT_HOME", str(real_home))
    out = tmp_path / "default"
    code, stdout, stderr = run_cli(["study", "--out", str(out), "limits.test_size=4", "limits.train_size=16",
                                    "limits.val_size=8", "generation.max_new_tokens=16"], capsys)
    assert code == 0, stderr[-3000:]
    rows = {r["arm"]: r for r in read_rows(out)}
    assert set(rows) == {"zero-shot", "icl", "rag", "lora", "ia3"}
    assert all(r["status"] == "done" and r["codebleu"] != "" for r in rows.values())
    assert int(rows["lora"]["trainable_params"]) > int(rows["ia3"]["trainable_params"]) > 0
    assert int(rows["lora"]["train_steps"]) == 2  # one epoch of 16 examples in batches of 8
    assert rows["lora"]["converged"] in {"True", "False"}
    assert float(rows["rag"]["prompt_tokens_mean"]) > float(rows["zero-shot"]["prompt_tokens_mean"])
    assert "report:" in stdout and "codebleu" in stdout and "Findings" in (out / "report.md").read_text()


def test_results_go_to_mlflow_when_it_is_installed(toy, fakes, capsys, monkeypatch):
    import importlib.machinery
    import sys
    import types

    logged: dict[str, list] = {"params": [], "metrics": [], "steps": []}
    fake = types.ModuleType("mlflow")
    fake.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    fake.set_tracking_uri = lambda uri: logged.setdefault("uri", uri)
    fake.set_experiment = lambda name: logged.setdefault("experiment", name)

    class Run:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    fake.start_run = lambda run_name: Run()
    fake.log_params = lambda params: logged["params"].append(params)
    fake.log_metrics = lambda metrics: logged["metrics"].append(metrics)
    fake.log_metric = lambda key, value, step: logged["steps"].append((key, value, step))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    study_file, out = toy
    study_file.write_text(study_file.read_text().replace("tracking: none", "tracking: auto"))
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    assert logged["experiment"] == "toy" and logged["uri"].endswith("/mlruns")
    assert sorted(p["arm"] for p in logged["params"]) == ["icl", "lora", "zero-shot"]
    assert any(m.get("em_at_1") == 100.0 for m in logged["metrics"])
    assert ("loss", 1.5, 2) in logged["steps"] and ("val_loss", 1.7, 2) in logged["steps"]


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorboard") is not None, reason="tensorboard installed")
def test_asking_for_a_tracker_that_is_not_installed(toy, fakes, capsys):
    study_file, out = toy
    code, _, stderr = run_cli(["study", str(study_file), "--out", str(out), "tracking=tensorboard"], capsys)
    assert code == 2 and "tensorboard is not installed" in stderr


def test_live_table_counts_statuses_and_estimates_time_left(toy, monkeypatch):
    import io

    from rich.console import Console

    from codepeft.study import progress as progress_module
    from codepeft.study.config import load_study
    from codepeft.study.progress import StudyProgress
    from codepeft.study.runner import RunEvent
    from codepeft.study.runs import plan_runs

    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    study_file, _ = toy
    runs = plan_runs(load_study(study_file), check_models=False)
    buffer = io.StringIO()
    table = StudyProgress(Console(file=buffer, width=160, force_terminal=True), title="toy")
    for spec in runs:
        table(RunEvent(spec, "queued"))
    assert table.eta_seconds() is None  # nothing finished yet
    zero, icl, _lora = runs
    table(RunEvent(zero, "generating"))
    clock[0] += 10
    table(RunEvent(zero, "done", score=50.0))
    table(RunEvent(icl, "generating"))
    clock[0] += 4
    assert table.eta_seconds() == pytest.approx(6 + 10)  # icl: 10 - 4 left; lora: a prompt run's 10 as a guess
    table(RunEvent(icl, "failed", error="RuntimeError: boom"))
    with table:
        pass
    text = buffer.getvalue()
    assert "1 done" in text and "1 failed" in text and "1 queued" in text and "RuntimeError: boom" in text
    assert "50.0" in text and "ETA 10s" in text


def test_eta_counts_what_a_resumed_or_rescored_run_cost_in_all(toy, monkeypatch):
    """A run only rescored now took seconds, but its recorded work (all attempts) is what the next costs."""
    import io

    from rich.console import Console

    from codepeft.study import progress as progress_module
    from codepeft.study.config import load_study
    from codepeft.study.progress import StudyProgress
    from codepeft.study.runner import RunEvent, recorded_work_seconds
    from codepeft.study.runs import plan_runs

    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    zero, icl, lora = plan_runs(load_study(toy[0]), check_models=False)
    table = StudyProgress(Console(file=io.StringIO(), width=160), title="toy")
    for spec in (zero, icl, lora):
        table(RunEvent(spec, "queued"))
    table(RunEvent(zero, "scoring"))
    clock[0] += 4
    work = recorded_work_seconds({"generation_seconds": 2500.0, "generation_cpu_seconds": 9.0,
                                  "scoring_seconds": 3.0})
    assert work == pytest.approx(2503.0)
    table(RunEvent(zero, "done", elapsed=4.0, score=0.0, work_seconds=work))
    assert table.eta_seconds() == pytest.approx(2 * 2503.0)
    assert "done in 4s" in table.plain_line(table.lines[zero.run_id])  # the line still says what it took now


def test_a_resumed_study_estimates_from_the_work_its_reused_runs_recorded(toy, fakes, capsys):
    """Reused runs cost nothing now, but the work they recorded is the best guess at what the rest cost."""
    from codepeft.study.runner import recorded_work_seconds

    study_file, out = toy
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    runs = sorted((out / "runs").glob("*/run.json"))
    recorded = [recorded_work_seconds(json.loads(p.read_text())["timings"]) for p in runs]
    assert all(seconds > 0 for seconds in recorded)
    run_json = next(p for p in runs if "__lora__" in p.parent.name)
    shutil.rmtree(run_json.parent)  # the train run is redone; the two prompt runs are reused
    code, _, stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 0, stderr
    reused = [line for line in stderr.splitlines() if "(reused)" in line]
    assert len(reused) == 2 and "ETA after the first run" not in stderr
    assert all("ETA " in line for line in reused)


def test_output_that_is_not_a_terminal_gets_one_plain_line_per_run_and_stage(toy, fakes, capsys):
    study_file, out = toy
    code, stdout, stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 0, stderr
    lines = stderr.splitlines()  # progress goes to stderr, the leaderboard and paths to stdout
    assert lines[0].startswith("study toy") and lines[0].endswith("3 runs")
    lora = [line for line in lines if " · lora · " in line]
    assert [line.split(": ", 1)[1].split(" in ")[0] for line in lora] == ["training", "generating", "scoring", "done"]
    assert lora[-1].startswith("[3/3]") and "em@1 100" in lora[-1] and "3 done" in lora[-1]
    assert not any(mark in stderr for mark in ("━", "┃", "\x1b[", "\r"))  # no table, bar or cursor movement
    assert "lora" in stdout and "report:" in stdout
    code, _, stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 0 and sum("done (reused)" in line for line in stderr.splitlines()) == 3


def test_third_party_warnings_and_logs_go_to_the_study_log(toy, fakes, capsys):
    import logging
    import warnings

    def noisy_generate(spec, run_dir, adapter, data_dir):
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning, stacklevel=1)
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward from "
                                                                   "kernels-community: no network")
        return fakes.generate(spec, run_dir, adapter, data_dir)

    from codepeft.study import engines

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engines, "generate_arm", noisy_generate)
        study_file, out = toy
        code, stdout, stderr = run_cli(["study", str(study_file), "--out", str(out)], capsys)
    assert code == 0, stderr
    assert "gemm_4bit" not in stdout + stderr and "is_gradient_checkpointing" not in stdout + stderr
    log = (out / "third-party.log").read_text()
    assert "Failed to load CPU gemm_4bit_forward" in log and "is_gradient_checkpointing" in log
    assert not logging.getLogger("bitsandbytes").handlers or logging.getLogger("bitsandbytes").propagate


def test_dry_run_prints_the_plan_with_sizes_time_and_resolution(toy, fakes, capsys):
    study_file, out = toy
    code, stdout, stderr = run_cli(["study", str(study_file), "--out", str(out), "--dry-run"], capsys)
    assert code == 0, stderr
    assert "plan: 3 runs = 1 model(s) x 1 data set(s) x 3 arm(s) x 1 seed(s)" in stdout
    # 12 train rows, 4 validation rows; batches of 8 -> 2 steps an epoch, capped by limits.max_steps=2
    assert "4 test problems; training on 12 examples, validating on 4" in stdout
    assert "lora: 2 steps per epoch, 2 planned" in stdout
    assert "time unknown" in stdout  # a tiny local model has no measured rate yet
    assert ("warning: jsonl:toy.jsonl with 4 test problems cannot resolve em@1 differences smaller than 5 points"
            in stdout)
    assert not (out / "runs").exists() and fakes.calls == []  # nothing ran
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    code, stdout, _ = run_cli(["study", str(study_file), "--out", str(out), "--dry-run"], capsys)
    assert code == 0 and stdout.count("(done)") == 3 and f"measured in {out}" in stdout
    assert "expected time left: ~0 s for 0 of 3 runs" in stdout
    # the resolvable difference now comes from the study's own arms (icl, lora) against zero-shot
    assert "from the median over this study's 2 finished arms vs zero-shot" in stdout
    assert "from the pilot" not in stdout.split("resolves on", 1)[1].split("\n", 1)[0]
    from codepeft.study.plan import existing_study, measured_rates

    rates = next(iter(measured_rates(existing_study(out)).values()))
    # a train method that has run is timed by its own rate; one not yet run by the pooled train rate
    assert set(rates["generate"]) == {"zero-shot", "icl", "lora", "train"}
    assert rates["generate"]["lora"] == rates["generate"]["train"] and set(rates["train_example_by_method"]) == {"lora"}


def test_dry_run_says_which_runs_a_killed_study_resumes_and_counts_their_time(toy, fakes, capsys):
    study_file, out = toy
    fakes.kill_after["lora"] = (1, 0.01)
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] != 0
    code, stdout, _ = run_cli(["study", str(study_file), "--out", str(out), "--dry-run"], capsys)
    assert code == 0
    lines = {line.split("  ")[0].split(" · ")[-2]: line for line in stdout.splitlines() if line.startswith("run ")}
    assert "(done)" in lines["zero-shot"] and "(done)" in lines["icl"]
    assert "(resumes: failed)" in lines["lora"]  # not "done": its generation was interrupted


def test_report_tests_the_best_arm_against_every_other_and_the_planned_pairs(tmp_path, tiny_causal_dir, fakes,
                                                                           capsys):
    data = write_dataset(tmp_path)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        f"name: toy\nmodels: ['{tiny_causal_dir}']\ndatasets: ['jsonl:{data}']\n"
        "arms: [zero-shot, icl, rag, lora]\nmetrics: [em]\nprimary_metric: em@1\n"
        "limits: {test_size: 6, max_steps: 2}\ntracking: none\ncomparisons: [[icl, rag], [icl, lora]]\n")
    out = tmp_path / "out"
    assert run_cli(["study", str(study_file), "--out", str(out)], capsys)[0] == 0
    text = (out / "report.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
            if line.startswith("| ") and " vs " in line.split(" | ")[0]}
    assert set(rows) == {"lora vs icl", "lora vs rag", "icl vs rag"}  # icl-lora planned too: tested once
    assert "+100.0" in rows["lora vs icl"] and "| 6 / 0 |" in rows["lora vs icl"]
    assert "+0.0" in rows["icl vs rag"] and "not resolved" in rows["icl vs rag"]
    findings = " ".join(text.split("## Findings", 1)[1].split("runs (", 1)[0].split())
    assert "Against the other arms: icl +100.0 [+100.0, +100.0] (p=0.031, Holm 0.19, not resolved); rag" in findings
    assert "Planned comparisons: icl vs rag +0.0" in findings
    summary = json.loads((out / "results.json").read_text())["summary"]
    lora = next(s for s in summary if s["arm"] == "lora")["metrics"]["em@1"]
    assert lora["vs_zero_shot"]["comparisons"] == 6  # 3 vs zero-shot + lora vs icl, lora vs rag, icl vs rag
    assert "Arms against each other on em@1" in (out / "report.html").read_text()
