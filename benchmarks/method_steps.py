"""Training steps of several train methods in one process, alternating: step-time ratios that survive a shared machine.

``benchmarks/training.py`` runs each arm in its own process, one after the other, so on a machine
shared with other jobs the load can change between arms. Here every method's model is built in the
same process (smollm2-135m, bf16, each method's defaults, codepeft's compute settings: fast dropout,
fused LoRA/DoRA layers, per-example attention, target-only logits, bf16 adapters where the method
allows) and one forward + backward of the same packed CoNaLa batch of 8 runs for each method in turn,
``--repeats`` times; the median step time and its ratio to the first method are printed. No optimizer
step (the weights do not matter for the time), no peak memory (one process holds every model).

    .venv/bin/python benchmarks/method_steps.py --methods lora,dora,dora-peft --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any


def build(method_name: str, model_spec: str, threads: int | None) -> tuple[Any, Any]:
    """The trainable model of ``method_name`` with codepeft's training speed-ups applied, and its loaded base
    (``NAME-peft``: peft's own LoRA/DoRA layers, not the fused ones)."""
    import torch

    from codepeft.methods import get_method
    from codepeft.models import load_model
    from codepeft.training.attention import use_per_example_attention
    from codepeft.training.dropout import use_fast_dropout
    from codepeft.training.fused_dora import use_fused_dora
    from codepeft.training.fused_lora import use_fused_lora

    torch.manual_seed(0)
    method = get_method(method_name.removesuffix("-peft"))
    loaded = load_model(model_spec, dtype="bfloat16", quantization=method.quantization, threads=threads)
    model = method.wrap(loaded, method.params(None))
    use_fast_dropout(model)
    if method.bf16_compute and not method_name.endswith("-peft"):
        use_fused_lora(model)
        use_fused_dora(model)
    if method.packs:
        use_per_example_attention(model)
    return model.train(), loaded


def step_function(method_name: str, model: Any, loaded: Any, examples: list[Any]) -> Callable[[], None]:
    """One forward + backward of the batch, batched as ``train`` would batch it for this method."""
    import torch
    from peft.helpers import disable_input_dtype_casting

    from codepeft.methods import get_method
    from codepeft.training.data import collate
    from codepeft.training.loop import target_loss_sum

    method = get_method(method_name.removesuffix("-peft"))
    batching = "packed" if method.packs else "grouped"
    batch = collate(examples, batching, True, loaded.tokenizer.pad_token_id, 512)

    def run() -> None:
        with contextlib.ExitStack() as stack:
            if method.bf16_compute or method.name == "full":
                stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
            if method.bf16_compute:
                stack.enter_context(disable_input_dtype_casting(model))
            loss = target_loss_sum(model, batch) if method.packs else model(**batch, use_cache=False).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default="lora,dora")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch

    from codepeft.data import get_task
    from codepeft.home import default_data_dir
    from codepeft.models.loading import set_threads
    from codepeft.training.data import tokenize_all

    threads = set_threads(args.threads)
    methods = args.methods.split(",")
    steps: dict[str, Callable[[], None]] = {}
    for name in methods:
        model, loaded = build(name, args.model, args.threads)
        task = get_task("conala", default_data_dir())
        examples = tokenize_all(task, task.load("train")[:8], loaded, 512)
        steps[name] = step_function(name, model, loaded, examples)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats + 1):
        for name, run in steps.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t[1:]) for name, t in times.items()}  # the first step warms up
    first = medians[methods[0]]
    print(f"{args.model}, batch of 8 CoNaLa examples, {threads} thread(s), torch {torch.__version__}, "
          f"median of {args.repeats} alternating steps")
    for name in methods:
        per_step = ", ".join(f"{t:.2f}" for t in times[name][1:])
        print(f"{name:<16} {medians[name]:8.2f} s/step  speed {first / medians[name]:5.2f}x {methods[0]}  ({per_step})")


if __name__ == "__main__":
    main()
