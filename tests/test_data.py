"""The built-in data sets load the real shared files with the documented counts and payloads."""

from __future__ import annotations

import ast
import gzip
import json
import warnings
from pathlib import Path

import pytest

from codepeft.data import TASKS, get_task
from codepeft.data.codealpaca import is_python_example, split_indices
from codepeft.data.humaneval import in_study_test
from codepeft.data.mbpp import clean_mbpp_code
from codepeft.errors import CodepeftError


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("conala", {"train": 2135, "validation": 201, "test": 543}),
        ("conala-curated", {"train": 2379, "test": 500}),
        ("mbpp", {"train": 374, "validation": 90, "test": 500, "prompt": 10}),
        ("humaneval", {"test": 164, "study-train": 123, "study-test": 41}),
        ("apps", {"test": 10}),
    ],
)
def test_real_data_counts_fields_and_unique_ids(data_dir, name, counts):
    task = get_task(name, data_dir)
    for split, expected in counts.items():
        examples = task.load(split)
        assert len(examples) == expected, (name, split)
        assert len({e.id for e in examples}) == expected
        assert all(e.intent.strip() for e in examples)
        if name != "apps":  # the local APPS rows carry no solutions
            assert all(e.reference.strip() for e in examples)
        assert all((e.tests is not None) == task.has_tests for e in examples)
        json.dumps([e.to_dict() for e in examples])  # payloads must be JSON-serialisable


def test_conala_fields_map_to_intent_and_reference(data_dir):
    raw = json.loads((data_dir / "conala/docprompting/cmd_test.oracle_man.full.json").read_text())
    first = get_task("conala", data_dir).load("test")[0]
    assert (first.intent, first.reference) == (raw[0]["nl"].strip(), raw[0]["cmd"].strip())


def test_conala_curated_falls_back_to_intent_when_rewritten_is_null(data_dir):
    raw = json.loads((data_dir / "conala/conala-train.json").read_text())
    examples = get_task("conala-curated", data_dir).load("train")
    nulls = [i for i, r in enumerate(raw) if r["rewritten_intent"] is None]
    assert len(nulls) == 79
    assert examples[nulls[0]].intent == raw[nulls[0]]["intent"].strip()
    rewritten = next(i for i, r in enumerate(raw) if r["rewritten_intent"])
    assert examples[rewritten].intent == raw[rewritten]["rewritten_intent"].strip()


def test_mbpp_split_by_task_id_and_payload(data_dir):
    task = get_task("mbpp", data_dir)
    ranges = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
    for split, (low, high) in ranges.items():
        ids = [e.meta["task_id"] for e in task.load(split)]
        assert (min(ids), max(ids)) == (low, high)
    example = task.load("test")[0]
    assert example.tests["kind"] == "mbpp" and set(example.tests) == {"kind", "setup", "asserts"}
    assert len(example.tests["asserts"]) == 3 and example.tests["asserts"][0].startswith("assert ")
    assert example.tests["asserts"][0] in task.instruction(example)


