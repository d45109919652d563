"""Whether bitsandbytes' quantised layers (QLoRA's 4-/8-bit bases) run on this machine."""

from __future__ import annotations

import functools

from codepeft.errors import first_line


@functools.cache
def bitsandbytes_problem() -> str | None:
    """Why bitsandbytes' 4-/8-bit layers cannot run here, or ``None`` when a tiny quantised matmul works."""
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError as err:
        return f"bitsandbytes is not installed ({err.name}): pip install bitsandbytes"
    try:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        layer = bnb.nn.Linear4bit(16, 16, quant_type="nf4", compute_dtype=torch.float32).to(device)
        layer(torch.ones(1, 16, device=device))
    except Exception as err:  # any backend failure means the method cannot run here
        return f"bitsandbytes has no working backend for this {device.upper()} ({first_line(err)})"
    return None
