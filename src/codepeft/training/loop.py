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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codepeft.data import get_task
from codepeft.errors import CodepeftError
from codepeft.home import default_data_dir
from codepeft.methods import MethodParams, get_method
from codepeft.models import load_model
from codepeft.models.adapters import save_adapter
from codepeft.provenance import environment
from codepeft.rundir import CONFIG, RunDir, write_json, writing
from codepeft.training.checkpoints import complete_checkpoints, load_checkpoint, save_checkpoint
from codepeft.training.convergence import convergence
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
from codepeft.training.speedups import apply_speedups, kept_freed_memory, precision

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
    if not any(task.target(e).strip() for e in train):
        raise CodepeftError(f"data set {task.name!r} has no reference code in its train split, and training needs "
                            "it: add the code (or name its field with --data-option code_field=NAME)")
    if task.has_split("validation"):  # else a held-out share of train
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

    def __init__(self, model: str, sources: list[tuple[str, float]], method: str,
                 params: dict[str, Any] | MethodParams | None, output_dir: Path, settings: TrainSettings,
                 data_dir: Path | None,
                 data_options: dict[str, Any] | None = None) -> None:
        self.method = get_method(method)
        if self.method.kind != "train":
            raise CodepeftError(f"method {method!r} is a prompt method, nothing to train: use `codepeft evaluate`")
        self.params = self.method.params(params)
        self.model_spec, self.sources, self.settings = model, sources, settings
        self.output_dir, self.data_dir, self.data_options = Path(output_dir), data_dir, dict(data_options or {})
        self.config = {
            "model": str(model), "data": [list(s) for s in sources], "method": method,
            "params": self.params.model_dump(), "settings": settings.model_dump(exclude={"resume", "force"}),
        }
        if self.data_options:  # only when given, so runs made before data options existed still resume
            self.config["data_options"] = self.data_options


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
    decisive = ("model", "data", "data_options", "method", "params")
    same = {k: previous.get(k) for k in decisive} == {k: run.config.get(k) for k in decisive}
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
    params: dict[str, Any] | MethodParams | None = None,
    output_dir: Path | str = "runs/train",
    settings: TrainSettings | None = None,
    data_dir: Path | str | None = None,
    data_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``method`` on the training splits of ``data`` (mixed by weight) and keep the best adapter.

    Writes ``adapter/`` (lowest validation loss), ``checkpoints/``, ``costs.json``,
    ``train_log.jsonl``, ``config.json`` and ``environment.json`` into ``output_dir``; a killed run
    resumes from its last checkpoint when called again with the same arguments. ``data_options`` are
    task options given to every data set (``get_task(spec, data_dir, **data_options)``).
    """
    settings = settings or TrainSettings()
    sources = [parse_source(s) for s in ([data] if isinstance(data, str) else data)]
    if not sources:
        raise CodepeftError("no data set given: pass --dataset NAME[:WEIGHT]")
    run = _Run(model, sources, method, params, Path(output_dir), settings, Path(data_dir) if data_dir else None,
               data_options)
    return _train(run)


def _history(state: dict[str, Any]) -> list[tuple[int, float]]:
    """The validation losses in step order, the untrained model's (step 0) first."""
    initial = state.get("initial_val_loss")
    return [*([(0, initial)] if initial is not None else []), *[(int(a), float(b)) for a, b in state["val_losses"]]]


def _train(run: _Run) -> TrainResult:
    return _Recipe(run).run()


