"""Greedy generation: batch of one vs batched, side by side in one run.

Decodes the first N CoNaLa test prompts with smollm2-135m (chat template, as `codepeft evaluate`
builds them) twice, one prompt at a time and in batches, then prints the tokens/s of each, their
ratio and how many outputs are identical.

    .venv/bin/python benchmarks/generation.py --examples 32 --batch-size 16 --dtype float32
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", help="float32 (evaluation default) or bfloat16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    console = Console()
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
