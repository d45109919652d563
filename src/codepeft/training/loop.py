"""``train``: specialise a model to one or more data sets' training splits with any train method.

A plain ``accelerate`` loop rather than ``transformers.Trainer``: packing needs its own batches,
the loss is normalised by the target tokens of the whole global step (so 1 process and N
processes compute the same update), and checkpoints, best-adapter keeping and cost accounting are
a few explicit lines instead of callbacks. Run it under ``torchrun``/``accelerate launch`` and each
process takes its share of every batch (DDP on CPU with gloo, or GPUs; FSDP/DeepSpeed through an
accelerate config).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codepeft.errors import CodepeftError
from codepeft.models.adapters import save_adapter
from codepeft.rundir import CONFIG, RunDir, write_json, writing
from codepeft.training.checkpoints import complete_checkpoints, load_checkpoint, save_checkpoint
from codepeft.training.costs import CostMeter, count_parameters, reset_peak_memory
from codepeft.training.data import (
    IGNORE,
    Tokenized,
    collate,
    epoch_order,
    plan_batches,
    processed_tokens,
    tokenize_all,
)
from codepeft.training.settings import TrainSettings

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
LOG = "train_log.jsonl"
COSTS = "costs.json"


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    best_val_loss: float | None
    best_step: int | None
    steps: int
    stopped_early: bool
    costs: dict[str, Any] = field(default_factory=dict)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    initial_val_loss: float | None = None
    #: the trained model after the last step, in memory (``adapter/`` on disk holds the best one)
    model: Any = field(default=None, repr=False)


def parse_source(spec: str | tuple[str, float]) -> tuple[str, float]:
    """``"conala"``, ``"conala:0.7"``, ``"jsonl:my.jsonl:2"`` or ``("conala", 0.7)`` to (spec, weight)."""
    if isinstance(spec, tuple):
        name, weight = spec
    else:
        name, weight = spec, 1.0
        head, sep, tail = spec.rpartition(":")
        if sep:
            try:
                weight = float(tail)
                name = head
            except ValueError:
                pass
    if not name:
        raise CodepeftError(f"empty data set in {spec!r}: use NAME or NAME:WEIGHT")
    if not (weight > 0 and math.isfinite(weight)):
        raise CodepeftError(f"data set weight must be a positive number (got {weight!r} in {spec!r})")
    return name, float(weight)


def _accepts_logits_mask(model: Any) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers then accepts a boolean position mask)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def target_loss_sum(model: Any, batch: dict[str, Any]) -> Any:
    """Summed next-token loss of a causal batch, the output head applied only at positions whose next label counts.

    The same loss as ``model(labels=...)`` (labels shifted by one, -100 ignored), without the
    vocabulary-wide logits of prompt and padding positions.
    """
    import torch
    import torch.nn.functional as F

    inputs = dict(batch)
    labels = inputs.pop("labels")
    next_labels = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE)], dim=1)
    keep = next_labels != IGNORE
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), next_labels[keep], reduction="sum")


def _split_examples(task: Any, settings: TrainSettings) -> tuple[list[Any], list[Any]]:
    import random

    train = task.load("train")
    if "validation" in task.splits:
        val = task.load("validation")
    else:
        shuffled = list(train)
        random.Random(settings.seed).shuffle(shuffled)
        held = max(1, int(len(shuffled) * settings.val_fraction))
        val, train = shuffled[:held], shuffled[held:]
    if settings.train_limit:
        train = train[: settings.train_limit]
    if settings.val_limit:
        val = val[: settings.val_limit]
    if not train or not val:
        raise CodepeftError(f"data set {task.name!r} has too few examples to train and validate: add data")
    return train, val


class _Run:
    """State of one training run (kept in one place so the loop below reads top to bottom)."""

    def __init__(self, model: str, sources: list[tuple[str, float]], method: str, params: dict[str, Any] | None,
                 output_dir: Path, settings: TrainSettings, data_dir: Path | None) -> None:
        from codepeft.methods import get_method

        self.method = get_method(method)
        if self.method.kind != "train":
            raise CodepeftError(f"method {method!r} is a prompt method, nothing to train: use `codepeft evaluate`")
        self.params = self.method.params(params)
        self.model_spec, self.sources, self.settings = model, sources, settings
        self.output_dir, self.data_dir = Path(output_dir), data_dir
        self.config = {
            "model": str(model), "data": [list(s) for s in sources], "method": method,
            "params": self.params.model_dump(), "settings": settings.model_dump(exclude={"resume", "force"}),
        }


def _check_output(run: _Run) -> bool:
    """Whether to resume; refuses to mix a different run's checkpoints or to overwrite a finished run."""
    out = RunDir(run.output_dir)
    if not out.has(CONFIG):
        return False
    previous = out.read(CONFIG) or {}  # an unreadable config (killed write) is a run with nothing in common
    out.refuse_finished(bool(previous.get("finished")), run.settings.force, "holds a finished training run",
                        "pass --force to retrain or choose another --output")
    if run.settings.force or not run.settings.resume:
        out.clear(CHECKPOINTS, ADAPTER, LOG, COSTS)
        return False
    same = {k: previous.get(k) for k in ("model", "data", "method", "params")} == {
        k: run.config[k] for k in ("model", "data", "method", "params")
    }
    if complete_checkpoints(out / CHECKPOINTS) and not same:
        raise CodepeftError(
            f"{out} holds checkpoints of a different run (model, data, method or params differ): "
            "choose another --output or pass --no-resume to start over"
        )
    return True


