"""Prompt styles (chat, instruction, seq2seq) and postprocessing of generations."""

from __future__ import annotations

import pytest

from codepeft.data import Example, get_task
from codepeft.data.postprocess import cut_at_stop, extract_code, normalize_code
from codepeft.data.prompts import (
    INSTRUCTION_STOPS,
    build_prompt,
    build_target,
    default_stops,
    prompt_style_for,
)
from tiny import build_tokenizer

QUERY = Example(id="q", intent="reverse a list `lst`", reference="lst[::-1]")
DEMOS = [Example(id="d1", intent="sort a list", reference="sorted(lst)"),
         Example(id="d2", intent="find tags", reference="re.findall('<[^>]+>|\\|', s)")]


@pytest.fixture(scope="module")
def chat_tokenizer():
    return build_tokenizer(chat=True)


@pytest.fixture(scope="module")
def base_tokenizer():
    return build_tokenizer(chat=False)


@pytest.fixture(scope="module")
def conala():
    return get_task("conala")


def test_style_follows_model_kind_and_template(chat_tokenizer, base_tokenizer):
    assert prompt_style_for(chat_tokenizer, "causal") == "chat"
    assert prompt_style_for(base_tokenizer, "causal") == "instruction"
    assert prompt_style_for(chat_tokenizer, "seq2seq") == "seq2seq"


def test_chat_prompt_uses_the_template_and_demonstrations_as_turns(conala, chat_tokenizer):
    prompt = build_prompt(conala, QUERY, chat_tokenizer, "chat", DEMOS)
    assert prompt.endswith("<|im_start|>user\nreverse a list `lst`<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.count("<|im_start|>user") == 3 and prompt.count("<|im_start|>assistant") == 3
    # each demonstration is formatted exactly as the answer the model is trained to give
    for demo in DEMOS:
        assert f"<|im_start|>assistant\n{build_target(conala, demo, chat_tokenizer, 'chat')}" in prompt
    assert prompt.index("sort a list") < prompt.index("find tags") < prompt.index("reverse a list")


def test_chat_target_is_the_fenced_assistant_turn(conala, chat_tokenizer):
    target = build_target(conala, QUERY, chat_tokenizer, "chat")
    assert target == "```python\nlst[::-1]\n```<|im_end|>\n"
    full = build_prompt(conala, QUERY, chat_tokenizer, "chat") + target
    assert full == chat_tokenizer.apply_chat_template(
        [{"role": "user", "content": QUERY.intent}, {"role": "assistant", "content": "```python\nlst[::-1]\n```"}],
        tokenize=False,
    )


def test_instruction_prompt_blocks_and_target(conala, base_tokenizer):
    prompt = build_prompt(conala, QUERY, base_tokenizer, "instruction", DEMOS)
    assert prompt.endswith("### Instruction:\nreverse a list `lst`\n\n### Response:\n")
    assert "### Instruction:\nsort a list\n\n### Response:\nsorted(lst)\n\n" in prompt
    assert prompt.count("### Instruction:") == 3
    assert build_target(conala, QUERY, base_tokenizer, "instruction") == "lst[::-1]<eos>"
    assert default_stops("instruction") == list(INSTRUCTION_STOPS) and default_stops("chat") == []


def test_seq2seq_prompt_is_the_bare_instruction(conala, base_tokenizer):
    assert build_prompt(conala, QUERY, base_tokenizer, "seq2seq") == QUERY.intent
    with_demos = build_prompt(conala, QUERY, base_tokenizer, "seq2seq", DEMOS[:1])
    assert with_demos == "sort a list\nsorted(lst)\n\nreverse a list `lst`"
    assert build_target(conala, QUERY, base_tokenizer, "seq2seq") == "lst[::-1]"


def test_task_instruction_is_what_every_style_shows(data_dir, chat_tokenizer, base_tokenizer):
    mbpp = get_task("mbpp", data_dir)
    example = mbpp.load("test")[0]
    assert example.tests["asserts"][0] in build_prompt(mbpp, example, chat_tokenizer, "chat")
    assert example.tests["asserts"][0] in build_prompt(mbpp, example, base_tokenizer, "instruction")
    humaneval = get_task("humaneval", data_dir)
    problem = humaneval.load("test")[0]
    assert "```python\nfrom typing import List" in build_prompt(humaneval, problem, base_tokenizer, "seq2seq")


def test_unknown_style_is_rejected(conala, base_tokenizer):
    with pytest.raises(ValueError, match="unknown prompt style"):
        build_prompt(conala, QUERY, base_tokenizer, "plain")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Here:\n```python\nx = a < b > c | d\n```\nDone.", "x = a < b > c | d"),
        ("```py\nprint(1)\n```", "print(1)"),
        ("```\nre.findall('<[^>]+>', s)\n```", "re.findall('<[^>]+>', s)"),
        ("```python\nunclosed = [1, 2]\n", "unclosed = [1, 2]"),
        ("no fence: a | b\n\n", "no fence: a | b"),
        ("```python\nfirst()\n```\n```python\nsecond()\n```", "first()"),
        ("sorted(lst)\n```\n\nThis sorts the list.", "sorted(lst)"),
        ("Here it is:\n```python\nx = 1 | 2\n", "x = 1 | 2"),
        ("Sure.\n```\ny = '<a>'\n```", "y = '<a>'"),
        # unfenced code closed by a fence, then prose and more blocks: the code, not the prose after it
        ("def f(x):\n    return x\n```\n\nUse it so:\n\n```python\nf(1) == 1\n```", "def f(x):\n    return x"),
        ("def f(x):\n    return x\n```", "def f(x):\n    return x"),
        # cut at the replications' stop ("\n```\n\n"): an unclosed block, or code before it
        ("Here:\n```python\ndef f():\n    pass", "def f():\n    pass"),
        ("Here:\n```\ndef f():\n    pass\n```\n```python\ng()\n```", "def f():\n    pass"),
    ],
)
def test_extract_code(text, code):
    assert extract_code(text) == code


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("a < b\n<stop>rest", ["<stop>"], "a < b\n"),
        ("x = a > b |end| tail", ["|end|"], "x = a > b "),
        ("s.split('.*')\n### Instruction\nmore", list(INSTRUCTION_STOPS), "s.split('.*')"),
        ("a(b)[c]+*? end", ["(c)", "[c]+*?"], "a(b)"),
        ("keep $^ all", ["\\d", ""], "keep $^ all"),
        ("nothing to cut", [], "nothing to cut"),
        ("x<y>z", [">", "<"], "x"),
    ],
)
def test_cut_at_stop_treats_stops_literally(text, stops, expected):
    assert cut_at_stop(text, stops) == expected


def test_normalize_code_only_touches_whitespace():
    assert normalize_code("x = 1  \r\n\r\n\ry = '<|>'\n") == "x = 1\ny = '<|>'"
    assert normalize_code("a<b") != normalize_code("a>b")
