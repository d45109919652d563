"""DoRA layers for training as one autograd function: peft's math, without peft's per-step weight copies.

peft's DoRA layer (``peft.tuners.lora.dora.DoraLinearLayer``) computes

    y = W x + b + (m / n - 1) * (W d(x)) + (m / n) * s B A d(x),    n = ||W + s B A|| per output row,

with ``d`` the adapter dropout (the identity in evaluation, where ``y = (m / n) * (W + s B A) x + b``),
``m`` the learned magnitude and ``n`` detached from the gradient (the DoRA paper's section 4.3). To get
``n`` it builds ``B A`` from an identity matrix and ``W + s B A`` in fp32, an fp32 copy of every frozen
weight each step (kept alive for the backward), and with dropout it runs a second full product
``W d(x)`` in fp32: 4x slower than LoRA and twice its memory on CPU.

Here, with ``W`` frozen:

- ``n^2 = ||W_o||^2 + 2 s B_o . (W A^T)_o + s^2 B_o (A A^T) B_o^T``: ``||W_o||^2`` is computed once,
  the rest are rank-r products (summed in fp32, as peft computes ``n``; ``W A^T`` in the base's dtype);
- ``W d(x) = (W x - W (x * D)) / (1 - p)`` with ``D`` the dropped positions: the second product only
  touches the dropped elements (share ``p``), an embedding bag over the rows of ``W^T``;
- the output is the LoRA output plus ``c * v`` with ``c = m / n - 1`` (small, so bf16 keeps its
  precision) and ``v = W d(x) + s B A d(x)``, which the magnitude's gradient needs;
- backwards, the input gradient is ``(g * (1 + c / (1 - p))) W`` at kept positions (plus the
  adapter's) and ``g W`` at dropped ones: both from one product over ``2T`` rows (torch's CPU kernels
  for a product sampled at the dropped positions only were no faster than the dense one); without
  dropout one product over ``T`` rows. Everything else is rank-r.

Like ``fused_lora`` it computes in the base weight's dtype (bf16 adapters on a bf16 base keep fp32
master weights; ``n`` and the magnitude's gradient stay fp32), draws dropout as dropped positions and
prepacks the frozen weight for oneDNN on CPU. Used for training (``TrainSettings.fused_lora``) on DoRA
layers of plain linear bases; anything else keeps peft's forward.
"""

from __future__ import annotations

import logging
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F

from codepeft.training.fused_lora import (
    _dropout_probability,
    _kept,
    _linear,
    drop_positions,
    fusable_adapter,
    pack_weight,
    plain_adapter_layer,
    unverified_versions,
)

log = logging.getLogger(__name__)

#: where a fused DoRA layer keeps its frozen-weight constants (an instance attribute, not a parameter or buffer)
STATE = "_codepeft_dora"


def dora_weight_norm(weight_sq: torch.Tensor, weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                     scaling: float, packed: torch.Tensor | None = None) -> torch.Tensor:
    """``||W + scaling * B A||`` per output row in fp32, from ``weight_sq = ||W||^2`` per row and rank-r products.

    ``W A^T`` is computed in ``weight``'s dtype (``packed``: the prepacked ``weight``), as the layer's own
    products are: on a bf16 base that rounds the cross term, not ``||W||^2``, to bf16.
    """
    a, b = lora_a.detach().float(), lora_b.detach().float()
    with torch.autocast(weight.device.type, enabled=False):  # the training forward runs under bf16 autocast
        weight_a = _linear(a.to(weight.dtype), weight.detach(), packed).float()  # A W^T: r x out
        cross = (b * weight_a.t()).sum(1)  # B_o . (W A^T)_o = W_o . (B A)_o
        lora_sq = (torch.mm(b, torch.mm(a, a.t())) * b).sum(1)  # ||(B A)_o||^2 = B_o (A A^T) B_o^T
    return (weight_sq + 2 * scaling * cross + scaling * scaling * lora_sq).clamp_min(0).sqrt()


