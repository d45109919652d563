"""Bringing your own data through the CLI (issue 16): ``--data-option`` on every command that loads a
task, prompts that carry the function name and tests, setup lists, data without reference code, MBPP
sanitized, the APPS layouts in ``jsonl:``, JSON lists and duplicate ids."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from codepeft.cli import main
from codepeft.data import get_task

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
ASSERTS = EXAMPLES / "asserts.jsonl"
APPS_STYLE = EXAMPLES / "apps-style.jsonl"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, " ".join(captured.err.split())


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2 and "error: " in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def json_records(text: str) -> list[dict]:
    decoder, position, records = json.JSONDecoder(), 0, []
    text = text.strip()
    while position < len(text):
        record, position = decoder.raw_decode(text, position)
        records.append(record)
        position = len(text) - len(text[position:].lstrip())
    return records


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_run(run: Path, records: list[dict]) -> Path:
    run.mkdir(parents=True)
    write_rows(run / "generations.jsonl", records)
    return run


def references_as_candidates(spec: str, split: str = "test", **options: str) -> list[dict]:
    """Generation records whose candidate is the example's reference (or a given solution)."""
    task = get_task(spec, **options)
    return [{"id": e.id, "candidates": [e.reference], "reference": e.reference, "tests": e.tests}
            for e in task.load(split)]


# 1. --data-option on show (-o and --option stay), evaluate and train; loader errors name the flag


def test_show_takes_data_option_and_its_aliases(capsys):
    for flag in ("--data-option", "--option", "-o"):
        code, out, err = run_cli(capsys, "show", f"jsonl:{ASSERTS}", flag, "prompt_tests=1", "--limit", "1")
        assert code == 0, err
        assert "Your code should pass these tests:" in out


def test_loader_errors_name_the_flag(capsys, tmp_path):
    path = write_rows(tmp_path / "own.jsonl", [{"query": "add", "answer": "a + b"}])
    code, _, err = run_cli(capsys, "show", f"jsonl:{path}")
    one_line_error(code, err, "line 1 of", "no field 'intent'", "query", "--data-option intent_field=NAME")
    code, _, err = run_cli(capsys, "show", f"jsonl:{path}", "--data-option", "intent_field=query",
                           "--data-option", "code_field=anwser")
    one_line_error(code, err, "field 'anwser' given by code_field", "--data-option code_field=NAME")
    code, _, err = run_cli(capsys, "show", "apps", "--data-option", "difficult=interview")
    one_line_error(code, err, "no option 'difficult'", "difficulty", "--data-option KEY=VALUE")
    code, _, err = run_cli(capsys, "show", "apps", "--data-option", "difficulty")
    one_line_error(code, err, "not KEY=VALUE", "--data-option")
    code, _, err = run_cli(capsys, "show", f"mined:{path}", "--data-option", "prompt_tests=1")
    one_line_error(code, err, "data set 'mined' has no option 'prompt_tests'")


