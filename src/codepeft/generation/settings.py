"""One settings object for every way of decoding."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GenerationSettings(BaseModel):
    """How to decode. ``n`` candidates are returned per example (beams or samples)."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["greedy", "beam", "sample"] = "greedy"
    n: int = Field(1, ge=1, description="candidates returned per example (k of EM@k / samples of pass@k)")
    num_beams: int = Field(1, ge=1, description="beams for strategy=beam (>= n)")
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(128, ge=1)
    stop: list[str] = Field(default_factory=list, description="cut each generation at the first of these")
    seed: int = 0
    batch_size: int = Field(16, ge=1)
    backend: Literal["hf", "vllm", "auto"] = Field(
        "hf", description="hf: transformers; vllm: vLLM (its own environment); auto: vLLM where installed and usable"
    )

    @model_validator(mode="after")
    def _consistent(self) -> GenerationSettings:
        if self.strategy == "greedy" and self.n != 1:
            raise ValueError("greedy decoding returns one candidate: set n=1 or use strategy beam/sample")
        if self.strategy == "beam" and self.num_beams < self.n:
            raise ValueError(f"beam search returns at most num_beams candidates: set num_beams >= n ({self.n})")
        return self
