"""The training speed-up policy in one place: which speed-ups a run uses, applied, and undone.

``precision`` decides the compute dtypes; ``kept_freed_memory`` holds glibc's freed memory for the
run; ``apply_speedups`` puts fast dropout, the fused LoRA and DoRA layers and per-example attention on the
model and registers their undoing on an ``ExitStack``. The recipe (``loop.py``) enters both in a
``with``, so whatever ends the run (success, the divergence error, an interrupt) restores the model
and the process: nothing outlives a training run into generation or scoring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from codepeft.training.malloc import keep_freed_memory, release_freed_memory, restore_malloc_defaults
from codepeft.training.settings import TrainSettings


@dataclass(frozen=True)
class Precision:
    """How a run computes: ``autocast_bf16`` runs the forward under bf16 autocast; ``bf16_adapters``
    also keeps peft from casting adapted layers' inputs to fp32 (see ``precision``)."""

    base_dtype: str
    bf16_adapters: bool
    autocast_bf16: bool


def precision(settings: TrainSettings, method: Any, params: Any, loaded: Any) -> Precision:
    """Full fine-tuning keeps fp32 master weights and computes in bf16 where the base would have been bf16.

    peft keeps adapter weights in fp32 and casts every adapted layer's input to fp32 and back; for
    LoRA those casts cost more than the adapter itself on CPU, so (``bf16_adapters``) the adapters
    compute in bf16 under autocast, their fp32 weights staying the optimizer's master copy.
    """
    base_dtype = str(loaded.identity.get("dtype"))
    base_bf16 = base_dtype == "bfloat16"
    bf16_adapters = settings.bf16_adapters and base_bf16 and method.computes_in_bf16(loaded, params)
    autocast_bf16 = (method.trains_base_weights and base_bf16) or bf16_adapters
    return Precision(base_dtype, bf16_adapters, autocast_bf16)


@contextlib.contextmanager
def kept_freed_memory(enabled: bool) -> Iterator[None]:
    """glibc keeps freed memory for reuse during the run (``keep_freed_memory``); afterwards the memory
    is handed back and malloc's default thresholds are restored, however the run ends."""
    if not enabled:
        yield
        return
    keep_freed_memory()
    try:
        yield
    finally:
        release_freed_memory()
        restore_malloc_defaults()


def apply_speedups(model: Any, settings: TrainSettings, batching: str, compute: Precision,
                   undo: contextlib.ExitStack) -> list[Any]:
    """Put the enabled speed-ups on ``model``; their restores go on ``undo``. Returns the fused layers."""
    # imported here: they import torch, which `codepeft.training` itself does not need at import
    from codepeft.training.attention import restore_attention, use_per_example_attention
    from codepeft.training.dropout import use_fast_dropout
    from codepeft.training.fused_dora import restore_dora, use_fused_dora
    from codepeft.training.fused_lora import restore_lora, use_fused_lora

    if settings.fast_dropout:
        use_fast_dropout(model)
    # fused layers compute the adapter in the base's dtype: what peft does for an fp32 base, and bf16_adapters asks
    same_dtype = compute.bf16_adapters or compute.base_dtype == "float32"
    fused_layers = use_fused_lora(model) if settings.fused_lora and same_dtype else []
    undo.callback(restore_lora, fused_layers)
    dora_layers = use_fused_dora(model) if settings.fused_lora and same_dtype else []
    undo.callback(restore_dora, dora_layers)
    if batching == "packed" and settings.packed_attention == "per-example":
        undo.callback(restore_attention, model, use_per_example_attention(model))
    return fused_layers + dora_layers
