"""The run-directory object and the one atomic write every stage uses; the shared error helpers."""

from __future__ import annotations

import errno
import json

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from codepeft.errors import CodepeftError, first_line, validation_message
from codepeft.rundir import RunDir, replacing, write_json, write_jsonl


def test_replacing_swaps_a_directory_in_whole_and_keeps_the_old_one_on_failure(tmp_path):
    target = tmp_path / "adapter"
    with replacing(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary left behind
    with replacing(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_full_disk_is_a_one_line_error_and_the_previous_file_stays(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"a": 1})
    with pytest.raises(CodepeftError, match=r"no space left on device.*free space and rerun"), replacing(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert json.loads(path.read_text()) == {"a": 1}


def test_run_dir_reads_tolerantly_clears_and_refuses(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write("config.json", {"finished": True})
    (run / "broken.json").write_text('{"half":')
    write_jsonl(run / "generations.jsonl", [{"id": "1"}])
    assert run.read("config.json") == {"finished": True}
    assert run.read("broken.json") is None and run.read("missing.json") is None
    with pytest.raises(CodepeftError, match=r"run holds a finished run: pass --force"):
        run.refuse_finished(True, False, "holds a finished run", "pass --force")
    run.refuse_finished(True, True, "holds a finished run", "pass --force")  # --force: allowed
    run.clear("generations.jsonl", "checkpoints")
    assert not run.has("generations.jsonl") and run.has("config.json")
    run.wipe()
    assert not run.path.exists()
    with pytest.raises(CodepeftError, match="not found: run it first"):
        RunDir.existing(tmp_path / "run", "run it first")


def test_changed_compares_requests_as_json():
    assert RunDir.changed({"a": 1, "b": [1, 2]}, {"a": 1, "b": (1, 2)}) == []
    assert RunDir.changed({"a": 1}, {"a": 2, "c": None}) == ["a"]
    assert RunDir.changed({"a": 1}, {"a": 1, "c": 3}) == ["c"]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_length: int


def test_validation_message_is_one_line_naming_the_field():
    with pytest.raises(ValidationError) as info:
        _Settings(max_length="x")
    assert validation_message(info.value).startswith("max_length: Input should be a valid integer")
    assert validation_message(info.value, flags=True).startswith("--max-length: ")
    with pytest.raises(ValidationError) as info:
        _Settings(max_length=1, colour="red")
    assert validation_message(info.value) == "colour: Extra inputs are not permitted"
    assert validation_message(info.value, unknown="unknown key") == "colour: unknown key"
    with pytest.raises(ValidationError) as info:
        _Settings()
    assert validation_message(info.value, missing="missing: needed") == "max_length: missing: needed"


def test_first_line_of_an_exception():
    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 300), 10) == "x" * 10