def _dropped_product(rows: torch.Tensor, weight_t: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """``W (x * D)``: each row's dropped elements times the matching rows of ``W^T``, summed per row."""
    width = rows.shape[1]
    bounds = torch.arange(rows.shape[0] + 1, device=rows.device) * width
    offsets = torch.searchsorted(dropped, bounds)  # dropped is sorted: where each row's positions start
    return F.embedding_bag(dropped % width, weight_t, offsets, mode="sum",
                           per_sample_weights=rows.reshape(-1).index_select(0, dropped), include_last_offset=True)


class DoraLinearFunction(torch.autograd.Function):
    """peft's DoRA layer ``W x + b + c * W d(x) + (1 + c) * s B A d(x)``, ``c = m / n - 1`` with ``n`` detached.

    ``dropped``: the dropped flat positions of ``x`` (None: no dropout), ``keep_scale = 1 / (1 - p)``.
    ``weight_t`` is ``W^T`` contiguous (for the dropped product; None without dropout), ``packed``
    ``pack_weight(weight)`` or None. Computed in ``weight``'s dtype; ``lora_a``, ``lora_b`` and
    ``magnitude`` get their gradients in their own dtype.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_a: torch.Tensor,
                lora_b: torch.Tensor, magnitude: torch.Tensor, norm: torch.Tensor, scaling: float,
                dropped: torch.Tensor | None, keep_scale: float, weight_t: torch.Tensor | None = None,
                packed: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        dtype = weight.dtype
        factor = scaling * keep_scale  # the adapter's scaling and dropout's 1 / (1 - p), folded into out x r numbers
        ratio = magnitude.detach().float() / norm
        a, b = lora_a.to(dtype), (lora_b * factor).to(dtype)
        ratio_minus_one = (ratio - 1).to(dtype)  # small: bf16 keeps its precision where m / n itself would lose it
        base = _linear(rows, weight, packed and packed[0])
        low = torch.mm(_kept(rows, dropped), a.t())
        if dropped is None:  # v = (W + s B A) x, y = (m / n) v
            direction = base.addmm_(low, b.t())
            out = torch.addcmul(direction, direction, ratio_minus_one)
        else:  # v = W d(x) + s B A d(x), y = W x + s B A d(x) + (m / n - 1) v
            direction = _dropped_product(rows, weight_t, dropped).sub_(base).mul_(-keep_scale)
            lora = torch.mm(low, b.t())
            direction.add_(lora)
            out = base.add_(lora).addcmul_(direction, ratio_minus_one)
        if bias is not None:
            out.add_(bias)
        # as in fused_lora: the input is saved, not its dropped copy
        ctx.save_for_backward(weight, rows, low, a, lora_b, direction, norm, ratio, dropped)
        ctx.weight_t, ctx.packed_transpose = weight_t, packed and packed[1]  # frozen constants, not in the graph
        ctx.factor, ctx.keep_scale = factor, keep_scale
        ctx.param_dtypes = (lora_a.dtype, lora_b.dtype, magnitude.dtype)
        ctx.input_shape = shape
        return out.view(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, x_rows, low, a, lora_b, direction, norm, ratio, dropped = ctx.saved_tensors
        dtype = weight.dtype
        grad_rows = grad.reshape(-1, grad.shape[-1]).to(dtype)
        grad_magnitude = (grad_rows * direction).sum(0, dtype=torch.float32).div_(norm).to(ctx.param_dtypes[2])
        # the adapter sees g * m / n: fold m / n into the small up-projection instead of scaling g
        b_ratio = (lora_b * (ratio * ctx.factor)[:, None]).to(dtype)
        grad_low = torch.mm(grad_rows, b_ratio)
        grad_a = torch.mm(grad_low.t(), _kept(x_rows, dropped)).to(ctx.param_dtypes[0])  # grad_low carries the factor
        grad_b = torch.mm(grad_rows.t(), low).float().mul_((ratio * ctx.factor)[:, None]).to(ctx.param_dtypes[1])
        weight_t = ctx.weight_t if ctx.weight_t is not None else weight.t()
        ratio_minus_one = (ratio - 1).to(dtype)
        if dropped is None:  # d(x) = x: (g * m / n) (W + s B A)
            scaled = torch.addcmul(grad_rows, grad_rows, ratio_minus_one)
            return (_linear(scaled, weight_t, ctx.packed_transpose).addmm_(grad_low, a).reshape(ctx.input_shape),
                    None, None, grad_a, grad_b, grad_magnitude, None, None, None, None, None, None)
        # kept positions see g (1 + (m / n - 1) / (1 - p)) W plus the adapter, dropped ones only g W:
        # one product over 2T rows
        rows = len(grad_rows)
        both = grad_rows.new_empty(2 * rows, grad_rows.shape[1])
        torch.addcmul(grad_rows, grad_rows, ratio_minus_one, value=ctx.keep_scale, out=both[:rows])
        both[rows:].copy_(grad_rows)
        both = _linear(both, weight_t, ctx.packed_transpose)
        grad_x, plain = both[:rows], both[rows:]
        grad_x.addmm_(grad_low, a)
        grad_x.view(-1).index_copy_(0, dropped, plain.reshape(-1).index_select(0, dropped))
        return (grad_x.reshape(ctx.input_shape), None, None, grad_a, grad_b, grad_magnitude, None, None, None, None,
                None, None)


def _fusable(layer: torch.nn.Module) -> bool:
    from peft.tuners.lora.dora import DoraLinearLayer
    from peft.tuners.lora.layer import Linear as LoraLinear

    if not isinstance(layer, LoraLinear) or layer.merged or layer.fan_in_fan_out:
        return False
    adapters = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(adapters) != 1 or adapters[0] not in layer.lora_magnitude_vector:
        return False
    name = adapters[0]
    if not isinstance(layer.lora_magnitude_vector[name], DoraLinearLayer):
        return False
    return plain_adapter_layer(layer, name)


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = fusable_adapter(self, x, args, kwargs)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    state = self.__dict__[STATE]
    lora_a, lora_b = self.lora_A[name].weight, self.lora_B[name].weight
    scaling = float(self.scaling[name])
    norm = dora_weight_norm(state["weight_sq"], base.weight, lora_a, lora_b, scaling,
                            state["packed"] and state["packed"][0])
    p = _dropout_probability(self.lora_dropout[name]) or 0.0
    dropped, keep_scale, weight_t = None, 1.0, None
    if self.training and p > 0:
        dropped, keep_scale = drop_positions(x.numel(), p, x.device), 1 / (1 - p)
        if "weight_t" not in state:  # made once, on the first training forward with dropout
            state["weight_t"] = base.weight.detach().t().contiguous()
        weight_t = state["weight_t"]
    return DoraLinearFunction.apply(x, base.weight, base.bias, lora_a, lora_b,
                                    self.lora_magnitude_vector[name].weight, norm, scaling, dropped, keep_scale,
                                    weight_t, state["packed"])


def use_fused_dora(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Give every DoRA layer of ``model`` on a plain linear base the fused forward; returns those layers,
    for ``restore_dora``. With torch or peft releases other than ``fused_lora.VERIFIED`` (the fused layers
    read peft's DoRA attributes) nothing changes, the reason is logged and the list is empty."""
    if (reason := unverified_versions()) is not None:
        log.warning(reason.replace("fused LoRA layers", "fused LoRA and DoRA layers"))
        return []
    layers = [module for module in model.modules() if _fusable(module)]
    for layer in layers:
        weight = layer.base_layer.weight
        layer.forward = MethodType(_fused_forward, layer)
        layer.__dict__[STATE] = {"weight_sq": weight.detach().float().pow(2).sum(1), "packed": pack_weight(weight)}
    return layers


def restore_dora(layers: list[torch.nn.Module]) -> None:
    """Put peft's own forward back on the layers ``use_fused_dora`` changed, dropping their frozen-weight constants."""
    for layer in layers:
        layer.__dict__.pop("forward", None)
        layer.__dict__.pop(STATE, None)
