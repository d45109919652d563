"""Greedy generation side by side in one run: batch of one vs batched, or transformers vs vLLM.

Decodes the first N CoNaLa test prompts with smollm2-135m (chat template, as `codepeft evaluate`
builds them) twice, one prompt at a time and in batches, then prints the tokens/s of each, their
ratio and how many outputs are identical.

    .venv/bin/python benchmarks/generation.py --examples 32 --batch-size 16 --dtype float32

With ``--backends hf,vllm`` it decodes the same prompts on transformers (batched, as `codepeft
evaluate` does) and on vLLM (the `.venv-vllm` environment), and prints each engine's startup,
decoding tokens/s, end-to-end seconds and how many raw outputs are identical (``--examples 0``:
the whole test split).

    .venv/bin/python benchmarks/generation.py --backends hf,vllm --examples 0 --batch-size 16

``--parallel`` runs the engines at the same time (one thread each; with ``--threads 1`` each uses
one core), so on a machine shared with other jobs both see the same load.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from codepeft.data import get_task
from codepeft.generation import GenerationSettings, generate
from codepeft.home import default_data_dir
from codepeft.methods.prompting import build_prompts
from codepeft.models import load_model


def run(loaded, prompts: list[str], settings: GenerationSettings) -> tuple[list, float]:
    began = time.perf_counter()
    results = generate(loaded, prompts, settings)
    return results, time.perf_counter() - began


def run_backend(backend: str, loaded, prompts: list[str], settings: GenerationSettings,
                hf_startup: float) -> tuple[tuple[str, float, float, int], list]:
    """(label, startup s, decode s, new tokens) and the results of one engine."""
    from codepeft.generation.backends import choose_backend
    from codepeft.generation.vllm_backend import generate_vllm

    if backend == "hf":
        results, seconds = run(loaded, prompts, settings)
        startup = hf_startup
    else:
        choice = choose_backend("vllm", loaded.identity)
        began = time.perf_counter()
        results = generate_vllm(loaded, prompts, settings, choice)
        wall = time.perf_counter() - began
        seconds = sum(g.seconds for g in results)  # the engine's generate calls
        startup = wall - seconds  # process start, imports, engine start, transfers
        backend = f"vllm {choice.vllm_version}"
    return (backend, startup, seconds, sum(g.new_tokens[0] for g in results)), results


def compare_backends(args: argparse.Namespace, console: Console) -> None:
    """Transformers vs vLLM on the same prompts: startup, tokens/s, end to end, identical outputs."""
    began = time.perf_counter()
    loaded = load_model(args.model, dtype=args.dtype, threads=args.threads)
    hf_startup = time.perf_counter() - began
    task = get_task("conala", args.data_dir or default_data_dir())
    queries = task.load("test")
    queries = queries[: args.examples] if args.examples else queries
    built = build_prompts(task, queries, [[] for _ in queries], loaded.tokenizer, loaded.style, None)
    prompts = [b.text for b in built]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    backends = args.backends.split(",")
    if args.parallel:
        # Both engines at once, one thread each: on a shared machine they then see the same load.
        import copy
        from concurrent.futures import ThreadPoolExecutor, as_completed
        from dataclasses import replace

        # a fast tokenizer used from two threads at once can fail ("Already borrowed"): one copy each
        copies = [replace(loaded, tokenizer=copy.deepcopy(loaded.tokenizer)) for _ in backends]
        with ThreadPoolExecutor(len(backends)) as pool:
            futures = [pool.submit(run_backend, backend, model, prompts, settings, hf_startup)
                       for backend, model in zip(backends, copies, strict=True)]
            for future in as_completed(futures):  # each engine's figures as soon as it finishes
                (label, startup, seconds, tokens), _ = future.result()
                console.print(f"finished: {label}: startup {startup:.1f} s, decode {seconds:.1f} s, {tokens} tokens, "
                              f"{tokens / seconds:.1f} tokens/s, end to end {startup + seconds:.1f} s")
            done = [f.result() for f in futures]
    else:
        done = [run_backend(b, loaded, prompts, settings, hf_startup) for b in backends]
    rows = [row for row, _ in done]
    outputs = {row[0]: results for row, results in done}
    table = Table(title=f"greedy, {len(prompts)} CoNaLa test prompts, {args.model}, {loaded.identity['dtype']}, "
                        f"max_new_tokens={args.max_new_tokens}, batch {args.batch_size}")
    for column in ("backend", "startup s", "decode s", "new tokens", "tokens/s", "end to end s"):
        table.add_column(column, justify="right")
    for backend, startup, seconds, tokens in rows:
        table.add_row(backend, f"{startup:.1f}", f"{seconds:.1f}", str(tokens), f"{tokens / seconds:.1f}",
                      f"{startup + seconds:.1f}")
    console.print(table)
    if len(rows) == 2:
        (a, a_start, a_sec, a_tok), (b, b_start, b_sec, b_tok) = rows
        console.print(f"{b} / {a}: tokens/s {(b_tok / b_sec) / (a_tok / a_sec):.2f}x, "
                      f"end to end {(b_start + b_sec) / (a_start + a_sec):.2f} of the time")
        first, second = outputs[a], outputs[b]
        same = sum(x.texts == y.texts for x, y in zip(first, second, strict=True))
        console.print(f"identical raw outputs: {same}/{len(prompts)}")
        for query, x, y in zip(queries, first, second, strict=True):
            if x.texts != y.texts:
                console.print(f"  differs: {query.id}: {x.texts[0][:60]!r} vs {y.texts[0][:60]!r}", highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--examples", type=int, default=32, help="first N test prompts (0: all, --backends only)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", help="float32 (evaluation default) or bfloat16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--backends", default=None, help="e.g. hf,vllm: compare engines instead of batch sizes")
    parser.add_argument("--parallel", action="store_true", help="run the --backends at the same time (shared machine)")
    args = parser.parse_args()

    console = Console()
    if args.backends:
        compare_backends(args, console)
        return
    loaded = load_model(args.model, dtype=args.dtype, threads=args.threads)
    task = get_task("conala", args.data_dir or default_data_dir())
    queries = task.load("test")[: args.examples]
    built = build_prompts(task, queries, [[] for _ in queries], loaded.tokenizer, loaded.style, None)
    prompts = [b.text for b in built]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    generate(loaded, prompts[:2], settings.model_copy(update={"max_new_tokens": 4}))  # warm-up
    one, one_seconds = run(loaded, prompts, settings.model_copy(update={"batch_size": 1}))
    batched, batched_seconds = run(loaded, prompts, settings)

    one_tokens = sum(g.new_tokens[0] for g in one)
    batched_tokens = sum(g.new_tokens[0] for g in batched)
    identical = sum(a.texts == b.texts for a, b in zip(one, batched, strict=True))
    table = Table(title=f"greedy, {len(prompts)} CoNaLa test prompts, {args.model}, {loaded.identity['dtype']}, "
                        f"{loaded.identity['threads']} threads, max_new_tokens={args.max_new_tokens}")
    for column in ("mode", "seconds", "new tokens", "tokens/s"):
        table.add_column(column, justify="right")
    table.add_row("batch of one", f"{one_seconds:.1f}", str(one_tokens), f"{one_tokens / one_seconds:.1f}")
    table.add_row(f"batch of {args.batch_size}", f"{batched_seconds:.1f}", str(batched_tokens),
                  f"{batched_tokens / batched_seconds:.1f}")
    console.print(table)
    ratio = (batched_tokens / batched_seconds) / (one_tokens / one_seconds)
    console.print(f"speed-up (tokens/s ratio): {ratio:.2f}x")
    console.print(f"identical outputs: {identical}/{len(prompts)}")
    for index, (a, b) in enumerate(zip(one, batched, strict=True)):
        if a.texts != b.texts:
            console.print(f"  differs: #{index} {queries[index].id}", highlight=False)


if __name__ == "__main__":
    main()