def train(
    model: str,
    data: list[str | tuple[str, float]] | str,
    method: str = "lora",
    params: dict[str, Any] | None = None,
    output_dir: Path | str = "runs/train",
    settings: TrainSettings | None = None,
    data_dir: Path | str | None = None,
) -> TrainResult:
    """Train ``method`` on the training splits of ``data`` (mixed by weight) and keep the best adapter.

    Writes ``adapter/`` (lowest validation loss), ``checkpoints/``, ``costs.json``,
    ``train_log.jsonl``, ``config.json`` and ``environment.json`` into ``output_dir``; a killed run
    resumes from its last checkpoint when called again with the same arguments.
    """
    settings = settings or TrainSettings()
    sources = [parse_source(s) for s in ([data] if isinstance(data, str) else data)]
    if not sources:
        raise CodepeftError("no data set given: pass --dataset NAME[:WEIGHT]")
    run = _Run(model, sources, method, params, Path(output_dir), settings, Path(data_dir) if data_dir else None)
    return _train(run)


def _train(run: _Run) -> TrainResult:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from peft.helpers import disable_input_dtype_casting
    from transformers import get_scheduler

    from codepeft.data import get_task
    from codepeft.home import default_data_dir
    from codepeft.models import load_model
    from codepeft.provenance import environment
    from codepeft.training.attention import restore_attention, use_per_example_attention
    from codepeft.training.dropout import use_fast_dropout
    from codepeft.training.fused_lora import restore_lora, use_fused_lora
    from codepeft.training.malloc import keep_freed_memory, release_freed_memory

    settings, method = run.settings, run.method
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    if settings.batch_size < world:
        raise CodepeftError(
            f"batch_size {settings.batch_size} is smaller than the {world} processes: raise --batch-size"
        )
    out = run.output_dir
    resume = _check_output(run) if main else True
    accelerator.wait_for_everyone()
    set_seed(settings.seed)

    if settings.keep_freed_memory:
        keep_freed_memory()
    reset_peak_memory()  # costs.json reports this run's peak, loading the model included
    loaded = load_model(run.model_spec, dtype=settings.dtype, quantization=method.quantization,
                        threads=settings.threads)
    data_dir = run.data_dir or default_data_dir()
    tasks = [get_task(spec, data_dir) for spec, _ in run.sources]
    train_sets: list[list[Tokenized]] = []
    val_items: list[Tokenized] = []
    checksums: dict[str, str] = {}
    for source, task in enumerate(tasks):
        train_examples, val_examples = _split_examples(task, settings)
        train_sets.append(tokenize_all(task, train_examples, loaded, settings.max_length, source))
        val_items.extend(tokenize_all(task, val_examples, loaded, settings.max_length, source))
        checksums[f"{run.sources[source][0]}:train"] = task.data_checksum("train")
    if not all(train_sets) or not val_items:
        raise CodepeftError("no training example has target tokens left within max_length: raise --max-length")

    causal = loaded.kind == "causal"
    batching = settings.batching
    if batching == "packed" and not (causal and method.packs):
        batching = "grouped"  # virtual tokens / encoder-decoder: one sequence per row
    model = method.wrap(loaded, run.params)
    # Full fine-tuning keeps fp32 master weights and computes in bf16 where the base would have been
    # bf16. peft keeps adapter weights in fp32 and casts every adapted layer's input to fp32 and back;
    # for LoRA those casts cost more than the adapter itself on CPU, so (bf16_adapters) the adapters
    # compute in bf16 under autocast, their fp32 weights staying the optimizer's master copy.
    base_dtype = str(loaded.identity.get("dtype"))
    base_bf16 = base_dtype == "bfloat16"
    bf16_adapters = settings.bf16_adapters and base_bf16 and method.bf16_compute
    autocast_bf16 = (method.name == "full" and base_bf16) or bf16_adapters
    if settings.fast_dropout:
        use_fast_dropout(model)
    # fused layers compute the adapter in the base's dtype: what peft does for an fp32 base, and bf16_adapters asks
    same_dtype = bf16_adapters or base_dtype == "float32"
    fused_layers = use_fused_lora(model) if settings.fused_lora and same_dtype else []
    attention_before = None
    if batching == "packed" and settings.packed_attention == "per-example":
        attention_before = use_per_example_attention(model)
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    trainable, total = count_parameters(model)
    model.train()

    weights = [w for _, w in run.sources]
    sizes = [len(s) for s in train_sets]
    steps_per_epoch = max(1, math.ceil(sum(sizes) / (settings.batch_size * settings.grad_accum)))
    total_steps = settings.max_steps or max(1, math.ceil(steps_per_epoch * settings.epochs))
    eval_every = settings.eval_every or max(1, steps_per_epoch // settings.evals_per_epoch)
    eval_every = min(eval_every, total_steps)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=run.params.lr, weight_decay=run.params.weight_decay)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(run.params.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    # Only target positions need vocabulary logits; virtual-token methods shift positions, so they keep the full path.
    target_logits = settings.target_logits and causal and method.packs and _accepts_logits_mask(unwrapped)

    meter = CostMeter(trainable_parameters=trainable, total_parameters=total)
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "best_val_loss": None, "best_step": None, "bad_evals": 0,
                             "val_losses": []}
    step = 0
    if resume and (checkpoints := complete_checkpoints(out / CHECKPOINTS)):
        state = load_checkpoint(checkpoints[-1], unwrapped, optimizer, scheduler)
        step = state["step"]
        for key in ("tokens_seen", "target_tokens", "processed_tokens", "attention_pairs", "train_seconds", "steps"):
            setattr(meter, key, state.get("costs", {}).get(key, 0))
        meter.previous_wall_seconds = state.get("costs", {}).get("wall_seconds", 0.0)

    if main:
        out.mkdir(parents=True, exist_ok=True)
        with writing(out / "config.json"):

            write_json(out / "config.json", {**run.config, "base": loaded.identity, "batching": batching,
                                             "total_steps": total_steps, "eval_every": eval_every,
                                             "finished": False})
            write_json(out / "environment.json", environment(settings.seed, checksums))

    def log(record: dict[str, Any]) -> None:
        if main:
            with writing(out / LOG), open(out / LOG, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def forward_sum(items: list[Tokenized]) -> tuple[Any, int]:
        """Summed loss over the target tokens of ``items`` and their count."""
        batch = collate(items, batching, causal, loaded.tokenizer.pad_token_id, settings.max_length,
                        settings.pack_row_tokens)
        count = sum(item.target_tokens(causal) for item in items)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        meter.processed_tokens += processed_tokens(batch)
        with contextlib.ExitStack() as stack:
            if autocast_bf16:
                stack.enter_context(torch.autocast(accelerator.device.type, dtype=torch.bfloat16))
            if bf16_adapters:
                stack.enter_context(disable_input_dtype_casting(unwrapped))
            # no cache: transformers keeps packed rows block-diagonal only when no cache is passed
            if target_logits:
                return target_loss_sum(model, batch), count
            loss = model(**batch, use_cache=False).loss
        return loss.float() * count, count

    def shard(items: list[Tokenized]) -> list[Tokenized]:
        return items[rank::world]

    def validate() -> float:
        model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        order = sorted(range(len(val_items)), key=lambda i: val_items[i].real_tokens)
        saved = meter.processed_tokens
        with torch.no_grad():
            for start in range(0, len(order), settings.batch_size):
                local = shard([val_items[i] for i in order[start : start + settings.batch_size]])
                if local:
                    loss_sum, count = forward_sum(local)
                    totals += torch.tensor([float(loss_sum), count], dtype=torch.float64, device=accelerator.device)
        meter.processed_tokens = saved
        totals = accelerator.reduce(totals, reduction="sum")
        model.train()
        return float(totals[0] / max(totals[1], 1))

    def epoch_items(epoch: int) -> list[list[Tokenized]]:
        order = epoch_order(sizes, weights, settings.seed, epoch)
        items = [train_sets[s][i] for s, i in order]
        return [[items[i] for i in b] for b in plan_batches(items, settings.batch_size, batching,
                                                             settings.seed + epoch)]

    if step == 0:
        state["initial_val_loss"] = validate()  # the untrained baseline every later validation is read against
        log({"step": 0, "val_loss": round(state["initial_val_loss"], 5), "best": False})
    stopped_early = False
    epoch, batch_index = state["epoch"], state["batch"]
    batches = epoch_items(epoch)
    while step < total_steps and not stopped_early:
        started = time.perf_counter()
        micro: list[list[Tokenized]] = []
        while len(micro) < settings.grad_accum:
            if batch_index >= len(batches):
                epoch, batch_index = epoch + 1, 0
                batches = epoch_items(epoch)
            micro.append(batches[batch_index])
            batch_index += 1
        global_targets = sum(item.target_tokens(causal) for batch in micro for item in batch)
        step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        local_tokens = local_pairs = 0
        for index, batch in enumerate(micro):
            local = shard(batch)
            sync = index == len(micro) - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                if local:
                    loss_sum, _ = forward_sum(local)
                    local_tokens += sum(item.real_tokens for item in local)
                    local_pairs += sum(item.length * (item.length + 1) // 2 for item in local)
                else:  # this process has no share of a short last batch; DDP still needs its gradients
                    loss_sum = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
                # DDP averages gradients over processes; scaling by world makes it the global-token mean
                accelerator.backward(loss_sum * world / max(global_targets, 1))
            step_loss += loss_sum.detach().double()
        if settings.max_grad_norm:
            accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        reduced = accelerator.reduce(
            torch.stack([step_loss, torch.tensor(float(local_tokens), dtype=torch.float64, device=step_loss.device),
                         torch.tensor(float(local_pairs), dtype=torch.float64, device=step_loss.device)]),
            reduction="sum")
        train_loss = float(reduced[0]) / max(global_targets, 1)
        meter.train_seconds += time.perf_counter() - started
        meter.tokens_seen += int(reduced[1])
        meter.attention_pairs += int(reduced[2])
        meter.target_tokens += global_targets
        meter.steps = step
        if step % settings.log_every == 0 or step == 1:
            log({"step": step, "epoch": epoch, "loss": round(train_loss, 5), "lr": scheduler.get_last_lr()[0],
                 "tokens": meter.tokens_seen, "seconds": round(meter.train_seconds, 2)})
        if not math.isfinite(train_loss):
            raise CodepeftError(f"training diverged at step {step} (loss {train_loss}): lower the learning rate (lr)")

        if step % eval_every == 0 or step == total_steps:
            val_loss = validate()
            state["val_losses"].append([step, val_loss])
            improved = state["best_val_loss"] is None or val_loss < state["best_val_loss"]
            log({"step": step, "val_loss": round(val_loss, 5), "best": improved})
            if improved:
                state.update(best_val_loss=val_loss, best_step=step, bad_evals=0)
                if main:
                    save_adapter(unwrapped, loaded, method.name, run.params.model_dump(), out / ADAPTER,
                                 {"step": step, "val_loss": val_loss, "data": run.config["data"]})
            else:
                state["bad_evals"] += 1
                patience = settings.early_stopping_patience
                stopped_early = bool(patience and state["bad_evals"] >= patience)
            state.update(epoch=epoch, batch=batch_index, costs=meter.summary(world))
            if main:
                save_checkpoint(out / CHECKPOINTS, step, unwrapped, optimizer, scheduler, state,
                                settings.keep_checkpoints)
            accelerator.wait_for_everyone()

    restore_attention(unwrapped, attention_before)
    restore_lora(fused_layers)
    if settings.keep_freed_memory:
        release_freed_memory()
    costs = meter.summary(world)
    if main:

        with writing(out / COSTS):
            write_json(out / COSTS, {**costs, "method": method.name, "batching": batching,
                                     "best_val_loss": state["best_val_loss"], "best_step": state["best_step"],
                                     "initial_val_loss": state.get("initial_val_loss")})
            config = json.loads((out / "config.json").read_text())
            write_json(out / "config.json", {**config, "finished": True, "stopped_early": stopped_early})
    accelerator.wait_for_everyone()
    return TrainResult(out, out / ADAPTER, state["best_val_loss"], state["best_step"], step, stopped_early, costs,
                       [tuple(v) for v in state["val_losses"]], state.get("initial_val_loss"), unwrapped)
