"""Did a training run converge? A decision over its validation-loss history, kept apart from the loop.

A run counts as converged when its validation loss was no longer falling at the end: the last
validation is not lower than the best earlier one by more than ``tolerance`` (relative). With fewer
than three validations (the untrained one included) there is no trend to read and the answer is no.
Early stopping ends a run exactly when this holds, so an early-stopped run has converged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

TOLERANCE = 0.01  # a last step that still gains 1% of the loss means training had more to give


@dataclass
class Convergence:
    converged: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def convergence(val_losses: Sequence[tuple[int, float]] | Sequence[Sequence[float]],
                tolerance: float = TOLERANCE) -> Convergence:
    """``val_losses``: ``(step, loss)`` in step order, the untrained model's validation (step 0) first if known."""
    history = [(int(step), float(loss)) for step, loss in val_losses if math.isfinite(float(loss))]
    if len(history) < 3:
        return Convergence(False, f"only {len(history)} validation(s): too few to tell whether the loss still falls")
    *earlier, (last_step, last) = history
    best = min(loss for _, loss in earlier)
    gain = (best - last) / abs(best) if best else 0.0
    if gain > tolerance:
        return Convergence(False, f"validation loss still falling at step {last_step} "
                                  f"({gain:.1%} below the best earlier validation)")
    return Convergence(True, f"validation loss flat or rising at step {last_step} ({max(gain, 0.0):.1%} gain)")


def history_from_log(lines: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
    """The ``(step, val_loss)`` pairs of a ``train_log.jsonl`` (a resumed run may log a step twice: last wins)."""
    by_step: dict[int, float] = {}
    for line in lines:
        if isinstance(line.get("val_loss"), int | float) and isinstance(line.get("step"), int):
            by_step[line["step"]] = float(line["val_loss"])
    return sorted(by_step.items())
