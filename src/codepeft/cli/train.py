"""``codepeft train``, ``codepeft merge`` and ``codepeft methods``: train an adapter, fold it in, list the arms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from codepeft.cli.app import app, console, out
from codepeft.cli.data import DataOptions, parse_options, reject_data_options_as_params
from codepeft.cli.evaluate import parse_params
from codepeft.errors import CodepeftError, validation_message


def build_train_settings(**fields: object) -> object:
    from codepeft.training.settings import TrainSettings

    try:
        return TrainSettings(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        raise CodepeftError(f"training settings: {validation_message(err, flags=True, default_where='settings')}") \
            from None


@app.command()
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="run directory (adapter/, checkpoints/, costs.json)")],
    model: Annotated[str, typer.Option("--model", "-m", help="smollm2-135m, a model directory, .gguf or hub id")] =
    "smollm2-135m",
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", "-d", help="data set NAME or NAME:WEIGHT (repeat to train on several, mixed by weight)")] = None,
    method: Annotated[str, typer.Option(help="train method (see `codepeft methods`)")] = "lora",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="method hyperparameter KEY=VALUE")] = None,
    epochs: Annotated[float | None, typer.Option(help="the budget: passes over the training data (default 1)")] = None,
    max_steps: Annotated[int | None, typer.Option(help="cap on optimizer steps (the budget is --epochs)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="examples per micro-step, all processes together")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="micro-steps per optimizer step")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per example (prompt + target)")] = None,
    batching: Annotated[str | None, typer.Option(help="packed | grouped | dynamic | fixed")] = None,
    eval_every: Annotated[int | None, typer.Option(help="steps between validations (default 4 per epoch)")] = None,
    patience: Annotated[int | None, typer.Option(help="early stopping: validations without improvement")] = None,
    train_limit: Annotated[int | None, typer.Option(help="first N training examples per data set")] = None,
    val_limit: Annotated[int | None, typer.Option(help="validation examples per data set")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(help="trade compute for memory")] = False,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in --output")] = True,
    force: Annotated[bool, typer.Option(help="retrain over a finished run in --output")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="local data sets (default $CODEPEFT_DATA_DIR)")] = None,
    data_option: DataOptions = None,
    setting: Annotated[list[str] | None, typer.Option(
        "--set", help="any other training setting KEY=VALUE, e.g. pack_row_tokens=256, packed_attention=masked, "
        "fast_dropout=false (see TrainSettings)")] = None,
) -> None:
    """Train an adapter (or the full model) on data sets' training splits; keeps the best by validation loss."""
    from codepeft.training import train as run_training
    from codepeft.training.convergence import convergence

    named = dict(
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
        batching=batching, eval_every=eval_every, early_stopping_patience=patience, train_limit=train_limit,
        val_limit=val_limit, seed=seed, dtype=dtype, threads=threads,
        gradient_checkpointing=gradient_checkpointing or None, resume=resume, force=force or None,
    )
    for key, value in parse_params(setting).items():
        if named.get(key) is not None:
            raise CodepeftError(f"--set {key}= repeats an option given already: give it once")
        named[key] = value
    settings = build_train_settings(**named)
    params, datasets = parse_params(param), dataset or ["conala"]
    reject_data_options_as_params(params, method, datasets)
    result = run_training(model, datasets, method, params, output, settings, data_dir,
                          data_options=parse_options(data_option))
    costs = result.costs
    console.print(
        f"trained {result.steps} steps: best validation loss {result.best_val_loss:.4f} at step {result.best_step} "
        f"(initial {result.initial_val_loss:.4f}); {costs['trainable_parameters']:,} trainable parameters, "
        f"{costs['tokens_per_second']} tokens/s"
    )
    verdict = convergence(result.val_losses if result.initial_val_loss is None
                          else [(0, result.initial_val_loss), *result.val_losses])
    console.print(("converged: " if verdict.converged else "[yellow]not converged[/]: ") + verdict.reason)
    out.print(str(result.adapter_dir))


@app.command()
def merge(
    adapter: Annotated[Path, typer.Argument(help="adapter/ directory written by `codepeft train`")],
    output: Annotated[Path, typer.Option("--output", "-o", help="directory for the merged model")],
    base: Annotated[str | None, typer.Option(help="base model (default: the one the adapter was trained on)")] = None,
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16")] = "auto",
) -> None:
    """Fold an adapter into its base model's weights and save the merged model (loads like any model)."""
    from codepeft.models import merge_adapter

    out.print(str(merge_adapter(adapter, output, base=base, dtype=dtype)))


@app.command()
def methods(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Every registered method (prompt and train) with its kind and default hyperparameters."""
    from codepeft.methods import all_methods

    rows = []
    for name, method in sorted(all_methods().items(), key=lambda item: (item[1].kind, item[0])):
        defaults = method.params().model_dump()
        rows.append({"name": name, "kind": method.kind, "description": method.description, "defaults": defaults})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("method", "kind", "defaults", "description")
    for row in rows:
        defaults = ", ".join(f"{k}={v}" for k, v in row["defaults"].items())
        table.add_row(row["name"], row["kind"], defaults, row["description"])
    out.print(table)
