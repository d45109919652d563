"""Batched decoding (greedy, beam, sampling) and the run-directory format it writes."""

from codepeft.generation.settings import GenerationSettings

__all__ = ["GenerationSettings"]
