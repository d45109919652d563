"""``evaluate`` and ``codepeft evaluate``: the run directory, resuming a killed run, refusing to clobber one,
and one-line errors for bad input."""

from __future__ import annotations

import importlib
import json

import pytest

from codepeft.cli import _load_commands, main
from codepeft.data import get_task
from codepeft.errors import CodepeftError
from codepeft.generation import GenerationSettings, evaluate
from codepeft.metrics import run_summary
from codepeft.models import load_model
from codepeft.rundir import read_generations

evaluate_module = importlib.import_module("codepeft.generation.evaluate")
SETTINGS = GenerationSettings(max_new_tokens=8, batch_size=4)
FIELDS = {"id", "prompt", "candidates", "raw", "reference", "tests", "prompt_tokens", "demonstrations",
          "new_tokens", "seconds"}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Tiny models gain nothing from threads, and on a shared, busy CPU two threads spin-wait 10x slower."""
    monkeypatch.setenv("CODEPEFT_THREADS", "1")


@pytest.fixture(scope="module")
def tiny(tiny_causal_dir):
    return load_model(tiny_causal_dir, dtype="float32", threads=1)


def cli(*args: str) -> int:
    _load_commands()
    try:
        main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_evaluate_writes_the_run_directory(tiny, data_dir, tmp_path):
    run = evaluate(tiny, "conala", run_dir=tmp_path / "run", limit=5, data_dir=data_dir, settings=SETTINGS)
    records = read_generations(run).records
    queries = get_task("conala", data_dir).load("test")[:5]
    assert [r["id"] for r in records] == [q.id for q in queries]  # data-set order, not batch order
    for record, query in zip(records, queries, strict=True):
        assert set(record) >= FIELDS
        assert record["reference"] == query.reference and query.intent in record["prompt"]
        assert len(record["candidates"]) == len(record["raw"]) == 1 and record["demonstrations"] == []
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["config_sha256"] == tiny.identity["config_sha256"]
    assert config["generation"]["max_new_tokens"] == 8 and config["seed"] == 0
    assert config["method"] == {"name": "zero-shot", "kind": "prompt", "params": {}, "pool_split": None}
    assert config["data_checksums"] == {"conala:test": get_task("conala", data_dir).data_checksum("test")}
    environment = json.loads((run / "environment.json").read_text())
    assert environment["packages"]["torch"] and environment["data_checksums"] == config["data_checksums"]
    assert run_summary(run)["n"] == 5


def test_candidates_are_postprocessed_raw_cut_at_stops(tiny, data_dir, tmp_path):
    from codepeft.data.postprocess import cut_at_stop

    first = evaluate(tiny, "conala", run_dir=tmp_path / "a", limit=3, data_dir=data_dir, settings=SETTINGS)
    raw = read_generations(first).records[0]["raw"][0]
    stop = raw[2:4]
    settings = SETTINGS.model_copy(update={"stop": [stop]})
    run = evaluate(tiny, "conala", run_dir=tmp_path / "b", limit=3, data_dir=data_dir, settings=settings)
    task = get_task("conala", data_dir)
    for record in read_generations(run).records:
        assert record["candidates"] == [task.postprocess(cut_at_stop(r, [stop])) for r in record["raw"]]
    assert stop not in read_generations(run).records[0]["candidates"][0]


def test_resume_after_a_kill_skips_finished_examples(tiny, data_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    evaluate(tiny, "conala", run_dir=run_dir, limit=6, data_dir=data_dir, settings=SETTINGS)
    path = run_dir / "generations.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write

    prompted: list[int] = []
    real_generate = evaluate_module.generate

    def counting(loaded, prompts, settings, on_batch=None, **options):
        prompted.append(len(prompts))
        return real_generate(loaded, prompts, settings, on_batch=on_batch, **options)

    monkeypatch.setattr(evaluate_module, "generate", counting)
    evaluate(tiny, "conala", run_dir=run_dir, limit=6, data_dir=data_dir, settings=SETTINGS)
    assert prompted == [4]
    resumed = path.read_text().splitlines(keepends=True)
    assert resumed[:2] == lines[:2] and len(resumed) == 6
    assert [json.loads(x)["id"] for x in resumed] == [json.loads(x)["id"] for x in lines]
    assert [json.loads(x)["raw"] for x in resumed] == [json.loads(x)["raw"] for x in lines]

    evaluate(tiny, "conala", run_dir=run_dir, limit=6, data_dir=data_dir, settings=SETTINGS)  # finished: no work
    assert prompted == [4]


def test_a_finished_run_is_not_overwritten_by_another_config(tiny, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    evaluate(tiny, "conala", run_dir=run_dir, limit=2, data_dir=data_dir, settings=SETTINGS)
    other = SETTINGS.model_copy(update={"max_new_tokens": 4})
    with pytest.raises(CodepeftError, match=r"different config \(generation\).*--force"):
        evaluate(tiny, "conala", run_dir=run_dir, limit=2, data_dir=data_dir, settings=other)
    evaluate(tiny, "conala", run_dir=run_dir, limit=2, data_dir=data_dir, settings=other, force=True)
    assert json.loads((run_dir / "config.json").read_text())["generation"]["max_new_tokens"] == 4
    assert all(max(r["new_tokens"]) <= 4 for r in read_generations(run_dir).records)


def test_icl_loads_the_pool_and_records_demonstrations(tiny, data_dir, tmp_path):
    run = evaluate(tiny, "conala", method="icl", method_params={"k": 2}, run_dir=tmp_path / "icl", limit=2,
                   data_dir=data_dir, settings=SETTINGS)
    records = read_generations(run).records
    assert all(len(r["demonstrations"]) == 2 for r in records)
    config = json.loads((run / "config.json").read_text())
    assert config["method"]["params"]["k"] == 2 and set(config["data_checksums"]) == {"conala:test", "conala:train"}


def test_training_methods_are_refused(tiny, data_dir, tmp_path):
    with pytest.raises(CodepeftError, match="trains a model"):
        evaluate(tiny, "conala", method="lora", run_dir=tmp_path / "x", limit=1, data_dir=data_dir)


def test_cli_evaluate_runs_and_prints_em(tiny_causal_dir, data_dir, tmp_path, capsys):
    run_dir = tmp_path / "cli-run"
    code = cli("evaluate", "--model", str(tiny_causal_dir), "--dataset", "conala", "--limit", "3",
               "--max-new-tokens", "6", "--data-dir", str(data_dir), "--run-dir", str(run_dir))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "3 examples" in captured.out and "EM@1" in captured.out and str(run_dir) in captured.out
    assert len(read_generations(run_dir).records) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nosuchset"], "unknown data set 'nosuchset'"),
        (["--model", "./no/such/model"], "model path './no/such/model' not found"),
        (["--model", "nobody/no-such-model"], "HF_HUB_OFFLINE=1"),
        (["--method", "nosuch"], "unknown method 'nosuch'"),
        (["--method", "lora"], "trains a model"),
        (["--param", "k"], "is not KEY=VALUE"),
        (["--method", "icl", "--param", "bogus=1"], "method 'icl'"),
        (["--n", "2"], "greedy decoding returns one candidate"),
        (["--split", "nosplit"], "has no split 'nosplit'"),
        (["--limit", "0"], "limit must be at least 1"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, message, tiny_causal_dir, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = ["evaluate", "--model", str(tiny_causal_dir), "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "r")]
    code = cli(*base, *args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in " ".join(err.split()) and "Traceback" not in err