def test_evaluate_takes_data_options_and_redirects_a_misplaced_param(capsys, tmp_path, tiny_causal_dir):
    path = write_rows(tmp_path / "own.jsonl", [{"id": "q1", "ask": "Write a function to add two numbers.",
                                                 "tests": ["assert add(1, 2) == 3"]}])
    base = ["evaluate", "--model", str(tiny_causal_dir), "--dataset", f"jsonl:{path}", "--max-new-tokens", "4",
            "--run-dir", str(tmp_path / "run")]
    code, _, err = run_cli(capsys, *base, "-p", "intent_field=ask")
    one_line_error(code, err, "--param intent_field= is an option of data set", "--data-option intent_field=ask")
    code, _, err = run_cli(capsys, *base)
    one_line_error(code, err, "no field 'intent'", "--data-option intent_field=NAME")
    code, out, err = run_cli(capsys, *base, "--data-option", "intent_field=ask", "--data-option", "prompt_tests=1")
    assert code == 0, err
    assert "no reference code" in out
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert "add two numbers" in record["prompt"] and "assert add(1, 2) == 3" in record["prompt"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["request"]["data_options"] == {"intent_field": "ask", "prompt_tests": "1"}
    # other data options are another run: refused without --force
    code, _, err = run_cli(capsys, *base, "--data-option", "intent_field=ask")
    one_line_error(code, err, "different config", "data_options")


def test_train_takes_data_options(capsys, tmp_path, tiny_causal_dir):
    # only train rows: validation is a held-out share of them
    rows = [{"ask": f"return {n}", "answer": f"def f():\n    return {n}", "split": "train"} for n in range(8)]
    path = write_rows(tmp_path / "own.jsonl", rows)
    base = ["train", "--model", str(tiny_causal_dir), "--dataset", f"jsonl:{path}", "--max-steps", "1",
            "--batch-size", "2", "--dtype", "float32", "--output", str(tmp_path / "run")]
    code, _, err = run_cli(capsys, *base)
    one_line_error(code, err, "no field 'intent'", "--data-option intent_field=NAME")
    code, _, err = run_cli(capsys, *base, "--data-option", "intent_field=ask")
    one_line_error(code, err, "neither reference code", "--data-option code_field=NAME")
    code, _, err = run_cli(capsys, *base, "--param", "code_field=answer")
    one_line_error(code, err, "--data-option code_field=answer")
    code, _, err = run_cli(capsys, *base, "--data-option", "intent_field=ask", "--data-option", "code_field=answer")
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_options"] == {"intent_field": "ask", "code_field": "answer"}


# 2. what goes into a jsonl: prompt


def test_prompt_shows_signature_entry_point_and_first_tests(capsys, tmp_path):
    rows = [{"id": "a", "intent": "Find the shared elements of two lists.", "signature": "def similar(a, b):",
             "tests": ["assert similar([1], [1]) == [1]", "assert similar([1], [2]) == []"]},
            {"id": "b", "intent": "Negate a number.", "entry_point": "neg", "tests": ["assert neg(1) == -1"]}]
    path = write_rows(tmp_path / "own.jsonl", rows)
    code, out, _ = run_cli(capsys, "show", f"jsonl:{path}")
    assert code == 0 and "Use this signature:" in out and "def similar(a, b):" in out
    assert "Name the function `neg`." in out and "assert" not in out.split("tests:")[0]
    code, out, _ = run_cli(capsys, "show", f"jsonl:{path}", "--data-option", "prompt_tests=1")
    assert "Your code should pass these tests:" in out and "assert similar([1], [1]) == [1]" in out
    assert "assert similar([1], [2]) == []" not in out
    code, out, _ = run_cli(capsys, "show", f"jsonl:{path}", "--data-option", "prompt_tests=all")
    assert "assert similar([1], [2]) == []" in out
    code, _, err = run_cli(capsys, "show", f"jsonl:{path}", "--data-option", "prompt_tests=some")
    one_line_error(code, err, "prompt_tests='some'", "--data-option prompt_tests=N")


# 3. setup given as a list of lines is joined; anything else is an error


def test_setup_list_is_joined_and_runs(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "show", f"jsonl:{ASSERTS}", "--json", "--limit", "2")
    hypotenuse = json_records(out)[1]
    assert hypotenuse["tests"]["setup"] == "import math"
    # the tests call math.isclose: they pass only because the setup list became code
    records = references_as_candidates(f"jsonl:{ASSERTS}")
    for record in records:
        record["candidates"] = [record["candidates"][0].replace("import math\n", "")]
    run = write_run(tmp_path / "run", records)
    code, _, err = run_cli(capsys, "score", str(run), "--metrics", "passk", "--timeout", "5", "--workers", "2")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pass@1"] == pytest.approx(100.0), metrics["per_example"]["outcomes"]
    bad = write_rows(tmp_path / "bad.jsonl", [{"intent": "x", "tests": ["assert 1"], "setup": {"import": "math"}}])
    code, _, err = run_cli(capsys, "show", f"jsonl:{bad}")
    one_line_error(code, err, "setup code of", "dict", "not code or a list of code lines")


# 4. reference code is optional: pass@k runs, the reference metrics are skipped with a note


def test_data_without_reference_is_scored_by_passk(capsys, tmp_path):
    solutions = {"201": "def count_capitals(text):\n    return sum(c.isupper() for c in text)",
                 "202": "def swap_ends(items):\n    return items[-1:] + items[1:-1] + items[:1] if len(items) > 1 "
                        "else items",
                 "203": "for i in range(1, int(input()) + 1):\n    print(i)",
                 "204": "print(len(input().replace(' ', '')))"}
    code, out, _ = run_cli(capsys, "show", f"jsonl:{APPS_STYLE}", "--limit", "1")
    assert code == 0 and "(no reference)" in out
    records = references_as_candidates(f"jsonl:{APPS_STYLE}")
    assert all(r["reference"] == "" for r in records)
    for record in records:
        record["candidates"] = [solutions[record["id"]], "print('wrong')"]
    run = write_run(tmp_path / "run", records)
    code, _, err = run_cli(capsys, "score", str(run), "--timeout", "5", "--workers", "2")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pass@1"] == pytest.approx(50.0) and metrics["pass@2"] == pytest.approx(100.0)
    assert not any(key.startswith(("em@", "codebleu", "bleu")) for key in metrics)
    assert "em, codebleu, bleu skipped: the records have no reference code" in metrics["notes"]
    assert "skipped: the records have no reference code" in err
    code, _, err = run_cli(capsys, "score", str(run), "--force", "--metrics", "em")
    one_line_error(code, err, "no reference code", "--metrics passk")


def test_partial_references_score_em_over_those_that_have_one(capsys, tmp_path):
    records = [{"id": "a", "candidates": ["x = 1"], "reference": "x = 1", "tests": None},
               {"id": "b", "candidates": ["y = 2"], "reference": "", "tests": None}]
    run = write_run(tmp_path / "run", records)
    code, _, err = run_cli(capsys, "score", str(run), "--metrics", "em")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["em@1"] == pytest.approx(100.0) and metrics["per_example"]["em"] == [True, None]
    assert "em over the 1 of 2 records that have reference code" in metrics["notes"]


def test_training_needs_reference_code(capsys, tmp_path, tiny_causal_dir):
    rows = [{"intent": f"print {n}", "tests": [f"assert {n}"], "split": "train" if n < 4 else "validation"}
            for n in range(6)]
    path = write_rows(tmp_path / "own.jsonl", rows)
    code, _, err = run_cli(capsys, "train", "--model", str(tiny_causal_dir), "--dataset", f"jsonl:{path}",
                           "--max-steps", "1", "--output", str(tmp_path / "run"))
    one_line_error(code, err, "no reference code in its train split", "code_field=NAME")


# 5. the built-in mbpp task reads the sanitized variant too


SANITIZED = [
    {"source_file": "own", "task_id": 2, "prompt": "Write a function to return the larger of two numbers.",
     "code": "def larger(a, b):\n\treturn a if a > b else b", "test_imports": [],
     "test_list": ["assert larger(1, 2) == 2", "assert larger(3, 2) == 3"]},
    {"source_file": "own", "task_id": 12, "prompt": "Write a function to round a number up to an integer.",
     "code": "import math\ndef round_up(x):\n\treturn math.ceil(x)", "test_imports": ["import math"],
     "test_list": ["assert round_up(1.2) == 2", "assert round_up(-0.5) == math.ceil(-0.5)"]},
    {"source_file": "own", "task_id": 13, "prompt": "Write a function to double every item of a list.",
     "code": "def double(xs):\n\treturn [2 * x for x in xs]", "test_imports": [],
     "test_list": ["assert double([1, 2]) == [2, 4]"]},
]


def test_mbpp_sanitized_variant(capsys, tmp_path):
    (tmp_path / "mbpp").mkdir()
    (tmp_path / "mbpp" / "sanitized-mbpp.json").write_text(json.dumps(SANITIZED))
    code, out, err = run_cli(capsys, "show", "mbpp", "--data-dir", str(tmp_path), "--data-option", "variant=sanitized",
                             "--json")
    assert code == 0, err
    shown = json_records(out)
    assert [r["id"] for r in shown] == ["mbpp/12", "mbpp/13"]  # task 2 is in the prompt split, as in MBPP
    assert shown[0]["intent"].startswith("Write a function to round") and shown[0]["tests"]["setup"] == "import math"
    assert shown[0]["reference"] == "import math\ndef round_up(x):\n    return math.ceil(x)"
    code, out, _ = run_cli(capsys, "show", "mbpp", "--data-dir", str(tmp_path), "--data-option", "variant=sanitized",
                           "--limit", "1")
    assert "assert round_up(1.2) == 2" in out and "assert round_up(-0.5)" in out  # the asserts are in the prompt
    # path= reads a file of either variant wherever it is; a list file works as JSON lines too
    lines = write_rows(tmp_path / "sanitized.jsonl", SANITIZED)
    code, out, _ = run_cli(capsys, "show", "mbpp", "--data-option", f"path={lines}", "--split", "prompt", "--json")
    assert code == 0 and [r["id"] for r in json_records(out)] == ["mbpp/2"]
    run = write_run(tmp_path / "run", [
        {"id": e.id, "candidates": [e.reference.replace("import math\n", "")], "reference": e.reference,
         "tests": e.tests} for e in get_task("mbpp", tmp_path, variant="sanitized").load("test")])
    code, _, err = run_cli(capsys, "score", str(run), "--metrics", "passk", "--timeout", "5", "--workers", "2")
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["pass@1"] == pytest.approx(100.0)
    code, _, err = run_cli(capsys, "show", "mbpp", "--data-dir", str(tmp_path), "--data-option", "variant=clean")
    one_line_error(code, err, "unknown MBPP variant 'clean'", "variant=sanitized")


# Also: the APPS layouts, JSON lists and JSON lines whatever the file is called, duplicate ids by line


def test_codeparrot_apps_rows_load_as_the_builtin_apps_task(capsys, data_dir):
    code, out, err = run_cli(capsys, "show", f"jsonl:{data_dir / 'apps/apps_test_10.jsonl'}", "--json", "--limit", "10")
    assert code == 0, err
    own = json_records(out)
    builtin = get_task("apps", data_dir).load("test")
    assert [r["tests"] for r in own] == [e.tests for e in builtin]
    task = get_task(f"jsonl:{data_dir / 'apps/apps_test_10.jsonl'}")
    apps = get_task("apps", data_dir)
    assert [task.instruction(e) for e in task.load("test")] == [apps.instruction(e) for e in builtin]


def test_mapcoder_apps_layout_call_and_stdin(capsys):
    code, out, err = run_cli(capsys, "show", f"jsonl:{APPS_STYLE}", "--split", "train", "--json", "--limit", "5")
    assert code == 0, err
    rows = {r["id"]: r for r in json_records(out)}
    assert rows["101"]["tests"] == {"kind": "apps-call", "fn_name": "sum_even", "inputs": [[[1, 2, 3, 4]], [[]], [[7]]],
                                    "outputs": [[6], [0], [0]]}
    assert rows["102"]["tests"]["inputs"] == [["ab", 3], ["x", 1]]  # one argument per line, literals parsed
    assert rows["103"]["tests"] == {"kind": "apps-stdin", "inputs": ["1 2\n", "-5 5\n"], "outputs": [["3\n"], ["0\n"]]}
    assert rows["101"]["reference"].startswith("def sum_even")  # the first of `solutions`
    code, out, _ = run_cli(capsys, "show", f"jsonl:{APPS_STYLE}", "--split", "train", "--limit", "1")
    assert "def sum_even(nums):" in out and "Use Call-Based format" in out


def test_mapcoder_references_pass_in_the_sandbox(capsys, tmp_path):
    run = write_run(tmp_path / "run", references_as_candidates(f"jsonl:{APPS_STYLE}", "train"))
    code, _, err = run_cli(capsys, "score", str(run), "--metrics", "passk", "--timeout", "5", "--workers", "2")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pass@1"] == pytest.approx(100.0), metrics["per_example"]["outcomes"]


def test_json_list_and_misnamed_files(capsys, tmp_path):
    rows = [{"id": "a", "intent": "one", "code": "1"}, {"id": "b", "intent": "two", "code": "2"}]
    (tmp_path / "list.json").write_text(json.dumps(rows, indent=1))
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "list.jsonl").write_text(json.dumps(rows))
    with gzip.open(tmp_path / "list.json.gz", "wt") as handle:
        handle.write(json.dumps(rows))
    for name in ("list.json", "lines.json", "list.jsonl", "list.json.gz"):
        code, out, err = run_cli(capsys, "show", f"jsonl:{tmp_path / name}", "--limit", "0")
        assert code == 0 and "2 examples" in out, (name, err)


