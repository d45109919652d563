"""The prompt budget and the prompt format that every prompt arm shares, for every model kind."""

from __future__ import annotations

import pytest

from codepeft.data.base import Example, Task
from codepeft.data.prompts import build_prompt
from codepeft.methods.base import get_method
from codepeft.methods.prompting import Demonstrations, build_prompts
from tiny import build_tokenizer


class TinyTask(Task):
    name = "tiny-prompts"


TASK = TinyTask()
QUERY = Example("q", "reverse a list", "lst[::-1]")
DEMOS = [
    Example("d0", "convert a string to an integer", "int(s)"),
    Example("d1", "open a file and read json", "json.load(open(p))"),
    Example("d2", "sort a list", "sorted(lst)"),
]
STYLES = {"chat": True, "instruction": False, "seq2seq": False}


def _tokens(tokenizer, text, style):
    return len(tokenizer(text, add_special_tokens=style != "chat")["input_ids"])


@pytest.fixture(scope="module", params=list(STYLES))
def style_and_tokenizer(request):
    return request.param, build_tokenizer(chat=STYLES[request.param])


def test_no_budget_keeps_everything_and_records_the_cost(style_and_tokenizer):
    style, tokenizer = style_and_tokenizer
    built = build_prompts(TASK, [QUERY], [DEMOS], tokenizer, style, None)[0]
    assert built.demonstrations == ["d0", "d1", "d2"] and built.dropped == 0
    assert built.text == build_prompt(TASK, QUERY, tokenizer, style, DEMOS)
    assert built.tokens == _tokens(tokenizer, built.text, style)


def test_small_context_drops_the_least_relevant_first(style_and_tokenizer):
    style, tokenizer = style_and_tokenizer
    with_one = _tokens(tokenizer, build_prompt(TASK, QUERY, tokenizer, style, DEMOS[2:]), style)
    built = build_prompts(TASK, [QUERY], [DEMOS], tokenizer, style, with_one)[0]
    assert built.demonstrations == ["d2"] and built.dropped == 2 and built.tokens == with_one
    # One token less and the last demonstration goes too; the bare query is always kept.
    bare = build_prompts(TASK, [QUERY], [DEMOS], tokenizer, style, with_one - 1)[0]
    assert bare.demonstrations == [] and bare.dropped == 3
    assert bare.text == build_prompt(TASK, QUERY, tokenizer, style, [])
    tiny = build_prompts(TASK, [QUERY], [DEMOS], tokenizer, style, 1)[0]
    assert tiny.text == bare.text and tiny.tokens > 1


def test_most_relevant_first_drops_from_the_end(style_and_tokenizer):
    style, tokenizer = style_and_tokenizer
    reordered = Demonstrations(reversed(DEMOS), most_relevant_last=False)  # d2 most relevant, first
    with_one = _tokens(tokenizer, build_prompt(TASK, QUERY, tokenizer, style, DEMOS[2:]), style)
    built = build_prompts(TASK, [QUERY], [reordered], tokenizer, style, with_one)[0]
    assert built.demonstrations == ["d2"] and built.dropped == 2


def test_each_query_gets_its_own_budget():
    tokenizer = build_tokenizer(chat=True)
    long_query = Example("long", "reverse a list " * 30, "x")
    budget = _tokens(tokenizer, build_prompt(TASK, QUERY, tokenizer, "chat", DEMOS), "chat")
    built = build_prompts(TASK, [QUERY, long_query], [DEMOS, DEMOS], tokenizer, "chat", budget)
    assert built[0].dropped == 0 and built[1].dropped > 0
    assert [b.tokens <= budget or not b.demonstrations for b in built] == [True, True]


def test_demonstrations_are_formatted_exactly_like_the_query_for_every_model_kind():
    chat = build_tokenizer(chat=True)
    base = build_tokenizer(chat=False)
    demo, query = DEMOS[2], QUERY
    # chat: earlier user/assistant turns, the answer fenced as the model is asked to answer.
    expected_chat = chat.apply_chat_template(
        [{"role": "user", "content": demo.intent},
         {"role": "assistant", "content": f"```python\n{demo.reference}\n```"},
         {"role": "user", "content": query.intent}],
        tokenize=False, add_generation_prompt=True,
    )
    assert build_prompt(TASK, query, chat, "chat", [demo]) == expected_chat
    # instruction (base models): the demonstration's own prompt followed by its answer, then the query's prompt.
    alone = build_prompt(TASK, demo, base, "instruction", [])
    assert build_prompt(TASK, query, base, "instruction", [demo]) == (
        f"{alone}{demo.reference}\n\n" + build_prompt(TASK, query, base, "instruction", [])
    )
    # seq2seq: the same intent/code pairs in the encoder input.
    assert build_prompt(TASK, query, base, "seq2seq", [demo]) == (
        f"{build_prompt(TASK, demo, base, 'seq2seq', [])}\n{demo.reference}\n\n{query.intent}"
    )


@pytest.mark.parametrize(("method", "params"), [("icl", {"k": 2, "seed": 1}), ("rag", {"k": 2})])
def test_selection_does_not_depend_on_the_model_kind(method, params):
    """Arms choose demonstrations from the data alone; every style then formats the same ones in the same order."""
    arm = get_method(method)
    chosen = arm.select([QUERY], DEMOS, arm.params(params))
    ids = [d.id for d in chosen[0]]
    for style, chat in STYLES.items():
        tokenizer = build_tokenizer(chat=chat)
        built = build_prompts(TASK, [QUERY], chosen, tokenizer, style, None)[0]
        assert built.demonstrations == ids
        positions = [built.text.index(d.intent) for d in chosen[0]]
        assert positions == sorted(positions) and max(positions) < built.text.rindex(QUERY.intent)