def _parses(code: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ast.parse(code)
        except SyntaxError:
            return False
    return True


def test_mbpp_references_lose_crlf_and_tabs_but_still_parse(data_dir):
    lines = (data_dir / "mbpp/mbpp.jsonl").read_text().splitlines()
    raw = {f"mbpp/{r['task_id']}": r["code"] for r in map(json.loads, lines)}
    examples = get_task("mbpp", data_dir).load("test")
    assert not any("\r" in e.reference for e in examples)
    assert sum("\t" in raw[e.id] for e in examples) > 50
    assert sum("\t" in e.reference for e in examples) < 10  # only tabs inside strings or unparseable code
    assert all(_parses(e.reference) for e in examples if _parses(raw[e.id].replace("\r\n", "\n")))
    assert clean_mbpp_code("def f(x):\r\n\treturn x\r\n") == "def f(x):\n    return x"


def test_mbpp_normalize_makes_crlf_tab_code_equal_to_spaces():
    task = get_task("mbpp")
    assert task.normalize("def f(x):\r\n\treturn x \r\n\r\n") == task.normalize("def f(x):\n    return x\n")


def test_humaneval_payload_reference_and_study_split(data_dir):
    task = get_task("humaneval", data_dir)
    first = task.load("test")[0]
    assert set(first.tests) == {"kind", "prompt", "test", "entry_point"} and first.tests["kind"] == "humaneval"
    assert first.reference.startswith(first.intent.strip("\n")[:20])
    assert f"def {first.tests['entry_point']}" in first.reference
    ast.parse(first.reference)
    study_train = {e.id for e in task.load("study-train")}
    study_test = {e.id for e in task.load("study-test")}
    assert not study_train & study_test and len(study_train | study_test) == 164
    assert all(in_study_test(i) for i in study_test) and "HumanEval/0" in study_test


def test_humaneval_reads_the_bundled_package_file_and_an_explicit_path(data_dir, tmp_path):
    bundled = get_task("humaneval").load("test")
    assert len(bundled) == 164
    with gzip.open(data_dir / "humaneval/HumanEval.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle][:3]
    small = tmp_path / "he.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [e.id for e in get_task("humaneval", path=str(small)).load("test")] == [r["task_id"] for r in rows]


def test_apps_payloads_and_difficulty_filter(data_dir):
    task = get_task("apps", data_dir)
    examples = task.load("test")
    for e in examples:
        assert e.tests["kind"] == "apps-stdin" and set(e.tests) == {"kind", "inputs", "outputs"}
        assert len(e.tests["inputs"]) == len(e.tests["outputs"]) > 0
        assert e.intent.endswith("Use Standard Input format")
    intro = get_task("apps", data_dir, difficulty="introductory").load("test")
    assert len(intro) == 3 and all(e.meta["difficulty"] == "introductory" for e in intro)


def test_apps_call_based_rows_get_fn_name_and_starter_code(tmp_path):
    row = {"problem_id": 7, "difficulty": "introductory", "question": "Add two numbers.",
           "starter_code": "class Solution:\n    def add(self, a, b):\n", "solutions": json.dumps(["x"]),
           "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]})}
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps/apps_test_10.jsonl").write_text(json.dumps(row) + "\n")
    example = get_task("apps", tmp_path).load("test")[0]
    assert example.tests == {"kind": "apps-call", "fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}
    assert "class Solution:" in example.intent and example.intent.endswith("Use Call-Based format")
    assert example.reference == "x" and example.id == "apps/7"


def test_codealpaca_filter_rule():
    assert is_python_example("Write a function that adds two numbers.", "", "def add(a, b):\n    return a + b")
    assert is_python_example("Rewrite this SQL query in Python.", "SELECT 1", "import sqlite3\nsqlite3.connect('x')")
    assert not is_python_example("Generate a random integer in JavaScript.", "", "Math.floor(Math.random() * 10)")
    assert not is_python_example("Write a SQL query.", "", "SELECT * FROM t;")
    assert not is_python_example("What is 2 + 3?", "", "5")
    assert not is_python_example("Name a colour.", "", "Blue")
    assert not is_python_example("Explain recursion.", "", "Recursion is when a function calls itself.")
    assert not is_python_example("Write C++ code to print.", "", "print(1)")


def test_codealpaca_split_is_seeded_disjoint_and_complete(data_dir):
    task = get_task("codealpacapy", data_dir)
    splits = {s: task.load(s) for s in task.splits}
    kept = task.python_subset(data_dir)
    assert len(kept) == 783 and [len(splits[s]) for s in task.splits] == [626, 78, 79]
    ids = [e.id for s in task.splits for e in splits[s]]
    assert len(ids) == len(set(ids)) == len(kept)
    assert [e.id for e in get_task("codealpacapy", data_dir).load("test")] == [e.id for e in splits["test"]]
    other = get_task("codealpacapy", data_dir, seed=7).load("test")
    assert [e.id for e in other] != [e.id for e in splits["test"]]
    assert split_indices(10, 0) == split_indices(10, 0) and len(split_indices(10, 0)["train"]) == 8


def test_codealpaca_reads_a_given_file(tmp_path):
    rows = [{"instruction": f"Return {i}.", "input": "", "output": f"def f():\n    return {i}"} for i in range(20)]
    rows.append({"instruction": "Write JavaScript.", "input": "", "output": "alert(1)"})
    path = tmp_path / "code_alpaca_20k.json"
    path.write_text(json.dumps(rows))
    task = get_task("codealpacapy", path=str(path), seed=1)
    assert sum(len(task.load(s)) for s in task.splits) == 20


def test_jsonl_fields_tests_and_splits(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"key": "a", "q": "add", "a": "def add(a, b):\n    return a + b", "t": ["assert add(1, 2) == 3"],
             "split": "train"},
            {"key": "b", "q": "neg", "a": "def neg(x):\n    return -x", "t": "assert neg(1) == -1\n", "split": "test"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = get_task(f"jsonl:{path}", intent_field="q", code_field="a", tests_field="t", id_field="key")
    (test,) = task.load("test")
    assert (test.id, test.intent) == ("b", "neg")
    assert test.tests == {"kind": "assert", "setup": "", "asserts": ["assert neg(1) == -1"]}
    assert task.load("train")[0].tests["asserts"] == ["assert add(1, 2) == 3"]


def test_jsonl_without_ids_splits_or_tests(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text('{"intent": "x", "code": "y"}\n\n{"intent": "z", "code": "w"}\n')
    task = get_task("jsonl", path=str(path))
    examples = task.load("test")
    assert [e.id for e in examples] == ["plain-0", "plain-1"] and examples[0].tests is None
    with pytest.raises(CodepeftError, match="'test' split"):
        task.load("train")


def test_jsonl_split_pattern(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"intent": split, "code": "pass"}) + "\n")
    task = get_task("jsonl", path=str(tmp_path / "{split}.jsonl"))
    assert task.load("train")[0].intent == "train" and task.load("test")[0].intent == "test"
    with pytest.raises(CodepeftError, match="validation"):
        task.load("validation")


def test_loading_is_cached_per_instance(data_dir, monkeypatch):
    task = get_task("conala", data_dir)
    first = task.load("train")
    monkeypatch.setattr(task, "load_local", lambda *a: pytest.fail("read twice"))
    assert task.load("train") == first


def test_every_builtin_task_is_registered():
    assert {"conala", "conala-curated", "codealpacapy", "apps", "humaneval", "mbpp", "jsonl"} <= set(TASKS)


def test_hub_is_used_without_data_dir_and_fails_offline(monkeypatch):
    monkeypatch.setattr("codepeft.home.default_data_dir", lambda: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, hub_id in [("conala", "neulab/docprompting-conala"), ("mbpp", "google-research-datasets/mbpp"),
                         ("apps", "codeparrot/apps"), ("codealpacapy", "antolin/codealpaca-filtered"),
                         ("conala-curated", "neulab/conala")]:
        with pytest.raises(CodepeftError, match=rf"'{hub_id}'.*offline.*--data-dir"):
            get_task(name).load("test")


def test_humaneval_needs_no_hub(monkeypatch):
    monkeypatch.setattr("codepeft.home.default_data_dir", lambda: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert len(get_task("humaneval").load("test")) == 164


def test_bad_options_are_named():
    with pytest.raises(CodepeftError, match="no option 'difficult'"):
        get_task("apps", difficult="interview")
    with pytest.raises(CodepeftError, match="unknown APPS difficulty 'easy'"):
        get_task("apps", difficulty="easy")
    with pytest.raises(CodepeftError, match=r"seed=.*not an integer"):
        get_task("codealpacapy", seed="x")
    with pytest.raises(CodepeftError, match="jsonl:FILE"):
        get_task("jsonl")


def test_missing_data_dir_and_file(tmp_path: Path):
    with pytest.raises(CodepeftError, match=r"data directory .* does not exist"):
        get_task("conala", tmp_path / "nope").load("test")
    with pytest.raises(CodepeftError, match=r"cmd_test.oracle_man.full.json.*--data-dir"):
        get_task("conala", tmp_path).load("test")


def test_hub_connection_failure_is_one_line(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'neulab/conala' on the Hub\n(LocalEntryNotFoundError)")

    monkeypatch.setattr("codepeft.home.default_data_dir", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(CodepeftError, match=r"'neulab/conala' \(split 'train'\).*Couldn't reach.*--data-dir") as info:
        get_task("conala-curated").load("train")
    assert "\n" not in str(info.value)


def test_hub_rows_become_examples(monkeypatch):
    import datasets

    rows = [{"problem_id": i, "difficulty": "interview", "question": f"q{i}", "starter_code": "",
             "solutions": json.dumps([f"print({i})"]), "input_output": json.dumps({"inputs": ["1"], "outputs": ["1"]})}
            for i in range(600)]
    monkeypatch.setattr("codepeft.home.default_data_dir", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, split, **k: datasets.Dataset.from_list(rows))
    task = get_task("apps")
    validation, train = task.load("validation"), task.load("train")
    assert len(validation) == 500 and len(train) == 100
    assert not {e.id for e in validation} & {e.id for e in train}
    assert train[0].reference.startswith("print(") and train[0].tests["kind"] == "apps-stdin"
