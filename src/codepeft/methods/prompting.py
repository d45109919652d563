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


class Demonstrations(list):
    """One query's demonstrations in prompt order, remembering which end is least relevant.

    ``select`` returns these; ``build_prompts`` drops from the least relevant end. With
    ``most_relevant_last=False`` (RAG's ``nearest_last=False``) the most relevant example comes
    first, so the budget drops from the end instead. A plain list means least relevant first.
    """

    def __init__(self, items=(), *, most_relevant_last: bool = True) -> None:
        super().__init__(items)
        self.most_relevant_last = most_relevant_last


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
    """Format every query with its demonstrations, within ``max_prompt_tokens`` when given.

    Demonstrations that overflow the budget are dropped one at a time from the least relevant end
    (the start, or the end of a ``Demonstrations(most_relevant_last=False)``); the prompt without
    any demonstration is kept even when it alone exceeds the budget.
    """
    built: list[BuiltPrompt] = []
    for query, demos in zip(queries, demonstrations, strict=True):
        kept = list(demos)
        least_relevant = 0 if getattr(demos, "most_relevant_last", True) else -1
        while True:
            text = build_prompt(task, query, tokenizer, style, kept)
            tokens = len(tokenizer(text, add_special_tokens=style != "chat")["input_ids"])
            if max_prompt_tokens is None or tokens <= max_prompt_tokens or not kept:
                break
            kept.pop(least_relevant)
        built.append(BuiltPrompt(text, [d.id for d in kept], len(demos) - len(kept), tokens))
    return built
