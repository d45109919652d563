"""RAG: the k most similar training examples, nearest last, never the query, bad input as one line."""

from __future__ import annotations

import pytest

from codepeft.data.base import Example, Task
from codepeft.errors import CodepeftError
from codepeft.methods.base import get_method
from codepeft.methods.prompting import build_prompts


class TinyTask(Task):
    name = "tiny-prompts"


TINY_TASK = TinyTask()

POOL = [
    Example("p0", "sort a list in reverse order", "sorted(xs, reverse=True)"),
    Example("p1", "sort a list of tuples by the second item", "sorted(xs, key=lambda t: t[1])"),
    Example("p2", "read a json file into a dictionary", "json.load(open(path))"),
    Example("p3", "convert a string to an integer", "int(s)"),
    Example("p4", "remove duplicates from a list", "list(set(xs))"),
    Example("p5", "merge two dictionaries into one", "{**a, **b}"),
]
QUERY = Example("q0", "sort list descending in reverse", "xs.sort(reverse=True)")


def _select(queries=(QUERY,), pool=POOL, **overrides):
    rag = get_method("rag")
    return rag.select(list(queries), pool, rag.params(overrides))


def test_defaults():
    params = get_method("rag").params()
    assert (params.k, params.retriever, params.nearest_last) == (3, "bm25", True)
    assert params.embedding_model == "all-MiniLM-L6-v2"


@pytest.mark.parametrize("retriever", ["bm25", "dense", "hybrid"])
def test_most_similar_sits_nearest_the_query(retriever):
    demos = _select(k=2, retriever=retriever)[0]
    assert demos[-1].id == "p0"  # the obvious neighbour, last = next to the query
    assert len(demos) == 2 and "p1" in [d.id for d in demos]


def test_nearest_last_false_puts_the_most_similar_first():
    demos = _select(k=2, nearest_last=False)[0]
    assert [d.id for d in demos] == [d.id for d in reversed(_select(k=2)[0])]
    assert demos[0].id == "p0"


def test_self_retrieval_is_excluded():
    demos = _select(queries=[POOL[0], Example("copy", POOL[0].intent, POOL[0].reference)], k=3)
    for selected in demos:
        assert "p0" not in [d.id for d in selected]
        assert selected[-1].id == "p1"  # the next most similar


def test_budget_drops_the_least_similar_whichever_the_order(tiny_causal_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    for nearest_last in (True, False):
        demos = _select(k=3, nearest_last=nearest_last)
        full = build_prompts(TINY_TASK, [QUERY], demos, tokenizer, "chat", None)[0]
        one = build_prompts(TINY_TASK, [QUERY], [[d for d in demos[0] if d.id == "p0"]], tokenizer, "chat", None)[0]
        built = build_prompts(TINY_TASK, [QUERY], demos, tokenizer, "chat", one.tokens)[0]
        assert built.demonstrations == ["p0"] and built.dropped == 2
        assert built.tokens == one.tokens < full.tokens


@pytest.mark.parametrize(
    ("overrides", "pool", "message"),
    [
        ({"k": 7}, POOL, "k=7 is larger than the pool (6 examples)"),
        ({"k": -2}, POOL, "k: Input should be greater than or equal to 0"),
        ({"k": 1}, [], "pool is empty"),
        ({"retriever": "tfidf"}, POOL, "retriever: Input should be 'bm25', 'dense' or 'hybrid'"),
        ({"retriever": "dense", "embedding_model": "/nowhere/model"}, POOL, "cannot be found offline"),
    ],
)
def test_bad_input_is_a_one_line_error(overrides, pool, message):
    with pytest.raises(CodepeftError) as err:
        _select(pool=pool, **overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("arms.rag.params.retriever=tfidf", "retriever: Input should be 'bm25', 'dense' or 'hybrid'"),
        ("arms.rag.params.k=-1", "k: Input should be greater than or equal to 0"),
        ("arms.icl.params.k=-3", "k: Input should be greater than or equal to 0"),
    ],
)
def test_bad_arm_parameters_through_the_cli(override, message, tmp_path, capsys):
    from codepeft.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["study", override, "--dry-run", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in " ".join(err.split())


def _jsonl_task(tmp_path):
    """A tiny train/test JSONL data set whose test intents each have one obvious training neighbour."""
    import json

    rows = [{"id": e.id, "intent": e.intent, "code": e.reference, "split": "train"} for e in POOL]
    rows += [
        {"id": "t0", "intent": "sort list descending in reverse", "code": "xs.sort(reverse=True)", "split": "test"},
        {"id": "t1", "intent": "load a json file as a dictionary", "code": "json.load(f)", "split": "test"},
    ]
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def _check_records(run_dir, method, params, tiny_causal_dir):
    from transformers import AutoTokenizer

    from codepeft.rundir import read_generations

    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_dir)
    records = read_generations(run_dir).records
    assert [r["id"] for r in records] == ["t0", "t1"]
    for record in records:
        assert len(record["demonstrations"]) == params["k"]
        assert record["prompt_tokens"] == len(tokenizer(record["prompt"], add_special_tokens=False)["input_ids"])
        intents = {e.id: e.intent for e in POOL}
        positions = [record["prompt"].index(intents[d]) for d in record["demonstrations"]]
        assert positions == sorted(positions)  # recorded in prompt order
    if method == "rag":
        assert [r["demonstrations"][-1] for r in records] == ["p0", "p2"]  # the neighbour next to the query
    else:
        assert records[0]["demonstrations"] == records[1]["demonstrations"]  # one fixed draw


