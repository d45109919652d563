"""``codepeft mine`` through the CLI: output files, the summary, and every bad input named in the issue."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from codepeft.cli import main
from codepeft.data import get_task

GOOD = '''\
def scaled(values, factor):
    """Multiply every value by factor.

    >>> scaled([1, 2], 3)
    [3, 6]
    """
    result = [v * factor for v in values]
    return result
'''


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, " ".join(captured.err.split())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for index in range(4):
        (root / f"mod{index}.py").write_text(GOOD.replace("scaled", f"scaled{index}").replace("factor", f"f{index}")
                                             .replace("result", f"out{index}"))
    return root


def test_mine_writes_dataset_and_summary(project: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "data" / "mined.jsonl"
    code, _, err = run_cli(["mine", str(project), "-o", str(output), "--near-dup-threshold", "2",
                            "--split", "0.5,0.25,0.25", "--seed", "1"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 4 and {r["split"] for r in records} == {"train", "validation", "test"}
    summary = json.loads((tmp_path / "data" / "mined.summary.json").read_text())
    assert summary["files_read"] == 4 and summary["kept"] == 4 and summary["with_doctests"] == 4
    assert summary["splits"] == {"train": 2, "validation": 1, "test": 1}
    assert "functions found" in err and "wrote 4 examples" in err
    task = get_task(f"mined:{output}")
    assert len(task.load("train")) == 2 and task.has_tests


def test_exact_and_near_duplicates_are_reported(tmp_path: Path, capsys) -> None:
    body = "".join(f"    step{k} = values[{k}] * {k}\n" for k in range(12))
    for index, tail in enumerate(["0", "0", "1", "2"]):  # an exact copy, then two one-token variants
        (tmp_path / f"m{index}.py").write_text(f'def f{index}(values):\n    """Sum steps."""\n{body}'
                                               f"    return step11 + {tail}\n")
    output = tmp_path / "out" / "mined.jsonl"
    code, _, err = run_cli(["mine", str(tmp_path), "-o", str(output)], capsys)
    assert code == 0, err
    summary = json.loads(output.with_suffix(".summary.json").read_text())
    assert (summary["exact_duplicates"], summary["near_duplicates"], summary["kept"]) == (1, 2, 1)
    assert "near duplicates" in err


def test_refuses_to_overwrite_without_force(project: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "mined.jsonl"
    output.write_text("keep me\n")
    code, _, err = run_cli(["mine", str(project), "-o", str(output)], capsys)
    assert code == 2 and "already exists" in err and "--force" in err
    assert output.read_text() == "keep me\n"
    code, _, err = run_cli(["mine", str(project), "-o", str(output), "--force"], capsys)
    assert code == 0 and output.read_text() != "keep me\n"


def test_path_that_does_not_exist(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["mine", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert code == 2 and "neither an existing path nor an installed Python module" in err
    assert "Traceback" not in err


def test_folder_with_no_python(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    code, _, err = run_cli(["mine", str(tmp_path / "empty"), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert code == 2 and "no Python files found" in err


def test_syntax_error_and_non_utf8_files_are_skipped_and_counted(project: Path, tmp_path: Path, capsys) -> None:
    (project / "broken.py").write_text("def oops(:\n    pass\n")
    (project / "latin.py").write_bytes(b'def f():\n    """Caf\xe9."""\n    x = 1\n    return x\n')
    output = tmp_path / "mined.jsonl"
    code, _, err = run_cli(["mine", str(project), "-o", str(output)], capsys)
    assert code == 0, err
    assert "skipped broken.py: syntax error" in err and "skipped latin.py: undecodable" in err
    summary = json.loads(output.with_suffix(".summary.json").read_text())
    assert summary["files_skipped"] == {"syntax_error": 1, "undecodable": 1} and summary["files_read"] == 4


def test_only_bad_files_is_a_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "broken.py").write_text("def oops(:\n")
    code, _, err = run_cli(["mine", str(tmp_path / "src"), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert code == 2 and "skipped broken.py: syntax error" in err and "no examples kept" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_symlink_loops(project: Path, tmp_path: Path, capsys) -> None:
    (project / "again").symlink_to(project, target_is_directory=True)
    output = tmp_path / "mined.jsonl"
    code, _, err = run_cli(["mine", str(project), "-o", str(output)], capsys)
    assert code == 0, err
    assert json.loads(output.with_suffix(".summary.json").read_text())["kept"] == 4
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    code, _, err = run_cli(["mine", str(tmp_path / "loop_a"), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert code == 2 and "symlink loop" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--split", "0.8,0.3"], "--split '0.8,0.3' is not three"),
    (["--min-lines", "10", "--max-lines", "5"], "--min-lines 10 is above --max-lines 5"),
    (["--near-dup-threshold", "0"], "--near-dup-threshold"),
])
def test_bad_options(project: Path, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    code, _, err = run_cli(["mine", str(project), "-o", str(tmp_path / "o.jsonl"), *args], capsys)
    assert code == 2 and message in err


def test_target_that_is_not_python(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run_cli(["mine", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert code == 2 and "is not a Python file" in err


def test_module_without_source(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["mine", "sys", "-o", str(tmp_path / "o.jsonl")], capsys)
    assert code == 2 and "no Python source" in err


def test_verify_doctests_keeps_only_tests_the_reference_passes(project: Path, tmp_path: Path, capsys) -> None:
    (project / "helper.py").write_text(
        'def _double(x):\n    return 2 * x\n\n\n'
        'def quadruple(x):\n    """Four times x.\n\n    >>> quadruple(2)\n    8\n    """\n'
        '    twice = _double(x)\n    return _double(twice)\n')
    output = tmp_path / "mined.jsonl"
    code, _, err = run_cli(["mine", str(project), "-o", str(output), "--near-dup-threshold", "2",
                            "--verify-doctests"], capsys)
    assert code == 0, err
    records = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    assert records["helper.quadruple"]["tests"] is None  # needs the module's private helper: fails alone
    assert records["mod0.scaled0"]["tests"]["kind"] == "doctest"
    summary = json.loads(output.with_suffix(".summary.json").read_text())
    assert summary["doctests_failing_on_reference"] == 1 and summary["with_doctests"] == 4
    assert "fail on reference" in err


def test_name_registers_the_data_set(project: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["mine", str(project), "--name", "my-project"], capsys)
    assert code == 0, err
    task = get_task("mined:my-project")
    assert sum(len(task.load(split)) for split in task.splits) == 4
    code, _, err = run_cli(["mine", str(project)], capsys)
    assert code == 2 and "exactly one of -o" in err
    code, _, err = run_cli(["mine", str(project), "--name", "../escape"], capsys)
    assert code == 2 and "not a plain name" in err
