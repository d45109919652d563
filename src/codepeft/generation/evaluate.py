"""One arm on one data set: prompts from a prompt method, batched generation, a resumable run directory.

The run directory holds ``config.json`` (everything that decides the output: model identity,
task, split, method and its parameters, generation settings, seed, data checksums),
``environment.json`` (package versions, machine, git commit) and ``generations.jsonl``, appended
batch by batch so a killed run keeps its finished examples and resumes where it stopped.
Scoring is a separate step over this directory (``codepeft score``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from codepeft.data.base import Example, Task, get_task
from codepeft.data.postprocess import cut_at_stop
from codepeft.errors import CodepeftError
from codepeft.generation.backends import BackendChoice, choose_backend
from codepeft.generation.generate import Generated, generate, stop_strings
from codepeft.generation.settings import GenerationSettings
from codepeft.generation.vllm_backend import load_for_backend
from codepeft.methods import MethodParams, get_method
from codepeft.methods.prompting import build_prompts
from codepeft.models import LoadedModel, attach_adapter
from codepeft.provenance import environment
from codepeft.rundir import (
    CONFIG,
    ENVIRONMENT,
    GENERATIONS,
    METRICS,
    RunDir,
    append_generations,
    read_generations,
    read_json,
    write_json,
    write_jsonl,
)

#: Evaluation decodes in fp32 by default: in bf16, batched greedy output differs from batch-of-one
#: output on about half of CoNaLa prompts (see docs/generation.md), so results would depend on the batch size.
DEFAULT_EVAL_DTYPE = "float32"
ProgressCallback = Callable[[int, int], None]


def _request(model_spec: str, task_spec: str, split: str, method: str, params: dict[str, Any],
             settings: GenerationSettings, limit: int | None, adapter: str | None, pool_split: str | None,
             dtype: str, data_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the user asked for: a run directory is resumed only when this is unchanged."""
    generation = settings.model_dump()
    generation.pop("batch_size")  # decides speed only (fp32 batched greedy == batch-of-one)
    if settings.strategy == "greedy":
        generation.pop("backend")  # fp32 greedy output is the same on both (benchmarks/generation.py)
    if settings.strategy == "sample":
        generation["batch_size"] = settings.batch_size  # the seed is applied per batch
    request = {"model": model_spec, "task": task_spec, "split": split, "method": method, "method_params": params,
               "generation": generation, "limit": limit, "adapter": adapter, "pool_split": pool_split, "dtype": dtype}
    if data_options:  # only when given, so runs made before data options existed still resume
        request["data_options"] = data_options
    return request


def _prepare_run_dir(run_dir: Path, request: dict[str, Any], ids: Sequence[str], force: bool) -> set[str]:
    """Ids already generated for this exact request; wipes or refuses a run with another request."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunDir(run_dir)
    generations = run / GENERATIONS
    if not generations.exists():
        return set()
    if run.has(CONFIG):
        changed = RunDir.changed(read_json(run / CONFIG).get("request", {}), request)
    else:
        changed = ["config.json (missing)"]
    if changed and not force:
        raise CodepeftError(
            f"run directory {run_dir} holds a run with a different config ({', '.join(changed)}): "
            "pass --force to overwrite it or choose another --run-dir"
        )
    if changed:
        run.clear(GENERATIONS, METRICS)
        return set()
    loaded = read_generations(generations) if generations.stat().st_size else None
    records = loaded.records if loaded else []
    wanted = set(ids)
    kept = [r for r in records if r["id"] in wanted]
    if loaded is not None and (loaded.truncated or len(kept) != len(records)):
        write_jsonl(generations, kept)  # a killed run's half line must not sit in the middle of the file
    return {r["id"] for r in kept}


def _in_query_order(run_dir: Path, ids: Sequence[str]) -> None:
    """Put the finished file in data-set order (batches finish longest prompt first)."""
    path = run_dir / GENERATIONS
    records = {r["id"]: r for r in read_generations(path).records}
    write_jsonl(path, [records[i] for i in ids if i in records])


def _prompt_method(method: str) -> Any:
    arm = get_method(method)
    if arm.kind != "prompt":
        raise CodepeftError(
            f"method {method!r} trains a model: run `codepeft train --method {method}` and evaluate with --adapter DIR"
        )
    return arm


def _model_labels(model: str | LoadedModel, adapter: str | Path | None, dtype: str) -> tuple[str, str | None, str]:
    """Model spec, adapter and dtype as the run's request records them."""
    if isinstance(model, LoadedModel):  # already loaded: its own spec, adapter and dtype are what ran
        label = str(adapter) if adapter else model.identity.get("adapter")
        return model.identity.get("spec", "?"), label, model.identity.get("dtype", dtype)
    return str(model), str(adapter) if adapter else None, dtype