@pytest.mark.parametrize(("method", "params"), [("icl", {"k": 2, "seed": 1}), ("rag", {"k": 2})])
def test_evaluate_records_demonstrations_and_prompt_tokens(method, params, tiny_causal_dir, tmp_path):
    from codepeft.generation.evaluate import evaluate
    from codepeft.generation.settings import GenerationSettings

    run_dir = evaluate(str(tiny_causal_dir), _jsonl_task(tmp_path), method=method, method_params=params,
                       settings=GenerationSettings(max_new_tokens=3), run_dir=tmp_path / "run")
    _check_records(run_dir, method, params, tiny_causal_dir)


def test_rag_and_icl_on_top_of_an_adapter(tiny_causal_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from codepeft.generation.evaluate import evaluate
    from codepeft.generation.settings import GenerationSettings
    from codepeft.models import load_model
    from codepeft.models.adapters import save_adapter
    from codepeft.rundir import read_json

    loaded = load_model(str(tiny_causal_dir))
    lora = get_peft_model(loaded.model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    adapter = save_adapter(lora, loaded, "lora", {"r": 2}, tmp_path / "adapter")
    task = _jsonl_task(tmp_path)
    for method, params in (("rag", {"k": 2}), ("icl", {"k": 2, "seed": 1})):
        run_dir = evaluate(str(tiny_causal_dir), task, method=method, method_params=params, adapter=adapter,
                           settings=GenerationSettings(max_new_tokens=3), run_dir=tmp_path / f"{method}-lora")
        assert read_json(run_dir / "config.json")["request"]["adapter"] == str(adapter)
        _check_records(run_dir, method, params, tiny_causal_dir)


def test_evaluate_drops_demonstrations_when_the_context_is_small(tiny_causal_dir, tmp_path):
    from codepeft.generation.evaluate import evaluate
    from codepeft.generation.settings import GenerationSettings
    from codepeft.models import load_model
    from codepeft.rundir import read_generations

    loaded = load_model(str(tiny_causal_dir))
    task = _jsonl_task(tmp_path)
    first = read_generations(evaluate(loaded, task, method="rag", method_params={"k": 2}, limit=1,
                                      settings=GenerationSettings(max_new_tokens=2), run_dir=tmp_path / "a")).records[0]
    nearest = [e for e in POOL if e.id == first["demonstrations"][-1]]
    query = Example("t0", "sort list descending in reverse", "xs.sort(reverse=True)")
    with_one = build_prompts(TINY_TASK, [query], [nearest], loaded.tokenizer, loaded.style, None)[0].tokens
    assert with_one < first["prompt_tokens"]
    # A model whose context leaves room for exactly the nearest demonstration: the other one must go.
    loaded.model.config.max_position_embeddings = with_one + 3
    small = read_generations(evaluate(loaded, task, method="rag", method_params={"k": 2}, limit=1,
                                      settings=GenerationSettings(max_new_tokens=3), run_dir=tmp_path / "b")).records[0]
    assert small["demonstrations"] == [nearest[0].id] and small["dropped_demonstrations"] == 1
    assert small["prompt_tokens"] == with_one
