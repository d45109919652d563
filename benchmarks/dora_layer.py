"""One adapted layer, forward + backward: fused LoRA, fused DoRA (with and without dropout) and peft's DoRA.

The layer shapes of smollm2-135m's MLP (576 -> 1536 and 1536 -> 576), r=16, alpha=32, dropout 0.05, a
packed CoNaLa batch of ~600 tokens, bf16 base weights with fp32 adapter weights; peft's DoRA layer
computes its adapter in fp32 (as it does when training on a bf16 base), the fused layers in bf16. The
variants alternate within each repeat and medians are reported, so the ratios hold on a shared machine.

    .venv/bin/python benchmarks/dora_layer.py --repeats 15 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def variants(tokens: int, features_in: int, features_out: int) -> dict[str, Callable[[], None]]:
    """Forward + backward of each variant on the same input, weights and output gradient."""
    import torch
    from peft import LoraConfig, get_peft_model

    from codepeft.training.dropout import use_fast_dropout
    from codepeft.training.fused_dora import use_fused_dora
    from codepeft.training.fused_lora import use_fused_lora

    torch.manual_seed(0)

    def layer(dora: bool) -> torch.nn.Module:
        base = torch.nn.Sequential()
        base.add_module("proj", torch.nn.Linear(features_in, features_out, bias=False, dtype=torch.bfloat16))
        config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["proj"], use_dora=dora)
        model = get_peft_model(base, config).train()
        use_fast_dropout(model)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.02)
        return model

    lora, dora, peft_dora = layer(False), layer(True), layer(True)
    use_fused_lora(lora)
    use_fused_dora(dora)
    x = torch.randn(tokens, features_in, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(tokens, features_out, dtype=torch.bfloat16)

    def step(model: torch.nn.Module, training: bool = True) -> Callable[[], None]:
        def run() -> None:
            model.train(training)
            model(x).backward(grad)
        return run

    def dora_without_dropout() -> None:
        dora.eval()  # no dropout: the one-product path (what dropout=0 trains with)
        with torch.enable_grad():
            dora(x).backward(grad)

    return {"lora (fused)": step(lora), "dora (fused)": step(dora), "dora (fused, p=0)": dora_without_dropout,
              "dora (peft)": step(peft_dora)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch

    from codepeft.models.loading import set_threads

    threads = set_threads(args.threads)
    print(f"{args.tokens} tokens, {threads} thread(s), torch {torch.__version__}; median ms of {args.repeats} repeats")
    for shape in ((576, 1536), (1536, 576)):
        runs = variants(args.tokens, *shape)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats + 2):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(t[2:]) * 1e3 for name, t in times.items()}  # first two: warm-up
        lora = medians["lora (fused)"]
        print(f"{shape[0]} -> {shape[1]}: " + ", ".join(f"{name} {ms:.1f} ms ({ms / lora:.2f}x)"
                                                     for name, ms in medians.items()))


if __name__ == "__main__":
    main()