def test_duplicate_ids_are_reported_by_line(capsys, tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a", "intent": "x", "code": "1"}\n\n{"id": "b", "intent": "y", "code": "2"}\n'
                    '{"id": "a", "intent": "z", "code": "3"}\n')
    code, _, err = run_cli(capsys, "show", f"jsonl:{path}")
    one_line_error(code, err, "line 4 of", "repeats the id 'a' of line 1", "unique")
    (tmp_path / "dup.json").write_text(json.dumps([{"id": 1, "intent": "x", "code": "1"},
                                                   {"id": 1, "intent": "y", "code": "2"}]))
    code, _, err = run_cli(capsys, "show", f"jsonl:{tmp_path / 'dup.json'}")
    one_line_error(code, err, "record 2 of", "repeats the id '1' of record 1")


def test_study_yaml_passes_options_to_the_data_set(capsys, tmp_path, tiny_causal_dir):
    study = tmp_path / "own.yaml"
    study.write_text(f"""name: own
models: [{tiny_causal_dir}]
datasets:
  - task: jsonl:{ASSERTS}
    options: {{prompt_tests: 1}}
seeds: [0]
generation: {{max_new_tokens: 4}}
arms: {{zero-shot: {{}}}}
""")
    code, _, err = run_cli(capsys, "study", str(study), "--out", str(tmp_path / "out"), "limits.test_size=2")
    assert code == 0, err
    (generations,) = list((tmp_path / "out").rglob("generations.jsonl"))
    prompts = [json.loads(line)["prompt"] for line in generations.read_text().splitlines()]
    assert len(prompts) == 2 and "assert common_elements([1, 2, 3], [2, 3, 4]) == [2, 3]" in prompts[0]
