"""How a task's examples become model input, for every kind of model.

Three styles, chosen from the model (``prompt_style_for``):

- ``chat``: the tokenizer's chat template; the answer is a fenced ``python`` block (SmolLM2-Instruct
  scored 0/164 on HumanEval without its template and 10/164 with it).
- ``instruction``: ``### Instruction`` / ``### Response`` blocks for base causal models.
- ``seq2seq``: the instruction alone as encoder input, the code as decoder target.

Demonstrations (ICL, RAG) are formatted exactly like the query, as earlier turns or blocks, so
every arm sees the same format. ``build_prompt`` + ``build_target`` concatenated is the training
text, so fine-tuned and prompted arms agree on the format too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from codepeft.data.base import Example, Task

PromptStyle = Literal["chat", "instruction", "seq2seq"]

INSTRUCTION_HEADER = "### Instruction:\n"
RESPONSE_HEADER = "### Response:\n"
#: Generation stops here for instruction-style prompts (the model starts a new example).
INSTRUCTION_STOPS = ("\n### Instruction", "\n### Response")


def prompt_style_for(tokenizer: Any, model_kind: str) -> PromptStyle:
    """``seq2seq`` for encoder-decoders, ``chat`` when the tokenizer has a chat template, else ``instruction``."""
    if model_kind == "seq2seq":
        return "seq2seq"
    return "chat" if getattr(tokenizer, "chat_template", None) else "instruction"


def _fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def _chat_messages(task: Task, example: Example, demonstrations: Sequence[Example]) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    for demo in demonstrations:
        messages.append({"role": "user", "content": task.instruction(demo)})
        messages.append({"role": "assistant", "content": _fenced(task.target(demo))})
    messages.append({"role": "user", "content": task.instruction(example)})
    return messages


def _instruction_block(instruction: str, answer: str | None) -> str:
    text = f"{INSTRUCTION_HEADER}{instruction}\n\n{RESPONSE_HEADER}"
    return text if answer is None else f"{text}{answer}\n\n"


def build_prompt(
    task: Task,
    example: Example,
    tokenizer: Any,
    style: PromptStyle,
    demonstrations: Sequence[Example] = (),
) -> str:
    """The text given to the model for ``example``, preceded by ``demonstrations`` (nearest last)."""
    if style == "chat":
        return tokenizer.apply_chat_template(
            _chat_messages(task, example, demonstrations), tokenize=False, add_generation_prompt=True
        )
    if style == "instruction":
        blocks = [_instruction_block(task.instruction(d), task.target(d)) for d in demonstrations]
        return "".join(blocks) + _instruction_block(task.instruction(example), None)
    if style == "seq2seq":
        blocks = [f"{task.instruction(d)}\n{task.target(d)}\n\n" for d in demonstrations]
        return "".join(blocks) + task.instruction(example)
    raise ValueError(f"unknown prompt style {style!r}")


def build_target(task: Task, example: Example, tokenizer: Any, style: PromptStyle) -> str:
    """The text the model should produce after ``build_prompt`` (the completion-only loss covers it).

    For chat it is whatever the template appends for the assistant turn (fence plus end-of-turn
    token); for instruction style the code plus the EOS token; for seq2seq the bare code (the
    tokenizer adds EOS to labels itself).
    """
    code = task.target(example)
    if style == "chat":
        messages = _chat_messages(task, example, ())
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": _fenced(code)}], tokenize=False
        )
        if full.startswith(prompt):
            return full[len(prompt):]
        return _fenced(code) + (tokenizer.eos_token or "")
    if style == "instruction":
        return code + (tokenizer.eos_token or "")
    return code


def default_stops(style: PromptStyle) -> list[str]:
    """Stop strings that end an answer in this style (chat ends at the template's EOS token)."""
    return list(INSTRUCTION_STOPS) if style == "instruction" else []
