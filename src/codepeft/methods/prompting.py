"""Prompt methods (nothing is trained, the prompt changes) and the prompt budget they share.

``zero-shot`` lives here; ICL and RAG register beside it. Each prompt method picks, for every
query, demonstrations from a pool (the training split), ordered least relevant first so the most
relevant one sits nearest the query. ``build_prompts`` then formats them through
``codepeft.data.prompts`` and drops demonstrations from the least relevant end until the prompt
fits the model's context minus ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from codepeft.data.base import Example, Task
from codepeft.data.prompts import PromptStyle, build_prompt
from codepeft.methods.base import Method, MethodParams, register_method


class PromptMethod(Method):
    kind: ClassVar[Literal["prompt", "train"]] = "prompt"

    def select(
        self, queries: Sequence[Example], pool: Sequence[Example], params: MethodParams
    ) -> list[list[Example]]:
        """Demonstrations for each query, least relevant first."""
        raise NotImplementedError


@register_method
class ZeroShot(PromptMethod):
    name = "zero-shot"
    description = "The model as it is: the task's prompt with no demonstrations."

    def select(self, queries, pool, params):
        return [[] for _ in queries]


@dataclass
class BuiltPrompt:
    text: str
    demonstrations: list[str]  # ids of the demonstrations kept, least relevant first
    dropped: int  # demonstrations dropped to fit the budget
    tokens: int


def build_prompts(
    task: Task,
    queries: Sequence[Example],
    demonstrations: Sequence[Sequence[Example]],
    tokenizer: Any,
    style: PromptStyle,
    max_prompt_tokens: int | None,
) -> list[BuiltPrompt]:
    """Format every query with its demonstrations, within ``max_prompt_tokens`` when given."""
    built: list[BuiltPrompt] = []
    for query, demos in zip(queries, demonstrations, strict=True):
        kept = list(demos)
        while True:
            text = build_prompt(task, query, tokenizer, style, kept)
            tokens = len(tokenizer(text, add_special_tokens=style != "chat")["input_ids"])
            if max_prompt_tokens is None or tokens <= max_prompt_tokens or not kept:
                break
            kept.pop(0)  # least relevant first
        built.append(BuiltPrompt(text, [d.id for d in kept], len(demos) - len(kept), tokens))
    return built
