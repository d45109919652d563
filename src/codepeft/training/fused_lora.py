"""LoRA layers for training as one autograd function: base product, adapter dropout and adapter together.

peft computes a LoRA layer as ``base(x) + lora_B(lora_A(dropout(x))) * scaling``: a dense dropout
mask, then several elementwise passes over activations (drop, rescale, scale the adapter output,
add it) in both directions, for each of the ~200 adapted layers of a small model. ``fused_lora``
computes the same function with the scalings folded into the small up-projection matrix, the
adapter output accumulated into the base product (``addmm``) and, in the backward, the base's
input gradient accumulated onto the adapter's.

Dropout draws the *positions* of the dropped elements instead of a mask: the gaps between dropped
elements of an i.i.d. Bernoulli(p) sequence are geometric, so exponential draws (scaled by
``1 / -log(1 - p)``, floored) give them at about ``p`` random numbers per element; each element is
dropped independently with exactly probability ``p``. The draws are seeded from torch's generator,
so seeds, checkpoints and gradient checkpointing (which replays torch's RNG state) reproduce them.

On CPU the frozen base weight is also reordered once, for the forward and for the input gradient,
into oneDNN's blocked layout (the prepacking torch's inductor does for inference), so its two large
products per layer and step skip the reorder oneDNN otherwise does on every call: 13% faster on
their own (``[618, 576] x [576, 1536]`` in bf16), at the cost of two packed copies of the base
weights while training.

The function saves the layer's input and the dropped positions, not a dropped copy of the input, and
zeroes those positions again in the backward: layers that read the same input (q, k and v; gate and
up) then keep one tensor between them instead of one copy each.

QLoRA's layers (peft's LoRA on a frozen bitsandbytes int8 or NF4 base) use the same function with the
base weight dequantized on each call, forward and backward, as bitsandbytes does on CPU
(``codepeft.models.dequantize``); nothing dequantized is kept between the two, so quantizing saves memory instead
of peft's unfused path costing more (its dropout copy and bitsandbytes' own saved input).

Used for training (``TrainSettings.fused_lora``) on plain LoRA and QLoRA layers whose adapter computes
in the base's compute dtype; DoRA (``fused_dora.py``), other variants and anything else keep peft's forward.
It calls private oneDNN ops (``torch.ops.mkldnn._*``) and replaces peft's ``forward``, so it is used
only on the torch and peft releases it was verified on (``VERIFIED``); on any other, training keeps
peft's layers and logs why.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
from collections.abc import Callable
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F

from codepeft.models.dequantize import compute_dtype, dequantizer, usable

#: where a fused layer keeps its prepacked base weights (an instance attribute, not a parameter or buffer)
PACKED = "_codepeft_packed_weight"
#: where a fused layer on a quantized base keeps how to dequantize it (``dequantize.dequantizer``)
DEQUANTIZE = "_codepeft_dequantize"
#: the torch and peft releases (major.minor) the fused layers were checked on against peft's (tests/test_fused_lora.py)
VERIFIED = {"torch": "2.13", "peft": "0.21"}
log = logging.getLogger(__name__)


def unverified_versions() -> str | None:
    """Why the fused layers are not used with the installed torch and peft, or ``None`` when they were verified."""
    found = {name: importlib.metadata.version(name) for name in VERIFIED}
    other = [f"{name} {version}" for name, version in found.items()
             if version.split("+")[0].split(".")[:2] != VERIFIED[name].split(".")]
    if not other:
        return None
    verified = " and ".join(f"{name} {release}.x" for name, release in VERIFIED.items())
    return f"fused LoRA layers were verified on {verified}, found {', '.join(other)}: training with peft's own layers"


def drop_positions(count: int, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sorted flat indices of the elements dropped among ``count``, each one independently with probability ``p``."""
    if not 0 < p < 1:
        raise ValueError(f"dropout probability must be in (0, 1), got {p}")
    import numpy as np

    seed = int(torch.randint(0, 2**63 - 1, (1,)))
    generator = np.random.Generator(np.random.SFC64(seed))
    per_unit = 1 / -math.log1p(-p)  # floor(E / -log(1 - p)) is geometric with success probability p
    expected = count * p
    chunk = int(expected + 8 * math.sqrt(expected) + 16)
    chunks, last = [], -1
    while last < count - 1:
        gaps = generator.standard_exponential(chunk)
        gaps *= per_unit
        positions = np.cumsum(gaps.astype(np.int64) + 1) + last
        chunks.append(positions)
        last = int(positions[-1])
    positions = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return torch.from_numpy(positions[: np.searchsorted(positions, count)]).to(device)


