"""Attention for packed rows that computes only what each example needs (registered with transformers).

A packed row holds several examples whose ``position_ids`` restart at 0. transformers' default
(``sdpa``) turns that into one block-diagonal mask over the whole row, so the attention of a row of
``T`` tokens costs ``T x T`` scores, most of them masked away. ``per_example_attention`` instead cuts
the row's queries, keys and values into one sequence per example (sorted by length into at most two
groups, each padded to its longest example), runs plain causal attention on those small batches and
puts the outputs back in place: ``sum(L_i^2)``
scores instead of ``T^2`` and no mask to build. On CPU it computes the scores with explicit matrix
products (for short examples, faster forward and backward than the fused CPU kernel, measured in
benchmarks/results/training.md); on GPU, or for long examples, it calls the fused SDPA kernel.

It is used for training with ``batching="packed"`` (``TrainSettings.packed_attention``); models
that do not pass ``position_ids`` down to their attention get a clear error, never a silently wrong
mask.
"""

from __future__ import annotations

from typing import Any

from codepeft.errors import CodepeftError

NAME = "codepeft_per_example"
#: longest example (tokens) for which the explicit-matrix path is used on CPU; longer ones use SDPA
EXPLICIT_MAX_LENGTH = 256


class _Plan:
    """Where each token of the packed rows goes in the per-example batches, and back.

    The examples are sorted by length and split into at most two groups, each padded to its own
    longest example, when that saves a quarter of the padded score area or more (one long example
    would otherwise make every short one pad to its length).
    """

    def __init__(self, position_ids: Any, length: int) -> None:
        import torch

        device = position_ids.device
        positions = position_ids.reshape(-1)
        total = positions.numel()
        starts_mask = torch.ones(total, dtype=torch.bool, device=device)
        starts_mask[1:] = positions[1:] != positions[:-1] + 1
        starts_mask[::length] = True  # every row starts a sequence
        starts = torch.nonzero(starts_mask).flatten().tolist()
        lengths = [end - start for start, end in zip(starts, [*starts[1:], total], strict=True)]
        self.groups: list[tuple[Any, int, int]] = []  # (gather index, sequences, longest) per group
        scatter = [0] * total
        base = 0
        for members in _split_by_length(lengths):
            longest = max(lengths[i] for i in members)
            gather: list[int] = []
            for rank, i in enumerate(members):
                start, size = starts[i], lengths[i]
                # Padding slots repeat the sequence's last token; they come after every real token, so
                # causal attention never lets a real query see them, and their outputs are never read.
                gather.extend(range(start, start + size))
                gather.extend([start + size - 1] * (longest - size))
                slot = base + rank * longest
                scatter[start : start + size] = range(slot, slot + size)
            self.groups.append((torch.tensor(gather, device=device), len(members), longest))
            base += len(members) * longest
        self.scatter = torch.tensor(scatter, device=device)  # token -> slot in the concatenated padded groups


def _split_by_length(lengths: list[int]) -> list[list[int]]:
    """Sequence indices in one group, or two (short ones, long ones) when that cuts the padded area by 25%+."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    one = len(order) * lengths[order[-1]] ** 2
    best, cut = one, None
    for split in range(1, len(order)):
        area = split * lengths[order[split - 1]] ** 2 + (len(order) - split) * lengths[order[-1]] ** 2
        if area < best:
            best, cut = area, split
    if cut is None or best > 0.75 * one:
        return [order]
    return [order[:cut], order[cut:]]


_last: list[Any] = [None, None]  # (position_ids, plan): every layer of one forward shares the plan


def _plan(position_ids: Any, length: int) -> _Plan:
    if _last[0] is not position_ids:
        _last[0], _last[1] = position_ids, _Plan(position_ids, length)
    return _last[1]


def per_example_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: Any = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal attention of ``query`` [B, H, T, D] within each packed example; returns [B, T, H, D]."""
    import torch
    import torch.nn.functional as F

    if position_ids is None:
        raise CodepeftError(
            f"{type(module).__name__} does not pass position ids to its attention, so packed examples cannot be kept "
            "apart: train with --batching grouped"
        )
    if kwargs.get("s_aux") is not None:
        raise CodepeftError("attention sinks are not supported with packed batches: train with --batching grouped")
    rows, heads, length, width = query.shape
    plan = _plan(position_ids, length)
    flat = [states.transpose(1, 2).reshape(rows * length, states.shape[1], width) for states in (query, key, value)]
    scale = scaling if scaling is not None else width**-0.5
    kv_heads = key.shape[1]
    outputs = []
    for gather, seqs, longest in plan.groups:
        q, k, v = (states.index_select(0, gather).view(seqs, longest, states.shape[1], width).transpose(1, 2)
                   for states in flat)
        explicit = (not query.is_cuda and longest <= EXPLICIT_MAX_LENGTH) or sliding_window or softcap
        if explicit:
            group = heads // kv_heads
            # queries grouped by the key/value head they share (grouped-query attention without repeating k, v)
            scores = torch.matmul(q.reshape(seqs, kv_heads, group * longest, width) * scale, k.transpose(-1, -2))
            if softcap:
                scores = torch.tanh(scores / softcap) * softcap
            scores = scores.masked_fill(~_causal(longest, group, sliding_window, scores.device), float("-inf"))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            if dropout and module.training:
                probs = F.dropout(probs, p=dropout)
            out = torch.matmul(probs, v).view(seqs, heads, longest, width)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if module.training else 0.0,
                                                 is_causal=True, scale=scale, enable_gqa=kv_heads != heads)
        outputs.append(out.transpose(1, 2).reshape(seqs * longest, heads, width))
    out = (outputs[0] if len(outputs) == 1 else torch.cat(outputs)).index_select(0, plan.scatter)
    return out.view(rows, length, heads, width), None


_masks: dict[tuple[int, int, int | None, str], Any] = {}


def _causal(length: int, group: int, window: int | None, device: Any) -> Any:
    """[group * length, length] boolean mask: query i may see key j when j <= i (and i - j < window)."""
    import torch

    key = (length, group, window, str(device))
    if key not in _masks:
        query_index = torch.arange(length, device=device)[:, None]
        key_index = torch.arange(length, device=device)[None, :]
        allowed = key_index <= query_index
        if window:
            allowed &= query_index - key_index < window
        if len(_masks) > 8:
            _masks.clear()
        _masks[key] = allowed.repeat(group, 1)
    return _masks[key]


def register() -> str:
    """Make ``per_example_attention`` available to transformers models under ``NAME``."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, per_example_attention)
    return NAME


def use_per_example_attention(model: Any) -> str | None:
    """Switch ``model`` (a transformers model, possibly peft-wrapped) to per-example attention.

    Returns the previous implementation to restore afterwards, or ``None`` when the model does not
    use transformers' attention interface (it then keeps its own masking of packed rows).
    """
    base = _base_model(model)
    if not getattr(base, "_supports_attention_backend", False):
        return None
    previous = base.config._attn_implementation
    base.set_attn_implementation(register())
    return previous


def restore_attention(model: Any, previous: str | None) -> None:
    if previous is not None:
        _base_model(model).set_attn_implementation(previous)


def _base_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
