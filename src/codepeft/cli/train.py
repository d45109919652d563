"""``codepeft train``, ``codepeft merge`` and ``codepeft methods``: train an adapter, fold it in, list the arms."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from pydantic import ValidationError
from rich.table import Table

from codepeft.cli.app import app, console, out
from codepeft.cli.data import DataOptions, parse_options, reject_data_options_as_params
from codepeft.cli.evaluate import parse_params
from codepeft.errors import CodepeftError, validation_message

#: documented short flags of TrainSettings fields (docs/training.md)
SHORT_FLAGS = {"early_stopping_patience": "--patience"}
#: settings the command declares itself: their defaults are not None (``--resume`` is on unless ``--no-resume``)
DECLARED = {"resume", "force"}


def build_train_settings(**fields: object) -> object:
    from codepeft.training.settings import TrainSettings

    try:
        return TrainSettings(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        raise CodepeftError(f"training settings: {validation_message(err, flags=True, default_where='settings')}") \
            from None


def _option_type(annotation: Any) -> type:
    """int/float/bool as themselves; anything else (Literal, str) is read as text and checked by pydantic."""
    kinds = [arg for arg in (get_args(annotation) or (annotation,)) if arg is not type(None)]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (int, float, bool) else str


def settings_options() -> list[inspect.Parameter]:
    """One ``--flag`` per ``TrainSettings`` field (help: its description), so a new field needs no CLI edit.

    Every default is None: only the flags given reach ``TrainSettings``, whose defaults fill the rest.
    """
    from codepeft.training.settings import TrainSettings

    options = []
    for name, field in TrainSettings.model_fields.items():
        if name in DECLARED:
            continue
        kind, flag = _option_type(field.annotation), "--" + name.replace("_", "-")
        flags = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag, *filter(None, [SHORT_FLAGS.get(name)])]
        option = typer.Option(*flags, help=field.description or name.replace("_", " "),
                              rich_help_panel="Training settings")
        options.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                         annotation=Annotated[kind | None, option]))
    return options


def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="run directory (adapter/, checkpoints/, costs.json)")],
    model: Annotated[str, typer.Option("--model", "-m", help="smollm2-135m, a model directory, .gguf or hub id")] =
    "smollm2-135m",
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", "-d", help="data set NAME or NAME:WEIGHT (repeat to train on several, mixed by weight)")] = None,
    method: Annotated[str, typer.Option(help="train method (see `codepeft methods`)")] = "lora",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="method hyperparameter KEY=VALUE")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in --output")] = True,
    force: Annotated[bool, typer.Option(help="retrain over a finished run in --output")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="local data sets (default $CODEPEFT_DATA_DIR)")] = None,
    data_option: DataOptions = None,
    setting: Annotated[list[str] | None, typer.Option(
        "--set", help="any training setting KEY=VALUE, e.g. pack_row_tokens=256, packed_attention=masked, "
        "fast_dropout=false (see TrainSettings)")] = None,
    **options: Any,
) -> None:
    """Train an adapter (or the full model) on data sets' training splits; keeps the best by validation loss."""
    from codepeft.training import train as run_training
    from codepeft.training.convergence import convergence

    named = {**options, "resume": resume, "force": force or None}
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


# typer reads the signature: the declared parameters, then one option per TrainSettings field
_declared = [p for p in inspect.signature(train, eval_str=True).parameters.values()
             if p.kind is not inspect.Parameter.VAR_KEYWORD]
train.__signature__ = inspect.Signature([*_declared, *settings_options()])  # type: ignore[attr-defined]
app.command()(train)


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