def pack_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """oneDNN-packed copies of a frozen CPU weight (out x in) and of its transpose, or None where unavailable."""
    mkldnn = torch.ops.mkldnn
    if (weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.bfloat16)
            or not torch.backends.mkldnn.is_available() or not hasattr(mkldnn, "_reorder_linear_weight")):
        return None
    try:
        frozen = weight.detach()
        return mkldnn._reorder_linear_weight(frozen), mkldnn._reorder_linear_weight(frozen.t().contiguous())
    except RuntimeError:  # a build of torch without these kernels
        return None


def _linear(rows: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor | None,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    if packed is None:
        return F.linear(rows, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")


class LoraLinearFunction(torch.autograd.Function):
    """``x W^T + bias + scaling * dropout(x) A^T B^T`` with dropout given as dropped positions (or none).

    ``weight``/``bias`` are the frozen base layer's (``packed``: ``pack_weight(weight)`` or None);
    ``lora_a`` (r x in) and ``lora_b`` (out x r) the adapter's trainable weights, whose gradients are
    returned in their own dtype. Everything is computed in ``weight``'s dtype; under autocast to another
    dtype the layers' forward falls back to peft's.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float, dropped: torch.Tensor | None,
                keep_scale: float, packed: tuple[torch.Tensor, torch.Tensor] | None = None,
                dequantize: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        base = weight if dequantize is None else dequantize()
        dtype = base.dtype
        factor = scaling * keep_scale  # the adapter's scaling and dropout's 1 / (1 - p), folded into out x r numbers
        a = lora_a.to(dtype)
        b = (lora_b * factor).to(dtype)
        out = _linear(rows, base, packed and packed[0], bias)
        low = torch.mm(_kept(rows, dropped), a.t())
        out.addmm_(low, b.t())
        # The input itself is saved, not its dropped copy: the input is usually alive anyway (q, k and v,
        # gate and up share theirs), so a layer adds no input-sized tensor; the backward drops it again.
        # A quantized weight is not saved either: it is dequantized again for the input gradient.
        ctx.save_for_backward(weight, rows, low, a, b, dropped)
        ctx.dequantize = dequantize
        ctx.packed_transpose = packed and packed[1]  # a frozen constant, not part of the graph
        ctx.factor = factor
        ctx.param_dtypes = (lora_a.dtype, lora_b.dtype)
        ctx.input_shape = shape
        return out.view(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, rows, low, a, b, dropped = ctx.saved_tensors
        base = weight if ctx.dequantize is None else ctx.dequantize()
        grad_rows = grad.reshape(-1, grad.shape[-1]).to(base.dtype)
        grad_low = torch.mm(grad_rows, b)
        grad_x = torch.mm(grad_low, a)
        if dropped is not None:
            grad_x.view(-1).index_fill_(0, dropped, 0)
        if ctx.packed_transpose is None:
            grad_x.addmm_(grad_rows, base)  # the base layer's input gradient, accumulated in place
        else:
            grad_x = torch.ops.mkldnn._linear_pointwise.binary(grad_rows, grad_x, ctx.packed_transpose, None, "add")
        grad_a = torch.mm(grad_low.t(), _kept(rows, dropped)).to(ctx.param_dtypes[0])  # grad_low carries the factor
        grad_b = torch.mm(grad_rows.t(), low).to(ctx.param_dtypes[1]).mul_(ctx.factor)
        return grad_x.view(ctx.input_shape), None, None, grad_a, grad_b, None, None, None, None, None


def _kept(rows: torch.Tensor, dropped: torch.Tensor | None) -> torch.Tensor:
    """``rows`` with the dropped elements zeroed (a new tensor), or ``rows`` itself without dropout."""
    if dropped is None:
        return rows
    kept = rows.clone()
    kept.view(-1).index_fill_(0, dropped, 0)
    return kept


def _dropout_probability(module: torch.nn.Module) -> float | None:
    """The drop probability of an adapter's dropout module, None if it is not a plain dropout."""
    from codepeft.training.dropout import FastDropout

    if isinstance(module, torch.nn.Identity):
        return 0.0
    if isinstance(module, torch.nn.Dropout | FastDropout):
        return float(module.p)
    return None


def _fusable(layer: torch.nn.Module) -> bool:
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    if not isinstance(layer, LoraLayer) or layer.merged or getattr(layer, "fan_in_fan_out", False):
        return False
    adapters = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(adapters) != 1 or adapters[0] in layer.lora_variant:  # DoRA and other variants keep peft's forward
        return False
    if isinstance(layer, LoraLinear):
        return plain_adapter_layer(layer, adapters[0])
    return quantized_adapter_layer(layer, adapters[0])  # QLoRA: peft's bitsandbytes LoRA layers


def plain_adapter_layer(layer: Any, name: str) -> bool:
    """A frozen plain ``nn.Linear`` base, bias-free adapter matrices and a dropout we can draw ourselves."""
    base = layer.base_layer
    return type(base) is torch.nn.Linear and not base.weight.requires_grad and _plain_adapter(layer, name)


def quantized_adapter_layer(layer: Any, name: str) -> bool:
    """A frozen bitsandbytes base that ``dequantize.dequantizer`` knows, with a plain adapter as above."""
    return dequantizer(layer.base_layer) is not None and _plain_adapter(layer, name)


def _plain_adapter(layer: Any, name: str) -> bool:
    return (layer.lora_A[name].bias is None and layer.lora_B[name].bias is None
            and _dropout_probability(layer.lora_dropout[name]) is not None)


def fusable_adapter(layer: Any, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
    """The one active adapter a fused forward can run for this call, or None (then peft's forward runs)."""
    names = [name for name in layer.active_adapters if name in layer.lora_A]
    base = layer.base_layer
    quantized = DEQUANTIZE in layer.__dict__
    if quantized and not usable(base):
        return None
    weight_dtype = compute_dtype(base, x) if quantized else base.weight.dtype
    device = x.device.type
    other_autocast = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) != weight_dtype
    if (args or kwargs or layer.disable_adapters or layer.merged or len(names) != 1 or x.dtype != weight_dtype
            or other_autocast):
        return None
    return names[0]


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = fusable_adapter(self, x, args, kwargs)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    p = _dropout_probability(self.lora_dropout[name]) or 0.0
    dropped, keep_scale = None, 1.0
    if self.training and p > 0:
        dropped, keep_scale = drop_positions(x.numel(), p, x.device), 1 / (1 - p)
    weight, bias, dequantize = base.weight, base.bias, None
    if (to_dtype := self.__dict__.get(DEQUANTIZE)) is not None:
        weight, dequantize = None, functools.partial(to_dtype, x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
    return LoraLinearFunction.apply(x, weight, bias, self.lora_A[name].weight, self.lora_B[name].weight,
                                    float(self.scaling[name]), dropped, keep_scale, self.__dict__.get(PACKED),
                                    dequantize)


def use_fused_lora(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Give every plain LoRA layer of ``model`` the fused forward (its base weight prepacked where
    ``pack_weight`` can); returns those layers, for ``restore_lora``. With torch or peft releases other
    than ``VERIFIED`` nothing changes (the reason is logged) and the list is empty."""
    reason = unverified_versions()
    if reason is not None:
        log.warning(reason)
        return []
    layers = [module for module in model.modules() if _fusable(module)]
    for layer in layers:
        layer.forward = MethodType(_fused_forward, layer)
        if (to_dtype := dequantizer(layer.base_layer)) is not None:
            layer.__dict__[DEQUANTIZE] = to_dtype
        elif (packed := pack_weight(layer.base_layer.weight)) is not None:
            layer.__dict__[PACKED] = packed
    return layers


def restore_lora(layers: list[torch.nn.Module]) -> None:
    """Put peft's own forward back on the layers ``use_fused_lora`` changed, dropping the packed weights."""
    for layer in layers:
        layer.__dict__.pop("forward", None)
        layer.__dict__.pop(PACKED, None)
        layer.__dict__.pop(DEQUANTIZE, None)