def _resolve_task(task: str | Task, data_dir: Path | str | None, options: dict[str, Any]) -> tuple[Task, str]:
    if isinstance(task, Task):
        if options:
            raise CodepeftError("data_options apply to a data set given by name: pass them to get_task instead")
        return task, task.name
    return get_task(task, data_dir, **options), task


def evaluate(
    model: str | LoadedModel,
    task: str | Task,
    *,
    split: str = "test",
    method: str = "zero-shot",
    method_params: dict[str, Any] | MethodParams | None = None,
    settings: GenerationSettings | None = None,
    run_dir: Path | str,
    limit: int | None = None,
    adapter: str | Path | None = None,
    data_dir: Path | str | None = None,
    data_options: dict[str, Any] | None = None,
    pool_split: str = "train",
    force: bool = False,
    dtype: str = DEFAULT_EVAL_DTYPE,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Generate for a split of ``task`` (by name: with ``data_options``) with a prompt ``method``; resumable."""
    settings = settings or GenerationSettings()
    run_dir = Path(run_dir).expanduser()
    if limit is not None and limit < 1:
        raise CodepeftError(f"limit must be at least 1 (got {limit}): pass a positive --limit")
    task_obj, task_spec = _resolve_task(task, data_dir, data_options or {})
    task_obj.check_split(split)
    arm = _prompt_method(method)
    params = arm.params(method_params)
    queries = task_obj.load(split)[:limit]
    if not queries:
        raise CodepeftError(f"data set {task_spec!r} split {split!r} has no examples: choose another split")
    ids = [q.id for q in queries]
    zero_shot = method == "zero-shot"
    model_spec, adapter_label, dtype = _model_labels(model, adapter, dtype)
    request = _request(model_spec, task_spec, split, method, params.model_dump(mode="json"), settings, limit,
                       adapter_label, None if zero_shot else pool_split, dtype, data_options)
    done = _prepare_run_dir(run_dir, request, ids, force)
    todo = [q for q in queries if q.id not in done]
    if not todo and (run_dir / CONFIG).exists():
        if progress:
            progress(len(queries), len(queries))
        return run_dir

    loaded, backend = _load_for_run(model, adapter, settings, dtype, threads)
    pool, checksums = _pool_and_checksums(task_obj, task_spec, split, None if zero_shot else pool_split)
    budget = loaded.context_length - settings.max_new_tokens
    if budget < 1:
        raise CodepeftError(
            f"max_new_tokens={settings.max_new_tokens} leaves no room for a prompt in the model's "
            f"{loaded.context_length}-token context: lower --max-new-tokens"
        )
    # Select for every query (not just the missing ones) so a resumed run picks the same demonstrations.
    demonstrations = arm.select(queries, pool, params)
    selected = {q.id: d for q, d in zip(queries, demonstrations, strict=True)}
    prompts = build_prompts(task_obj, todo, [selected[q.id] for q in todo], loaded.tokenizer, loaded.style, budget)

    _write_config(run_dir, request, loaded, backend, settings, budget, checksums, {
        "task": {"name": task_obj.name, "spec": task_spec, "split": split, "examples": len(queries),
                 "options": task_obj.options},
        "method": {"name": method, "kind": arm.kind, "params": params.model_dump(mode="json"),
                   "pool_split": None if zero_shot else pool_split},
    })
    _generate_missing(loaded, task_obj, todo, prompts, settings, run_dir, (len(done), len(queries)), progress,
                      backend)
    _in_query_order(run_dir, ids)
    return run_dir


def _load_for_run(model: str | LoadedModel, adapter: str | Path | None, settings: GenerationSettings,
                  dtype: str, threads: int | None) -> tuple[LoadedModel, Any]:
    """The model (with its adapter) and the generation backend that will run it."""
    if isinstance(model, LoadedModel):
        loaded = model if adapter is None else attach_adapter(model, adapter, merge=False)
        return loaded, choose_backend(settings.backend, loaded.identity, strategy=settings.strategy)
    return load_for_backend(model, settings.backend, dtype=dtype, adapter=adapter, threads=threads,
                            strategy=settings.strategy)


def _write_config(run_dir: Path, request: dict[str, Any], loaded: LoadedModel, backend: Any,
                  settings: GenerationSettings, budget: int, checksums: dict[str, str],
                  task_and_method: dict[str, Any]) -> None:
    """config.json (the full resolved run) and environment.json (versions, machine, seed, backend)."""
    config = {
        "request": request,
        "model": loaded.identity,
        **task_and_method,
        "generation": settings.model_dump(),
        "backend": backend.record(),
        "stops": stop_strings(loaded, settings),
        "prompt_style": loaded.style,
        "max_prompt_tokens": budget,
        "seed": settings.seed,
        "data_checksums": checksums,
    }
    write_json(run_dir / CONFIG, config)
    write_json(run_dir / ENVIRONMENT, {**environment(seed=settings.seed, data_checksums=checksums),
                                       "generation_backend": backend.record()})


def _pool_and_checksums(task: Task, task_spec: str, split: str,
                        pool_split: str | None) -> tuple[list[Example], dict[str, str]]:
    """The demonstration pool (empty for zero-shot) and the checksums of the splits the run reads."""
    checksums = {f"{task_spec}:{split}": task.data_checksum(split)}
    if pool_split is None:
        return [], checksums
    task.check_split(pool_split)
    checksums[f"{task_spec}:{pool_split}"] = task.data_checksum(pool_split)
    return task.load(pool_split), checksums


def _generate_missing(loaded: LoadedModel, task: Task, todo: list[Example], prompts: list[Any],
                      settings: GenerationSettings, run_dir: Path, counts: tuple[int, int],
                      progress: ProgressCallback | None, backend: BackendChoice | None = None) -> None:
    """Generate for ``todo``, appending each finished batch to the run directory (so a kill keeps it)."""
    stops = stop_strings(loaded, settings)
    finished, total = counts
    if progress:
        progress(finished, total)

    def save_batch(indices: list[int], batch: list[Generated]) -> None:
        nonlocal finished
        records = [_record(task, todo[i], prompts[i], g, stops) for i, g in zip(indices, batch, strict=True)]
        append_generations(run_dir, records)
        finished += len(records)
        if progress:
            progress(finished, total)

    generate(loaded, [p.text for p in prompts], settings, on_batch=save_batch, backend=backend)


def _record(task: Task, example: Example, prompt: Any, generated: Generated, stops: Sequence[str]) -> dict[str, Any]:
    return {
        "id": example.id,
        "prompt": prompt.text,
        "candidates": [task.postprocess(cut_at_stop(text, stops)) for text in generated.texts],
        "raw": generated.texts,
        "reference": example.reference,
        "tests": example.tests,
        "prompt_tokens": prompt.tokens,
        "demonstrations": prompt.demonstrations,
        "dropped_demonstrations": prompt.dropped,
        "new_tokens": generated.new_tokens,
        "seconds": round(generated.seconds, 4),
    }

