"""Training: specialise a model with a train method, keep the best adapter, account for the cost.

``train`` (loop), ``TrainSettings`` (settings), tokenisation and batching (data), checkpoints,
costs; the speed-ups (fused LoRA, per-example attention, dropout, malloc tuning). Adapters on
disk (save / attach / merge) live in ``codepeft.models`` and are re-exported here.
"""

from codepeft.models import attach_adapter, merge_adapter  # re-exported: adapters live in models
from codepeft.training.loop import TrainResult, train
from codepeft.training.settings import TrainSettings

__all__ = ["TrainResult", "TrainSettings", "attach_adapter", "merge_adapter", "train"]
