"""``codepeft score RUN_DIR`` and ``score_run``: metrics.json contents, rescoring, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codepeft.cli import main
from codepeft.errors import CodepeftError
from codepeft.metrics import score_run

ADD = {"kind": "humaneval", "prompt": "def add(a, b):\n", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}
NEG = {"kind": "humaneval", "prompt": "def neg(a):\n", "entry_point": "neg",
       "test": "def check(candidate):\n    assert candidate(2) == -2\n"}
RECORDS = [
    {"id": "add", "candidates": ["    return a + b", "    return a - b"], "reference": "    return a + b",
     "tests": ADD},
    {"id": "neg", "candidates": ["    return a", "    while True:\n        pass"], "reference": "    return -a",
     "tests": NEG},
]


def _write_run(path: Path, records, tail: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + tail
    (path / "generations.jsonl").write_text(text)
    return path


def _cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, " ".join(captured.err.split())


def test_score_writes_every_metric_and_per_example_results(tmp_path, capsys):
    run = _write_run(tmp_path / "run", RECORDS)
    code, out, err = _cli(["score", str(run), "--timeout", "2", "--workers", "2"], capsys)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["n"], metrics["truncated"]) == (2, False)
    assert metrics["em@1"] == pytest.approx(50.0) and metrics["em@2"] == pytest.approx(50.0)
    # add: 1 of 2 correct; neg: 0 of 2 (one wrong, one timed out).
    assert metrics["pass@1"] == pytest.approx(25.0) and metrics["pass@2"] == pytest.approx(50.0)
    assert "pass@5" not in metrics
    assert metrics["per_example"]["passed"] == [[True, False], [False, False]]
    assert metrics["per_example"]["em"] == [True, False]
    statuses = [[o["status"] for o in sample] for sample in metrics["per_example"]["outcomes"]]
    assert statuses == [["passed", "failed"], ["failed", "timed out"]]
    for key in ("codebleu", "codebleu_package", "codebleu_components", "bleu", "chrf"):
        assert key in metrics
    assert "pass@1" in out and "codebleu" in out


def test_rescoring_needs_force(tmp_path, capsys):
    run = _write_run(tmp_path / "run", RECORDS[:1])
    assert _cli(["score", str(run), "--metrics", "em"], capsys)[0] == 0
    code, _, err = _cli(["score", str(run), "--metrics", "em,bleu"], capsys)
    assert code == 2 and "already exists: pass --force" in err
    assert _cli(["score", str(run), "--metrics", "em,bleu", "--force"], capsys)[0] == 0
    assert "bleu" in json.loads((run / "metrics.json").read_text())


def test_truncated_last_line_is_reported_and_complete_lines_scored(tmp_path, capsys):
    run = _write_run(tmp_path / "run", RECORDS, tail='{"id": "cut", "candidates": ["ret')
    code, _, err = _cli(["score", str(run), "--metrics", "em,passk", "--timeout", "2"], capsys)
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["truncated"] is True and metrics["n"] == 2
    assert "truncated" in err


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "not found: pass the directory `codepeft evaluate` wrote"),
        ("no-generations", "no generations file at"),
        ("malformed", "line 1 is malformed"),
        ("empty", "is empty: regenerate the run"),
    ],
)
def test_bad_run_directories_are_one_line_errors(tmp_path, capsys, setup, message):
    run = tmp_path / "run"
    if setup != "missing":
        run.mkdir()
    if setup == "malformed":
        (run / "generations.jsonl").write_text("{not json\n" + json.dumps(RECORDS[0]) + "\n")
    if setup == "empty":
        (run / "generations.jsonl").write_text("\n")
    code, _, err = _cli(["score", str(run)], capsys)
    assert code == 2 and err.startswith("error:") and message in err and "Traceback" not in err


def test_pass_at_k_without_tests(tmp_path, capsys):
    records = [{"id": "a", "candidates": ["x = 1"], "reference": "x = 1", "tests": None}]
    run = _write_run(tmp_path / "run", records)
    code, _, err = _cli(["score", str(run), "--metrics", "em,passk"], capsys)
    assert code == 2 and "have no tests, so pass@k cannot be computed" in err
    # Without an explicit request, pass@k is skipped with a note.
    metrics = score_run(run)
    assert "pass@1" not in metrics and metrics["em@1"] == pytest.approx(100.0)
    assert "pass@k skipped: the records have no tests" in metrics["notes"]


def test_unknown_metric_and_bad_timeout(tmp_path):
    run = _write_run(tmp_path / "run", RECORDS[:1])
    with pytest.raises(CodepeftError, match="unknown metric rouge"):
        score_run(run, metrics="em,rouge")
    with pytest.raises(CodepeftError, match="must be positive"):
        score_run(run, timeout=0)


def test_recursion_errors_get_one_label_through_the_cli(tmp_path, capsys):
    """Issue #16 point 6 through ``codepeft score``: a RecursionError is ``failed`` with its reason, whether the
    traceback fits the output cap (plain recursion) or runs past it (mutual recursion is not folded)."""
    plain = "    return add(a, b)"
    mutual = "    return f(a)\n\ndef f(n):\n    return g(n + 1)\n\ndef g(n):\n    return f(n + 1)\n"
    records = [{"id": "add", "candidates": [plain, mutual], "reference": "    return a + b", "tests": ADD}]
    run = _write_run(tmp_path / "run", records)
    code, _, err = _cli(["score", str(run), "--metrics", "passk", "--timeout", "5", "--workers", "1"], capsys)
    assert code == 0, err
    outcomes = json.loads((run / "metrics.json").read_text())["per_example"]["outcomes"][0]
    assert [o["status"] for o in outcomes] == ["failed", "failed"], outcomes
    assert all(o["reason"].startswith("RecursionError: maximum recursion depth") for o in outcomes), outcomes


def test_similarity_metrics_have_sentence_level_scores_per_problem(tmp_path, capsys):
    import sacrebleu

    records = [{"id": "same", "candidates": ["x = sorted(a, key=len)"], "reference": "x = sorted(a, key=len)"},
               {"id": "other", "candidates": ["print(b)"], "reference": "y = {k: v for k, v in d.items()}"}]
    run = _write_run(tmp_path / "run", records)
    code, _, err = _cli(["score", str(run), "--metrics", "codebleu,bleu"], capsys)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    per = metrics["per_example"]
    # sentence-level beside the corpus headline: a perfect answer scores near the top, an unrelated one far less
    assert per["codebleu"][0] > 0.95 and per["codebleu"][1] < 0.5
    assert per["bleu"][0] == pytest.approx(100.0)
    assert per["bleu"][1] == pytest.approx(sacrebleu.sentence_bleu("print(b)", [records[1]["reference"]]).score)
    assert per["chrf"][1] == pytest.approx(sacrebleu.sentence_chrf("print(b)", [records[1]["reference"]]).score)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(["x = sorted(a, key=len)", "print(b)"],
                                                                  [[r["reference"] for r in records]]).score)
