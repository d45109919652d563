"""Training: specialise a model with a train method, keep the best adapter, account for the cost.

``train`` (loop), ``TrainSettings`` (settings), tokenisation and batching (data), checkpoints,
costs, and adapters (save / attach / merge).
"""

from codepeft.training.adapters import attach_adapter, merge_adapter
from codepeft.training.loop import TrainResult, train
from codepeft.training.settings import TrainSettings

__all__ = ["TrainResult", "TrainSettings", "attach_adapter", "merge_adapter", "train"]
