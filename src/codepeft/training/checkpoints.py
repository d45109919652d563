"""Resumable checkpoints under ``checkpoints/step-NNNNNNN/`` and safe writes.

A checkpoint holds the trainable weights, the optimizer and scheduler, the random states and the
loop's position. It is written into a temporary directory and renamed when complete, so a kill or
a full disk never leaves a half checkpoint that looks whole; older ones are pruned only after a
new one is complete.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from codepeft.errors import CodepeftError, first_line
from codepeft.rundir import replacing

PREFIX = "step-"
STATE = "state.json"


def trainable_state(model: Any) -> dict[str, Any]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, step: int, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any],
                    keep: int) -> Path:
    import torch

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:07d}"
    with replacing(final) as tmp:
        tmp.mkdir()
        torch.save(trainable_state(model), tmp / "trainable.pt")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
                   tmp / "optimizer.pt")
        (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=2))
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE).exists())


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and random states; return the loop state. Corrupt: one-line error."""
    import torch

    try:
        state = json.loads((path / STATE).read_text())
        weights = torch.load(path / "trainable.pt", map_location="cpu", weights_only=True)
        extra = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
        parameters = dict(model.named_parameters())
        missing = [name for name in weights if name not in parameters]
        if missing or not weights:
            raise ValueError(f"weights do not match the model ({len(missing)} unknown tensors)")
        with torch.no_grad():
            for name, tensor in weights.items():
                parameters[name].copy_(tensor)
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        _set_rng_state(extra["rng"])
    except Exception as err:  # any unreadable piece makes the checkpoint unusable
        first = first_line(err, 160)
        raise CodepeftError(
            f"checkpoint {path} is corrupted ({first}): delete it to resume from an earlier one, "
            "or pass --no-resume to start over"
        ) from None
    return state
