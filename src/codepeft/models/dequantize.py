"""Frozen bitsandbytes base layers as plain weights: per call for training, once for generation.

QLoRA's base layers hold int8 (LLM.int8) or NF4 weights. On CPU bitsandbytes trains them by
dequantizing the weight and multiplying in the activations' dtype; ``fused_lora`` does the same inside
its one autograd function, so a QLoRA layer saves for the backward only what a LoRA layer saves (the
input it shares with the other projections of the block, the dropped positions) and dequantizes the
weight again for the input gradient instead of keeping a dequantized copy: the quantized weights are
the only copy of the base that lives through a step.

``dequantizer(layer)`` says whether a base layer can be used this way and how; anything else (fp16
weights that still train, bitsandbytes' inference-only CPU packing of 4-bit weights, layers this
module does not know) returns None and keeps peft's forward.

``dequantized(loaded, dtype)`` does it once for a whole model, for generation: a QLoRA adapter then
runs on the values it was trained against in plain layers, merges, and vLLM loads the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: (dtype) -> the layer's weight dequantized to that dtype, shape (out, in)
Dequantize = Callable[[torch.dtype], torch.Tensor]


def dequantizer(layer: torch.nn.Module) -> Dequantize | None:
    """How to dequantize the frozen weight of a bitsandbytes ``Linear8bitLt`` / ``Linear4bit``; None otherwise."""
    kind = type(layer).__name__
    if kind == "Linear8bitLt" and _frozen_int8(layer):
        return lambda dtype: _int8_weight(layer, dtype)
    if kind == "Linear4bit" and _plain_4bit(layer):
        return lambda dtype: _4bit_weight(layer, dtype)
    return None


def compute_dtype(layer: torch.nn.Module, x: torch.Tensor) -> torch.dtype:
    """The dtype bitsandbytes would multiply ``x`` in: 4-bit layers cast to their compute dtype, 8-bit ones use x's."""
    return getattr(layer, "compute_dtype", None) or x.dtype


def _frozen_int8(layer: Any) -> bool:
    state = getattr(layer, "state", None)
    if state is None or state.has_fp16_weights:
        return False
    return getattr(layer.weight, "CB", None) is not None or state.CB is not None


def _int8_weight(layer: Any, dtype: torch.dtype) -> torch.Tensor:
    """bitsandbytes' own CPU training formula (``MatMul8bitFp``): int8 rows times their scale / 127, in ``dtype``."""
    if layer.weight.CB is not None:  # the first call: bitsandbytes moves the quantized weight into the layer's state
        layer.init_8bit_state()
    state = layer.state
    return state.CB.to(dtype).mul_(state.SCB.unsqueeze(1).mul(1.0 / 127.0))


def _plain_4bit(layer: Any) -> bool:
    quant_state = getattr(layer.weight, "quant_state", None)
    # bitsandbytes repacks 4-bit weights for its CPU inference kernel on an eval forward without gradients;
    # that layout is not dequantize_4bit's, so such a layer keeps peft's (and bitsandbytes') forward
    return quant_state is not None and not getattr(quant_state, "packing_format_for_cpu", False)


def _4bit_weight(layer: Any, dtype: torch.dtype) -> torch.Tensor:
    from bitsandbytes.functional import dequantize_4bit

    return dequantize_4bit(layer.weight.data, layer.weight.quant_state).to(dtype)


def usable(layer: torch.nn.Module) -> bool:
    """Whether ``dequantizer`` still applies (a 4-bit layer may have been repacked for inference since)."""
    return type(layer).__name__ != "Linear4bit" or _plain_4bit(layer)


def dequantized(loaded: Any, dtype: str | torch.dtype) -> Any:
    """``loaded`` (a bitsandbytes-quantized base) with every quantized linear layer replaced by a plain
    ``nn.Linear`` holding its dequantized weight in ``dtype``: the weights QLoRA trained against, as
    values, in a model that merges adapters and saves a checkpoint vLLM loads.

    The identity records ``quantization: None`` and ``dequantized_from`` (the scheme), so the model is
    told apart from the unquantized base. A layer this module does not know is an error, not kept
    quantized in silence.
    """
    import dataclasses

    from codepeft.errors import CodepeftError

    target = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = loaded.model
    for name, module in list(model.named_modules()):
        kind = type(module).__name__
        if kind not in ("Linear8bitLt", "Linear4bit"):
            continue
        to_dtype = dequantizer(module)
        if to_dtype is None:
            raise CodepeftError(f"cannot dequantize {name} ({kind}): generate with --backend hf on the quantized base")
        plain = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                device="meta")
        plain.weight = torch.nn.Parameter(to_dtype(torch.float32).to(target), requires_grad=False)
        if module.bias is not None:
            plain.bias = torch.nn.Parameter(module.bias.detach().to(target), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, plain)
    # transformers would refuse to cast a model it still believes quantized, and save its quantization config
    for attribute in ("is_quantized", "is_loaded_in_8bit", "is_loaded_in_4bit"):
        if getattr(model, attribute, False):
            setattr(model, attribute, False)
    for attribute in ("quantization_method", "hf_quantizer"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.to(target)
    model.config.dtype = target
    identity = {**loaded.identity, "quantization": None, "dequantized_from": loaded.identity.get("quantization"),
                "dtype": str(target).removeprefix("torch.")}
    return dataclasses.replace(loaded, model=model, identity=identity)