class _Recipe:
    """One training run as a recipe, read top to bottom in ``run``: set up the model, the data and
    the optimizer, then train step by step, validating every ``eval_every`` steps and saving the best
    adapter and a checkpoint; ``finish`` writes the costs. The speed-ups (``speedups.py``) are applied
    for the run and undone when it ends, however it ends."""

    def __init__(self, run: _Run) -> None:
        import torch
        from accelerate import Accelerator

        self.job, self.settings, self.method = run, run.settings, run.method
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.main = self.accelerator.is_main_process
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        if self.settings.batch_size < self.world:
            raise CodepeftError(
                f"batch_size {self.settings.batch_size} is smaller than the {self.world} processes: raise --batch-size"
            )
        self.out = run.output_dir
        self.step = 0
        self.state: dict[str, Any] = {"epoch": 0, "batch": 0, "best_val_loss": None, "best_step": None,
                                      "bad_evals": 0, "val_losses": []}

    def run(self) -> TrainResult:
        from accelerate.utils import set_seed

        resume = _check_output(self.job) if self.main else True
        self.accelerator.wait_for_everyone()
        set_seed(self.settings.seed)
        with kept_freed_memory(self.settings.keep_freed_memory), contextlib.ExitStack() as undo:
            reset_peak_memory()  # costs.json reports this run's peak, loading the model included
            self.loaded = load_model(self.job.model_spec, dtype=self.settings.dtype,
                                     quantization=self.method.quantization, threads=self.settings.threads)
            self.setup_data()
            self.setup_model(undo)
            self.setup_optimizer()
            if resume:
                self.resume()
            self.write_config()
            stopped_early = self.train_loop()
        return self.finish(stopped_early)

    def setup_data(self) -> None:
        """Tokenised training sets (one per source, mixed by weight) and the pooled validation items."""
        data_dir = self.job.data_dir or default_data_dir()
        self.train_sets: list[list[Tokenized]] = []
        self.val_items: list[Tokenized] = []
        self.checksums: dict[str, str] = {}
        for source, (spec, _) in enumerate(self.job.sources):
            task = get_task(spec, data_dir, **self.job.data_options)
            train_examples, val_examples = _split_examples(task, self.settings)
            length = self.settings.max_length
            self.train_sets.append(tokenize_all(task, train_examples, self.loaded, length, source))
            self.val_items.extend(tokenize_all(task, val_examples, self.loaded, length, source))
            self.checksums[f"{spec}:train"] = task.data_checksum("train")
        if not all(self.train_sets) or not self.val_items:
            raise CodepeftError("no training example has target tokens left within max_length: raise --max-length")
        self.weights = [w for _, w in self.job.sources]
        self.sizes = [len(s) for s in self.train_sets]

    def setup_model(self, undo: contextlib.ExitStack) -> None:
        """The method's trainable model, with the speed-ups applied (undone through ``undo``)."""
        settings, method = self.settings, self.method
        self.causal = self.loaded.kind == "causal"
        self.batching = settings.batching
        if self.batching == "packed" and not (self.causal and method.packs):
            self.batching = "grouped"  # virtual tokens / encoder-decoder: one sequence per row
        model = method.wrap(self.loaded, self.job.params)
        self.compute = precision(settings, method, self.job.params, self.loaded)
        apply_speedups(model, settings, self.batching, self.compute, undo)
        if settings.gradient_checkpointing:
            # transformers 5 renamed it (the old name warns and goes in v6); older models have only the old one
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()
        trainable, total = count_parameters(model)
        self.meter = CostMeter(trainable_parameters=trainable, total_parameters=total)
        model.train()
        self.model = model

    def setup_optimizer(self) -> None:
        """AdamW with linear warm-up and decay over the run's steps; model and optimizer prepared by accelerate."""
        import torch
        from transformers import get_scheduler

        settings, params = self.settings, self.job.params
        steps_per_epoch = max(1, math.ceil(sum(self.sizes) / (settings.batch_size * settings.grad_accum)))
        self.total_steps = max(1, math.ceil(steps_per_epoch * settings.epochs))
        if settings.max_steps:  # the budget is epochs; max_steps only caps it
            self.total_steps = min(self.total_steps, settings.max_steps)
        eval_every = settings.eval_every or max(1, steps_per_epoch // settings.evals_per_epoch)
        self.eval_every = min(eval_every, self.total_steps)
        optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                      lr=params.lr, weight_decay=params.weight_decay)
        self.scheduler = get_scheduler("linear", optimizer,
                                       num_warmup_steps=int(params.warmup_ratio * self.total_steps),
                                       num_training_steps=self.total_steps)
        self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        # Only target positions need vocabulary logits; virtual-token methods shift positions, so they keep
        # the full path.
        self.target_logits = (settings.target_logits and self.causal and self.method.packs
                              and _accepts_logits_mask(self.unwrapped))

    def resume(self) -> None:
        """Continue from the last complete checkpoint, if any: weights, optimizer, position and costs so far."""
        checkpoints = complete_checkpoints(self.out / CHECKPOINTS)
        if not checkpoints:
            return
        self.state = load_checkpoint(checkpoints[-1], self.unwrapped, self.optimizer, self.scheduler)
        self.step = self.state["step"]
        costs = self.state.get("costs", {})
        for key in ("tokens_seen", "target_tokens", "processed_tokens", "attention_pairs", "train_seconds", "steps"):
            setattr(self.meter, key, costs.get(key, 0))
        self.meter.previous_wall_seconds = costs.get("wall_seconds", 0.0)

    def write_config(self) -> None:
        if not self.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with writing(self.out / CONFIG):
            write_json(self.out / CONFIG, {**self.job.config, "base": self.loaded.identity, "batching": self.batching,
                                           "total_steps": self.total_steps, "eval_every": self.eval_every,
                                           "compute": asdict(self.compute), "finished": False})
            write_json(self.out / "environment.json", environment(self.settings.seed, self.checksums))

    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            with writing(self.out / LOG), open(self.out / LOG, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def forward_sum(self, items: list[Tokenized]) -> tuple[Any, int]:
        """Summed loss over the target tokens of ``items`` and their count."""
        import torch
        from peft.helpers import disable_input_dtype_casting

        batch = collate(items, self.batching, self.causal, self.loaded.tokenizer.pad_token_id,
                        self.settings.max_length, self.settings.pack_row_tokens)
        count = sum(item.target_tokens(self.causal) for item in items)
        batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
        self.meter.processed_tokens += processed_tokens(batch)
        with contextlib.ExitStack() as stack:
            if self.compute.autocast_bf16:
                stack.enter_context(torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16))
            if self.compute.bf16_adapters:
                stack.enter_context(disable_input_dtype_casting(self.unwrapped))
            # no cache: transformers keeps packed rows block-diagonal only when no cache is passed
            if self.target_logits:
                return target_loss_sum(self.model, batch), count
            loss = self.model(**batch, use_cache=False).loss
        return loss.float() * count, count

    def shard(self, items: list[Tokenized]) -> list[Tokenized]:
        return items[self.rank :: self.world]

    def validate(self) -> float:
        """Mean loss per target token over the validation items (shortest first, sharded over processes)."""
        import torch

        self.model.eval()
        device = self.accelerator.device
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        order = sorted(range(len(self.val_items)), key=lambda i: self.val_items[i].real_tokens)
        saved = self.meter.processed_tokens
        size = self.settings.batch_size
        with torch.no_grad():
            for start in range(0, len(order), size):
                local = self.shard([self.val_items[i] for i in order[start : start + size]])
                if local:
                    loss_sum, count = self.forward_sum(local)
                    totals += torch.tensor([float(loss_sum), count], dtype=torch.float64, device=device)
        self.meter.processed_tokens = saved
        totals = self.accelerator.reduce(totals, reduction="sum")
        self.model.train()
        return float(totals[0] / max(totals[1], 1))

    def epoch_batches(self, epoch: int) -> list[list[Tokenized]]:
        order = epoch_order(self.sizes, self.weights, self.settings.seed, epoch)
        items = [self.train_sets[s][i] for s, i in order]
        plan = plan_batches(items, self.settings.batch_size, self.batching, self.settings.seed + epoch)
        return [[items[i] for i in b] for b in plan]

    def train_loop(self) -> bool:
        """Steps until ``total_steps`` or early stopping; returns whether it stopped early."""
        if self.step == 0:
            # the untrained baseline every later validation is read against
            self.state["initial_val_loss"] = self.validate()
            self.log({"step": 0, "val_loss": round(self.state["initial_val_loss"], 5), "best": False})
        stopped_early = False
        self.epoch, self.batch_index = self.state["epoch"], self.state["batch"]
        self.batches = self.epoch_batches(self.epoch)
        while self.step < self.total_steps and not stopped_early:
            self.train_step(self.next_micro_batches())
            if self.step % self.eval_every == 0 or self.step == self.total_steps:
                stopped_early = self.validate_and_save()
        return stopped_early

    def next_micro_batches(self) -> list[list[Tokenized]]:
        """The ``grad_accum`` batches of the next optimizer step, starting a new epoch where one runs out."""
        micro: list[list[Tokenized]] = []
        while len(micro) < self.settings.grad_accum:
            if self.batch_index >= len(self.batches):
                self.epoch, self.batch_index = self.epoch + 1, 0
                self.batches = self.epoch_batches(self.epoch)
            micro.append(self.batches[self.batch_index])
            self.batch_index += 1
        return micro

    def train_step(self, micro: list[list[Tokenized]]) -> None:
        """One optimizer step over ``micro``, the loss normalised by the global step's target tokens."""
        import torch

        started = time.perf_counter()
        accelerator, model = self.accelerator, self.model
        global_targets = sum(item.target_tokens(self.causal) for batch in micro for item in batch)
        step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        local_tokens = local_pairs = 0
        for index, batch in enumerate(micro):
            local = self.shard(batch)
            sync = index == len(micro) - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                if local:
                    loss_sum, _ = self.forward_sum(local)
                    local_tokens += sum(item.real_tokens for item in local)
                    local_pairs += sum(item.length * (item.length + 1) // 2 for item in local)
                else:  # this process has no share of a short last batch; DDP still needs its gradients
                    loss_sum = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
                # DDP averages gradients over processes; scaling by world makes it the global-token mean
                accelerator.backward(loss_sum * self.world / max(global_targets, 1))
            step_loss += loss_sum.detach().double()
        if self.settings.max_grad_norm:
            accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], self.settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        counts = torch.tensor([float(local_tokens), float(local_pairs)], dtype=torch.float64, device=step_loss.device)
        reduced = accelerator.reduce(torch.cat([step_loss.reshape(1), counts]), reduction="sum")
        self.account(float(reduced[0]) / max(global_targets, 1), int(reduced[1]), int(reduced[2]), global_targets,
                     time.perf_counter() - started)

    def account(self, train_loss: float, tokens: int, pairs: int, targets: int, seconds: float) -> None:
        """Costs and the log line of a finished step; a non-finite loss ends the run with a one-line error."""
        meter = self.meter
        meter.train_seconds += seconds
        meter.tokens_seen += tokens
        meter.attention_pairs += pairs
        meter.target_tokens += targets
        meter.steps = self.step
        if self.step % self.settings.log_every == 0 or self.step == 1:
            self.log({"step": self.step, "epoch": self.epoch, "loss": round(train_loss, 5),
                      "lr": self.scheduler.get_last_lr()[0], "tokens": meter.tokens_seen,
                      "seconds": round(meter.train_seconds, 2)})
        if not math.isfinite(train_loss):
            raise CodepeftError(
                f"training diverged at step {self.step} (loss {train_loss}): lower the learning rate (lr)"
            )

    def validate_and_save(self) -> bool:
        """Validate; keep the adapter when it improved, and a checkpoint. Returns whether to stop early."""
        state, step = self.state, self.step
        val_loss = self.validate()
        state["val_losses"].append([step, val_loss])
        improved = state["best_val_loss"] is None or val_loss < state["best_val_loss"]
        self.log({"step": step, "val_loss": round(val_loss, 5), "best": improved})
        stop = False
        if improved:
            state.update(best_val_loss=val_loss, best_step=step, bad_evals=0)
            if self.main:
                save_adapter(self.unwrapped, self.loaded, self.method.name, self.job.params.model_dump(),
                             self.out / ADAPTER, {"step": step, "val_loss": val_loss, "data": self.job.config["data"]})
        else:
            state["bad_evals"] += 1
            patience = self.settings.early_stopping_patience
            stop = bool(patience and state["bad_evals"] >= patience)
        state.update(epoch=self.epoch, batch=self.batch_index, costs=self.meter.summary(self.world))
        if self.main:
            save_checkpoint(self.out / CHECKPOINTS, step, self.unwrapped, self.optimizer, self.scheduler, state,
                            self.settings.keep_checkpoints)
        self.accelerator.wait_for_everyone()
        return stop

    def finish(self, stopped_early: bool) -> TrainResult:
        """Write the costs and mark the run finished (after the speed-ups were undone)."""
        state, out = self.state, self.out
        costs = self.meter.summary(self.world)
        if self.main:
            with writing(out / COSTS):
                write_json(out / COSTS, {**costs, "method": self.method.name, "batching": self.batching,
                                         "best_val_loss": state["best_val_loss"], "best_step": state["best_step"],
                                         "initial_val_loss": state.get("initial_val_loss"),
                                         "convergence": convergence(_history(state)).to_dict()})
                config = json.loads((out / CONFIG).read_text())
                write_json(out / CONFIG, {**config, "finished": True, "stopped_early": stopped_early})
        self.accelerator.wait_for_everyone()
        return TrainResult(out, out / ADAPTER, state["best_val_loss"], state["best_step"], self.step, stopped_early,
                           costs, [tuple(v) for v in state["val_losses"]], state.get("initial_val_loss"),
                           self.unwrapped)
