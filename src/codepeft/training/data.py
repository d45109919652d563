"""Training examples as token ids with completion-only labels, the order they are seen in, and batches.

The prompt is ``build_prompt`` and the target ``build_target`` (the same text the prompted arms
see), tokenised separately so the prompt tokens can be masked (label -100): the loss covers only
what the model must write. Batches avoid padding: ``packed`` concatenates the examples of a batch
into rows of at most ``pack_row_tokens`` tokens whose ``position_ids`` restart at every example
(transformers then builds a block-diagonal causal mask per row, so no example attends to another;
several short rows keep the attention score matrices small; with ``packed_attention="per-example"``
attention is computed per example instead, see ``attention.py``); ``grouped`` batches similar
lengths and pads each batch to its longest; ``dynamic`` takes examples in random order and pads
each batch to its longest; ``fixed`` pads every example to ``max_length`` (the reference study's
way, kept for comparison).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from codepeft.data.base import Example, Task
from codepeft.data.prompts import build_prompt, build_target

IGNORE = -100


@dataclass(frozen=True)
class Tokenized:
    """One example: ``input_ids`` (causal: prompt + target; seq2seq: encoder input) and ``labels``
    (causal: aligned with input_ids, prompt masked; seq2seq: the decoder target)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    source: int = 0

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def real_tokens(self) -> int:
        """Tokens the model processes for this example without padding (encoder + decoder for seq2seq)."""
        seq2seq = len(self.labels) != len(self.input_ids)
        return len(self.input_ids) + (len(self.labels) if seq2seq else 0)

    def target_tokens(self, causal: bool) -> int:
        """Tokens the loss covers (causal: shifted, so position 0 never counts)."""
        labels = self.labels[1:] if causal else self.labels
        return sum(1 for label in labels if label != IGNORE)


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def tokenize_example(task: Task, example: Example, loaded: Any, max_length: int, source: int = 0) -> Tokenized | None:
    """Token ids and completion-only labels for one example, cut to ``max_length``; ``None`` if no target is left."""
    tokenizer, style = loaded.tokenizer, loaded.style
    prompt = build_prompt(task, example, tokenizer, style)
    target = build_target(task, example, tokenizer, style)
    if loaded.kind == "seq2seq":
        input_ids = _ids(tokenizer, prompt, True)[:max_length]
        labels = list(tokenizer(text_target=target)["input_ids"])[:max_length]
        return Tokenized(tuple(input_ids), tuple(labels), source) if labels else None
    prompt_ids = _ids(tokenizer, prompt, style != "chat")
    target_ids = _ids(tokenizer, target, False)
    # Keep at least half the budget for the prompt; cut long prompts from the left (the query sits at the end).
    prompt_budget = max(max_length - len(target_ids), max_length // 2)
    prompt_ids = prompt_ids[-prompt_budget:] if len(prompt_ids) > prompt_budget else prompt_ids
    target_ids = target_ids[: max_length - len(prompt_ids)]
    if not target_ids:
        return None
    return Tokenized(tuple(prompt_ids + target_ids), tuple([IGNORE] * len(prompt_ids) + target_ids), source)


def tokenize_all(
    task: Task, examples: Sequence[Example], loaded: Any, max_length: int, source: int = 0
) -> list[Tokenized]:
    items = (tokenize_example(task, ex, loaded, max_length, source) for ex in examples)
    return [item for item in items if item is not None]


def epoch_order(sizes: Sequence[int], weights: Sequence[float], seed: int, epoch: int) -> list[tuple[int, int]]:
    """The (source, index) pairs one epoch visits: ``sum(sizes)`` draws, each source chosen with
    probability proportional to its weight, its examples taken in a fresh shuffled cycle."""
    rng = random.Random(seed * 100_003 + epoch)
    total = sum(sizes)
    active = [s for s, size in enumerate(sizes) if size > 0]
    if len(active) == 1:
        order = list(range(sizes[active[0]]))
        rng.shuffle(order)
        return [(active[0], i) for i in order]
    cycles: dict[int, list[int]] = {s: [] for s in active}
    picks = rng.choices(active, weights=[weights[s] for s in active], k=total)
    visits: list[tuple[int, int]] = []
    for source in picks:
        if not cycles[source]:
            cycles[source] = list(range(sizes[source]))
            rng.shuffle(cycles[source])
        visits.append((source, cycles[source].pop()))
    return visits


def plan_batches(
    items: Sequence[Tokenized], batch_size: int, batching: str, seed: int, group_window: int = 64
) -> list[list[int]]:
    """Split ``items`` (already in epoch order) into batches of ``batch_size`` indices.

    ``grouped`` sorts windows of ``group_window`` batches by length, then shuffles the batches so
    lengths do not drift through the epoch; the other modes keep the order.
    """
    indices = list(range(len(items)))
    if batching == "grouped":
        window = batch_size * group_window
        grouped: list[int] = []
        for start in range(0, len(indices), window):
            chunk = indices[start : start + window]
            grouped.extend(sorted(chunk, key=lambda i: items[i].real_tokens, reverse=True))
        batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
        random.Random(seed).shuffle(batches)
        return batches
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def pack_rows(lengths: Sequence[int], row_tokens: int | None) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``row_tokens`` tokens, first-fit decreasing.

    An example longer than ``row_tokens`` gets a row of its own; ``None`` puts everything in one row.
    """
    if row_tokens is None:
        return [list(range(len(lengths)))]
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        row = next((r for r, free in enumerate(room) if free >= lengths[index]), None)
        if row is None:
            rows.append([])
            room.append(row_tokens)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= lengths[index]
    return rows


def _packed(items: Sequence[Tokenized], pad_id: int, row_tokens: int | None) -> dict[str, Any]:
    import torch

    rows = pack_rows([item.length for item in items], row_tokens)
    width = max(sum(items[i].length for i in row) for row in rows)
    input_ids, labels, positions = [], [], []
    for row in rows:
        ids = [t for i in row for t in items[i].input_ids]
        pad = width - len(ids)
        input_ids.append(ids + [pad_id if pad_id is not None else 0] * pad)  # never attended to nor scored
        labels.append([t for i in row for t in items[i].labels] + [IGNORE] * pad)
        # the pad run restarts at 0, so the block-diagonal mask treats it as a sequence of its own
        positions.append([p for i in row for p in range(items[i].length)] + list(range(pad)))
    return {
        "input_ids": torch.tensor(input_ids),
        "position_ids": torch.tensor(positions),
        "labels": torch.tensor(labels),
    }


def collate(
    items: Sequence[Tokenized],
    batching: str,
    causal: bool,
    pad_id: int,
    max_length: int,
    pack_row_tokens: int | None = None,
) -> dict[str, Any]:
    """Model inputs for a batch: packed rows (``pack_row_tokens`` each at most, ``None``: one row), or a
    right-padded matrix with an attention mask."""
    import torch

    if batching == "packed" and causal:
        return _packed(items, pad_id, pack_row_tokens)
    width = max_length if batching == "fixed" else max(item.length for item in items)
    input_ids = torch.full((len(items), width), pad_id)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        input_ids[row, : item.length] = torch.tensor(item.input_ids)
        attention[row, : item.length] = 1
    if causal:
        labels = torch.full((len(items), width), IGNORE)
        for row, item in enumerate(items):
            labels[row, : item.length] = torch.tensor(item.labels)
    else:
        label_width = max_length if batching == "fixed" else max(len(item.labels) for item in items)
        labels = torch.full((len(items), label_width), IGNORE)
        for row, item in enumerate(items):
            labels[row, : len(item.labels)] = torch.tensor(item.labels)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def processed_tokens(batch: dict[str, Any]) -> int:
    """Token positions the model computes for a batch, padding included (for the padding-waste figure)."""
    total = batch["input_ids"].numel()
    if "position_ids" not in batch and batch["labels"].shape != batch["input_ids"].shape:
        total += batch["labels"].numel()
    return int(total)
