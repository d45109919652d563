"""What a training run cost: parameters, peak memory, wall time, tokens; written as ``costs.json``."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any


def reset_peak_memory() -> bool:
    """Start a new peak measurement: Linux resets the process's peak RSS (VmHWM) through ``clear_refs``,
    so a run's peak is its own, not that of whatever the process did before. False where it cannot.

    Memory the allocator still holds free (``keep_freed_memory``) is handed back first, so it does
    not count in the next peak."""
    from codepeft.training.malloc import release_freed_memory

    release_freed_memory()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident memory since the last ``reset_peak_memory`` (Linux), else over the process's life."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def peak_memory_bytes() -> dict[str, int | None]:
    """Peak resident memory (see ``peak_rss_bytes``), and the CUDA allocator's peak when a GPU is used."""
    import torch

    gpu = int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
    return {"peak_rss_bytes": peak_rss_bytes(), "peak_gpu_allocated_bytes": gpu}


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, each shared tensor once; 4-bit packed weights count their stored elements."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        count = parameter.numel()
        # bitsandbytes stores two 4-bit values per byte; count the weights it represents
        quant_state = getattr(parameter, "quant_state", None)
        if quant_state is not None and getattr(quant_state, "shape", None) is not None:
            count = int(quant_state.shape.numel())
        total += count
        if parameter.requires_grad:
            trainable += count
    return trainable, total


@dataclass
class CostMeter:
    """Accumulates tokens and time while training; ``summary`` is what ``costs.json`` holds."""

    trainable_parameters: int = 0
    total_parameters: int = 0
    tokens_seen: int = 0  # real (non-padding) tokens fed to the model, all processes
    target_tokens: int = 0  # tokens the loss covered
    processed_tokens: int = 0  # positions computed, padding included
    attention_pairs: int = 0  # causal (query, key) pairs within the real tokens of each example, for FLOP counts
    train_seconds: float = 0.0  # optimizer steps only (validation excluded)
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)
    previous_wall_seconds: float = 0.0  # from runs this one resumed

    def summary(self, world_size: int = 1) -> dict[str, Any]:
        wall = self.previous_wall_seconds + time.perf_counter() - self.started
        data = {k: v for k, v in asdict(self).items() if k not in {"started", "previous_wall_seconds"}}
        data.update(peak_memory_bytes())
        data["wall_seconds"] = round(wall, 3)
        data["train_seconds"] = round(self.train_seconds, 3)
        data["tokens_per_second"] = round(self.tokens_seen / self.train_seconds, 2) if self.train_seconds else None
        data["padding_fraction"] = (
            round(1 - self.tokens_seen / self.processed_tokens, 4) if self.processed_tokens else None
        )
        data["processes"] = world_size
        return data
