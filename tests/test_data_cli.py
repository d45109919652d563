"""``codepeft datasets`` / ``codepeft show``, and every bad-input case of the data sets through the CLI."""

from __future__ import annotations

import json

import pytest

from codepeft.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_datasets_lists_every_task(capsys):
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0
    for name in ("conala", "conala-curated", "codealpacapy", "apps", "humaneval", "mbpp", "jsonl"):
        assert name in out
    assert "study-test" in out and "optional" in out


def test_show_prints_examples_and_counts(capsys, data_dir):
    code, out, _ = run_cli(capsys, "show", "mbpp", "--split", "prompt", "--limit", "2", "--data-dir", str(data_dir))
    assert code == 0
    assert "mbpp prompt: 10 examples" in out and "mbpp/1 instruction" in out and "mbpp/2 instruction" in out
    assert "mbpp/3 instruction" not in out and "def min_cost" in out


def test_show_json_with_options(capsys, data_dir):
    code, out, _ = run_cli(capsys, "show", "apps", "--data-dir", str(data_dir), "-o", "difficulty=introductory",
                           "--limit", "5", "--json")
    assert code == 0
    decoder, position, records = json.JSONDecoder(), 0, []
    text = out.strip()
    while position < len(text):
        record, position = decoder.raw_decode(text, position)
        records.append(record)
        position = len(text) - len(text[position:].lstrip())
    assert len(records) == 3 and all(r["tests"]["kind"] == "apps-stdin" for r in records)


def test_show_prints_brackets_literally(capsys, data_dir):
    code, out, _ = run_cli(capsys, "show", "humaneval", "--split", "study-test", "--limit", "1",
                           "--data-dir", str(data_dir))
    assert code == 0 and "humaneval study-test: 41 examples" in out
    assert "numbers: List[float], threshold: float" in out


def test_show_user_jsonl(capsys, tmp_path):
    path = tmp_path / "own.jsonl"
    path.write_text(json.dumps({"id": "q1", "prompt": "reverse a list", "answer": "lst[::-1]"}) + "\n")
    code, out, _ = run_cli(capsys, "show", f"jsonl:{path}", "-o", "intent_field=prompt", "-o", "code_field=answer")
    assert code == 0 and "q1 instruction" in out and "lst[::-1]" in out


def test_unknown_data_set(capsys):
    code, _, err = run_cli(capsys, "show", "conalla")
    assert_one_line_error(code, err, "unknown data set 'conalla'", "codepeft datasets")


def test_unknown_split(capsys, data_dir):
    code, _, err = run_cli(capsys, "show", "conala", "--split", "dev", "--data-dir", str(data_dir))
    assert_one_line_error(code, err, "no split 'dev'", "train, validation, test")


def test_split_missing_locally(capsys, data_dir):
    code, _, err = run_cli(capsys, "show", "apps", "--split", "train", "--data-dir", str(data_dir))
    assert_one_line_error(code, err, "no local file for split 'train'", "--split test")


def test_missing_data_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "show", "mbpp", "--data-dir", str(tmp_path))
    assert_one_line_error(code, err, "mbpp/mbpp.jsonl", "--data-dir")


def test_missing_data_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "show", "mbpp", "--data-dir", str(tmp_path / "absent"))
    assert_one_line_error(code, err, "absent", "does not exist", "--data-dir")


@pytest.mark.parametrize(
    ("content", "needle"),
    [("[{broken", "not valid JSON"), ('{"nl": "x"}', "JSON list of objects")],
)
def test_malformed_json_file(capsys, tmp_path, content, needle):
    (tmp_path / "conala/docprompting").mkdir(parents=True)
    (tmp_path / "conala/docprompting/cmd_test.oracle_man.full.json").write_text(content)
    code, _, err = run_cli(capsys, "show", "conala", "--data-dir", str(tmp_path))
    assert_one_line_error(code, err, "cmd_test.oracle_man.full.json", needle)


def test_malformed_jsonl_line(capsys, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"intent": "a", "code": "b"}\n{"intent": \n')
    code, _, err = run_cli(capsys, "show", f"jsonl:{path}")
    assert_one_line_error(code, err, "bad.jsonl line 2", "not valid JSON")


def test_wrong_field_name(capsys, tmp_path):
    path = tmp_path / "own.jsonl"
    path.write_text(json.dumps({"query": "a", "code": "b"}) + "\n")
    code, _, err = run_cli(capsys, "show", f"jsonl:{path}")
    assert_one_line_error(code, err, "line 1 of", "no field 'intent'", "query", "--data-option intent_field=NAME")


def test_wrong_field_in_builtin_file(capsys, tmp_path):
    (tmp_path / "mbpp").mkdir()
    (tmp_path / "mbpp/mbpp.jsonl").write_text(json.dumps({"task_id": 11, "query": "x", "code": "y",
                                                          "test_list": []}) + "\n")
    code, _, err = run_cli(capsys, "show", "mbpp", "--data-dir", str(tmp_path))
    assert_one_line_error(code, err, "no field 'text'", "'prompt'", "MBPP")


def test_empty_split(capsys, tmp_path):
    (tmp_path / "mbpp").mkdir()
    row = {"task_id": 700, "text": "x", "code": "y", "test_list": []}  # a train id: the test split is empty
    (tmp_path / "mbpp/mbpp.jsonl").write_text(json.dumps(row) + "\n")
    code, _, err = run_cli(capsys, "show", "mbpp", "--data-dir", str(tmp_path))
    assert_one_line_error(code, err, "split 'test' of data set 'mbpp' is empty")


def test_empty_file(capsys, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    code, _, err = run_cli(capsys, "show", f"jsonl:{path}")
    assert_one_line_error(code, err, "split 'test' of data set 'jsonl' is empty")


def test_hub_id_while_offline(capsys, monkeypatch):
    monkeypatch.setattr("codepeft.home.default_data_dir", lambda: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(capsys, "show", "conala")
    assert_one_line_error(code, err, "neulab/docprompting-conala", "offline", "--data-dir")


def test_bad_option(capsys, data_dir):
    code, _, err = run_cli(capsys, "show", "apps", "--data-dir", str(data_dir), "-o", "difficulty=easy")
    assert_one_line_error(code, err, "'easy'", "introductory")
    code, _, err = run_cli(capsys, "show", "apps", "-o", "difficulty")
    assert_one_line_error(code, err, "KEY=VALUE")
