"""Batched decoding (greedy, beam, sampling) and the run-directory format it writes."""

from codepeft.generation.settings import GenerationSettings

# Imported eagerly so these names are the functions, not the submodules of the same name.
# Neither module imports torch at import time.
from codepeft.generation.generate import Generated, generate  # noqa: E402  (isort: skip)

__all__ = ["GenerationSettings", "Generated", "generate"]
