"""``codepeft evaluate``: generate with one prompt arm on one data set into a run directory, print EM@k."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from codepeft.cli.app import app, console, out
from codepeft.cli.data import DataOptions, parse_options, reject_data_options_as_params
from codepeft.errors import CodepeftError, validation_message


def parse_params(pairs: list[str] | None) -> dict[str, object]:
    """``k=v`` pairs to a dict; values are read as JSON when they parse (numbers, booleans, lists), else text."""
    params: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CodepeftError(f"--param {pair!r} is not KEY=VALUE: write it like --param k=4")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def build_settings(**fields: object) -> object:
    from codepeft.generation.settings import GenerationSettings

    try:
        return GenerationSettings(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        message = validation_message(err, default_where="settings", plain=True)
        raise CodepeftError(f"generation settings: {message}") from None


def default_run_dir(model: str, dataset: str, method: str) -> Path:
    safe = "-".join(Path(part).name.replace(":", "_") or "x" for part in (model, dataset, method))
    return Path("runs") / safe


@app.command()
def evaluate(
    model: Annotated[str, typer.Option("--model", "-m", help="smollm2-135m, a model directory, .gguf or hub id")] =
    "smollm2-135m",
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="data set name (see `codepeft datasets`)")] =
    "conala",
    split: Annotated[str, typer.Option(help="split to evaluate on")] = "test",
    limit: Annotated[int | None, typer.Option(help="only the first N examples")] = None,
    method: Annotated[str, typer.Option(help="prompt method: zero-shot, icl, rag")] = "zero-shot",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="method parameter KEY=VALUE")] = None,
    pool_split: Annotated[str, typer.Option(help="split demonstrations come from (icl, rag)")] = "train",
    strategy: Annotated[Literal["greedy", "beam", "sample"], typer.Option(help="decoding strategy")] = "greedy",
    n: Annotated[int, typer.Option("--n", help="candidates per example (beam/sample)")] = 1,
    num_beams: Annotated[int | None, typer.Option(help="beams for --strategy beam (default: n)")] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.8,
    top_p: Annotated[float, typer.Option(help="nucleus sampling threshold")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="tokens generated at most per candidate")] = 128,
    stop: Annotated[list[str] | None, typer.Option(help="extra stop string (repeatable)")] = None,
    batch_size: Annotated[int, typer.Option(help="prompts decoded together")] = 16,
    backend: Annotated[Literal["hf", "vllm", "auto"], typer.Option(
        help="hf: transformers; vllm: vLLM (CODEPEFT_VLLM=1 scripts/setup); auto: vLLM where installed and usable")] =
    "hf",
    seed: Annotated[int, typer.Option(help="seed for sampling and demonstration draws")] = 0,
    dtype: Annotated[str, typer.Option(help="float32 (default: batch-size independent), bfloat16, auto")] =
    "float32",
    threads: Annotated[int | None, typer.Option(help="torch threads (default: all CPUs available)")] = None,
    adapter: Annotated[Path | None, typer.Option(help="trained adapter/ directory to attach")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="directory holding the data sets")] = None,
    data_option: DataOptions = None,
    run_dir: Annotated[Path | None, typer.Option(help="output run directory (default runs/MODEL-DATASET-METHOD)")] =
    None,
    force: Annotated[bool, typer.Option(help="overwrite a run directory that holds a different run")] = False,
) -> None:
    """Generate for a data set with one prompt arm, save a resumable run directory, print EM@k.

    Example: codepeft evaluate --model smollm2-135m --dataset conala --limit 20
    """
    from codepeft.generation.evaluate import evaluate as run_evaluate
    from codepeft.home import default_data_dir
    from codepeft.metrics import run_summary

    params, data_options = parse_params(param), parse_options(data_option)
    reject_data_options_as_params(params, method, [dataset])
    if strategy == "beam" and num_beams is None:
        num_beams = n
    settings = build_settings(strategy=strategy, n=n, num_beams=num_beams, temperature=temperature, top_p=top_p,
                              max_new_tokens=max_new_tokens, stop=stop or [], batch_size=batch_size, seed=seed,
                              backend=backend)
    target = run_dir or default_run_dir(model, dataset, method)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        job = bar.add_task(f"{dataset} / {method}: loading", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total, description=f"{dataset} / {method}: generating")

        path = run_evaluate(model, dataset, split=split, method=method, method_params=params,
                            settings=settings, run_dir=target, limit=limit, adapter=adapter,
                            data_dir=data_dir or default_data_dir(), data_options=data_options, pool_split=pool_split,
                            force=force, dtype=dtype, threads=threads, progress=on_progress)
    summary = run_summary(path, ks=[k for k in (1, 2, 5, 10) if k <= n])
    scores = "  ".join(f"{k.upper()} {v:.1f}%" for k, v in summary.items() if k.startswith("em@"))
    if not summary["with_reference"]:
        scores = "(no reference code: score pass@k with codepeft score)"
    elif summary["with_reference"] < summary["n"]:
        scores += f" (over the {summary['with_reference']} with reference code)"
    out.print(f"{summary['n']} examples  {scores}")
    out.print(f"run directory: {path}  (full scores: codepeft score {path})")
