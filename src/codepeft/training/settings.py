"""``TrainSettings``: everything about a training run that is not the method's hyperparameters."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Batching = Literal["packed", "grouped", "dynamic", "fixed"]


class TrainSettings(BaseModel):
    """How to train. ``batch_size`` counts examples per micro-step over all processes together, so the
    same settings give the same optimisation on 1 or N processes (each takes its share of a batch)."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(1.0, gt=0, description="the budget: passes over the training data (early stopping may end "
                          "it sooner)")
    max_steps: int | None = Field(None, gt=0, description="cap on optimizer steps (the run ends at the budget in "
                                  "epochs or here, whichever comes first)")
    batch_size: int = Field(8, ge=1, description="examples per micro-step, over all processes")
    grad_accum: int = Field(1, ge=1, description="micro-steps per optimizer step")
    max_length: int = Field(512, ge=8, description="tokens per example, prompt plus target (longer are cut)")
    batching: Batching = Field(
        "packed",
        description="packed: examples of a batch concatenated in one row, attention kept per example "
        "(causal models, methods without virtual tokens; otherwise grouped); grouped: similar lengths "
        "batched together, dynamic padding; dynamic: random order, padding to the longest in the batch; "
        "fixed: every example padded to max_length (the reference study's way)",
    )
    pack_row_tokens: int | None = Field(
        None,
        ge=8,
        description="packed batching: token budget per packed row; the examples of a batch are spread over rows "
        "(first-fit decreasing) and rows padded to the longest, so attention scores stay small (an example "
        "longer than this gets a row of its own); None (default): one row per batch, which measured faster "
        "on CPU (benchmarks/results/training.md, run 4)",
    )
    packed_attention: Literal["per-example", "masked"] = Field(
        "per-example",
        description="packed batching: per-example computes attention within each example only (sum of L_i^2 scores); "
        "masked is transformers' block-diagonal mask over the whole row (T^2 scores)",
    )
    eval_every: int | None = Field(None, gt=0, description="optimizer steps between validations (default: 4 per epoch)")
    evals_per_epoch: int = Field(4, ge=1, description="validations per epoch when eval_every is not set")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many validations without improvement"
    )
    seed: int = Field(0, description="random seed (data order, dropout, initialisation)")
    train_limit: int | None = Field(None, ge=1, description="use only the first N training examples of each data set")
    val_limit: int | None = Field(200, ge=1, description="validation examples per data set (None: all)")
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of the training split held out when a data set has no validation split"
    )
    dtype: str = Field("auto", description="base weights: auto (bf16 where the CPU/GPU has it), float32, bfloat16")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: every CPU this process may use)")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping norm (None: no clipping)")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: trade compute for memory"
    )
    bf16_adapters: bool = Field(
        True,
        description="compute LoRA adapters in bf16 (autocast; the fp32 adapter weights stay the optimizer's master "
        "copy) when the base is bf16, so activations are not cast to fp32 and back in every adapted layer",
    )
    fast_dropout: bool = Field(
        True,
        description="adapter dropout from cheap random bits (probability rounded to 1/65536) instead of nn.Dropout's "
        "per-element Bernoulli draws",
    )
    fused_lora: bool = Field(
        True,
        description="LoRA and DoRA layers computing in the base's dtype run base product, adapter and dropout as one "
        "autograd function (scalings folded into the up-projection, dropout drawn as dropped positions with "
        "exactly probability p; DoRA's weight norm from cached ||W||^2 and rank-r terms); quantized bases and "
        "fp32 adapters on a bf16 base keep peft's forward",
    )
    target_logits: bool = Field(
        True,
        description="causal models: project only the positions the loss covers through the output head "
        "(prompt and padding positions need no vocabulary logits); the loss is unchanged",
    )
    keep_freed_memory: bool = Field(
        True,
        description="glibc: keep freed memory in the process for reuse (no fresh mmap and page faults per "
        "activation every step); process-wide, the peak memory is unchanged",
    )
    keep_checkpoints: int = Field(2, ge=1, description="most recent checkpoints kept for resuming")
    log_every: int = Field(10, ge=1, description="optimizer steps between training-loss lines in train_log.jsonl")
    resume: bool = Field(True, description="continue from the last checkpoint in the output directory")
    force: bool = Field(False, description="retrain over a finished run in the output directory")
