"""Dropout from cheap random bits, swapped into adapter layers for training.

peft's LoRA and DoRA layers drop their input with ``nn.Dropout``, which draws one random number per
element through torch's Bernoulli sampler: on CPU that took 18% of a LoRA training step of
smollm2-135m (benchmarks/results/training.md). ``FastDropout`` draws 16 random bits per element
(64-bit words from a fast generator seeded by torch's) and keeps an element when its draw is at
least ``p`` on a 1/65536 grid, so the drop probability is ``p`` rounded to a multiple of 1/65536
(0.05 becomes 0.050003); kept elements are scaled by ``1 / (1 - p)`` as ``nn.Dropout`` does. Each
element is dropped independently, the draws follow torch's seed (and its checkpointed RNG state),
and it does nothing in evaluation mode.
"""

from __future__ import annotations

from typing import Any

import torch

GRID = 1 << 16
#: the bit pattern of 1.0 in each float type, as the signed integer of the same width
_ONE_BITS = {torch.bfloat16: (torch.int16, 0x3F80), torch.float16: (torch.int16, 0x3C00),
             torch.float32: (torch.int32, 0x3F800000)}


def random_int16(count: int, device: torch.device) -> torch.Tensor:
    """``count`` uniform 16-bit integers, drawn reproducibly from torch's seeded generator.

    On CPU, torch seeds numpy's SFC64 generator (one draw), which fills the bits about 3x faster than
    ``torch.randint``; checkpoints that restore torch's RNG state therefore restore these bits too.
    """
    words = (count + 3) // 4
    if device.type == "cpu":
        import numpy as np

        seed = int(torch.randint(0, 2**63 - 1, (1,)))
        return torch.from_numpy(np.random.SFC64(seed).random_raw(words).view(np.int16)[:count])
    return torch.randint(-(2**63), 2**63 - 1, (words,), dtype=torch.int64, device=device).view(torch.int16)[:count]


class _Masked(torch.autograd.Function):
    """``x * keep * scale`` with ``keep`` a 0/1 tensor of ``x``'s dtype; the backward reuses ``keep``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None, None


class FastDropout(torch.nn.Module):
    """Drop each element with probability ``p`` (rounded to 1/65536), scaling the rest by ``1 / (1 - p)``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * GRID) - GRID // 2  # int16 draws below this are dropped

    def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """1 where an element of ``x`` is kept, 0 where dropped, in ``x``'s dtype."""
        keep = random_int16(x.numel(), x.device).view(x.shape) >= self.threshold
        if x.dtype in _ONE_BITS:  # bool -> int -> float bit pattern: far cheaper than bool.to(bfloat16) on CPU
            int_type, one = _ONE_BITS[x.dtype]
            return keep.to(int_type).mul_(one).view(x.dtype)
        return keep.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return _Masked.apply(x, self.keep_mask(x), 1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Replace every adapter layer's ``nn.Dropout`` (peft's ``lora_dropout``) with ``FastDropout``; returns how many."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, layer in list(dropouts.items()):
            if isinstance(layer, torch.nn.Dropout) and layer.p > 0:
                dropouts[name] = FastDropout(layer.p)
                swapped += 1
    return swapped
