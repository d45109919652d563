"""Batched decoding (greedy, beam, sampling) and the run-directory format it writes."""

# Imported eagerly so ``generate`` and ``evaluate`` name the functions, not the submodules of the same
# name (``importlib.import_module("codepeft.generation.evaluate")`` still reaches a module).
# Neither module imports torch at import time.
from codepeft.generation.evaluate import evaluate
from codepeft.generation.generate import Generated, generate
from codepeft.generation.settings import GenerationSettings

__all__ = ["Generated", "GenerationSettings", "evaluate", "generate"]
