"""Training throughput: the reference study's fixed padding against codepeft's default, side by side.

LoRA on the CoNaLa training split (``--dataset mbpp``: MBPP's, four times the tokens a step) with smollm2-135m,
the same number of optimizer steps per arm:

- ``reference``: every example padded to 64 + 64 = 128 tokens, batch 8, the vocabulary logits of
  every position and peft's fp32 adapter compute (the reference study's way, transformers' defaults);
- ``codepeft``: codepeft's default (examples of a batch packed into one row, no padding, attention
  computed per example; LoRA computed in bf16 with fp32 master weights, each LoRA layer one fused
  autograd function whose dropout draws only the dropped positions; the output head only at target
  positions; freed memory kept by the allocator), batch 8;
- ``unfused``, ``default-allocator``, ``masked-attention``, ``torch-dropout`` (optional): codepeft's
  default without one of its speed-ups (peft's LoRA layers with the fast dropout mask; glibc's
  default malloc; transformers' block-diagonal mask over the whole packed row; peft's layers with
  ``nn.Dropout``); ``unfused-fp32-adapters``: peft's LoRA layers computing the adapter in fp32, the
  adapter path QLoRA takes (peft casts each adapted layer's input to the fp32 adapter weights), on the
  unquantized base: it separates what quantizing saves from what QLoRA's adapter path costs;
- ``packed-fp32`` (optional): packing alone, with the reference's fp32 adapters and full logits;
- ``fixed-fast`` (optional): fixed padding with codepeft's compute settings;
- one arm per train method, each with its own defaults and codepeft's compute settings: ``lora`` (the
  same as ``codepeft``), ``dora`` (fused DoRA layers), ``dora-peft`` (peft's DoRA layers, bf16 compute),
  ``dora-peft-fp32`` (peft's DoRA layers computing in fp32: codepeft's DoRA before the fused layers), ``ia3``,
  ``prompt-tuning``, ``prefix-tuning`` (both batched by length, padded: virtual tokens cannot share a
  packed row), ``qlora-4bit``, ``qlora-4bit-bf16`` (``upcast=false``: the unquantized weights stay
  bf16), ``qlora-8bit``, ``qlora-8bit-bf16`` (likewise), ``qlora-4bit-upcast`` / ``qlora-8bit-upcast``
  (``upcast=true``: peft's fp32 cast, the default before issue 14 made it fp16-only),
  ``qlora-4bit-peft`` / ``qlora-8bit-peft`` (peft's bitsandbytes LoRA layers instead of the fused ones
  on the quantized base) and ``full``.
  ``common val`` scores each arm's trained model the same way; for ``full`` MFU counts 6 FLOPs per
  matmul weight and token (all are trained); virtual tokens are not real tokens.

    .venv/bin/python benchmarks/training.py --steps 5 --warmup 2 --val-limit 16 --train-limit 400 --threads 1 \
        --arms lora,dora,dora-peft,ia3,prompt-tuning,prefix-tuning,qlora-4bit,qlora-4bit-bf16,qlora-8bit,full

All arms see the same examples in the same order with the same optimizer (AdamW, lr 3e-4) for the
same steps. Besides each arm's own validation loss (computed its way: packed or padded, bf16), the
trained model of every arm is scored the same way afterwards (``common val``: fp32 adapter compute,
batches padded to their longest, transformers' attention), so the losses compare like for like.
Each arm runs in its own process (so peak memory is its own), arms alternate when
``--repeats`` > 1 and medians are reported. The CPU's bf16 matrix-multiply peak is measured in the
same run, and model FLOP utilisation (MFU) counts the FLOPs a step needs for the real tokens, the
same formula for every arm (padding and avoidable logits are not counted):
4·(P - H) per real token (forward + input-gradient backward of frozen weights) + 6·T per real token
(trainable adapter weights) + 4·H per target token (output head where the loss counts) + 12·d·L per
causal (query, key) pair inside an example (attention scores and values, forward + backward);
P the parameters used in matrix multiplies, H the output head's, T the trainable ones, d the
attention width and L the layers.

The first ``--warmup`` steps of a run are slower (first matrix shapes, the heap growing, optimizer
state): ``steady`` columns leave them out, for every arm alike. ``--seeds 0,1,2`` runs each arm once
per seed (different data order, dropout and initialisation) and reports the paired differences of
the common validation loss next to the reference's own spread over seeds.

    .venv/bin/python benchmarks/training.py --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE_COMPUTE = {"bf16_adapters": False, "target_logits": False, "fast_dropout": False, "fused_lora": False,
                     "keep_freed_memory": False}
ARMS = {
    "reference": {"batching": "fixed", "max_length": 128, **REFERENCE_COMPUTE},
    "codepeft": {},
    "unfused": {"fused_lora": False},
    # peft's LoRA layers with fp32 adapter compute: QLoRA's adapter path without the quantized base
    "unfused-fp32-adapters": {"fused_lora": False, "bf16_adapters": False},
    "default-allocator": {"keep_freed_memory": False},
    "masked-attention": {"packed_attention": "masked"},
    "torch-dropout": {"fast_dropout": False, "fused_lora": False},
    "packed-fp32": REFERENCE_COMPUTE,
    "fixed-fast": {"batching": "fixed", "max_length": 128},
    "dynamic": {"batching": "dynamic", "max_length": 128, **REFERENCE_COMPUTE},
    # one arm per train method, each with its defaults (hyperparameters and codepeft's compute settings)
    "lora": {},
    "dora": {"method": "dora"},
    "dora-peft": {"method": "dora", "fused_lora": False},
    "dora-peft-fp32": {"method": "dora", "fused_lora": False, "bf16_adapters": False},  # the default before #14
    "ia3": {"method": "ia3"},
    "prompt-tuning": {"method": "prompt-tuning"},
    "prefix-tuning": {"method": "prefix-tuning"},
    "qlora-4bit": {"method": "qlora-4bit"},
    "qlora-8bit": {"method": "qlora-8bit"},
    "qlora-4bit-bf16": {"method": "qlora-4bit", "params": {"upcast": False}},
    "qlora-8bit-bf16": {"method": "qlora-8bit", "params": {"upcast": False}},
    # peft's bitsandbytes LoRA layers (QLoRA before the fused layers took quantized bases)
    "qlora-4bit-peft": {"method": "qlora-4bit", "fused_lora": False},
    "qlora-8bit-peft": {"method": "qlora-8bit", "fused_lora": False},
    # the QLoRA recipe's fp32 cast forced (the default before it became fp16 bases only)
    "qlora-4bit-upcast": {"method": "qlora-4bit", "params": {"upcast": True}},
    "qlora-8bit-upcast": {"method": "qlora-8bit", "params": {"upcast": True}},
    "full": {"method": "full"},
}


def matmul_peak_flops(dtype_name: str = "bfloat16", size: int = 2048, repeats: int = 10) -> float:
    """Best observed FLOP/s of a square matmul in ``dtype_name`` with torch's current threads."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def model_shape(adapter_dir: Path) -> dict[str, int]:
    """Parameters in matrix multiplies (linear layers, output head), the head's, the attention width, the layers."""
    import torch

    from codepeft.models import load_model
    from codepeft.models.adapters import read_adapter_meta

    meta = read_adapter_meta(adapter_dir)
    loaded = load_model(meta["base"]["path"], dtype="bfloat16")
    config = loaded.model.config
    head = loaded.model.get_output_embeddings()
    heads = config.num_attention_heads
    # lm_head is an nn.Linear (its weight tied to the embeddings): counted once, as a matmul
    return {
        "matmul": int(sum(m.weight.numel() for m in loaded.model.modules() if isinstance(m, torch.nn.Linear))),
        "head": int(head.weight.numel()),
        "attention_width": int(heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)),
        "layers": int(config.num_hidden_layers),
    }


def step_flops(run: dict, shape: dict[str, int]) -> float:
    """FLOPs the run's steps needed for its real tokens (see the module docstring)."""
    if run.get("method") == "full":  # every matmul weight trained: 6 FLOPs per weight and token, head included
        body, head = 6 * (shape["matmul"] - shape["head"]), 6 * shape["head"]
    else:
        body, head = 4 * (shape["matmul"] - shape["head"]) + 6 * run["trainable_parameters"], 4 * shape["head"]
    return (run["tokens_seen"] * body + run["target_tokens"] * head
            + run["attention_pairs"] * 12 * shape["attention_width"] * shape["layers"])


def run_arm(name: str, args: argparse.Namespace, out: Path, seed: int) -> dict:
    """Train one arm in a child process; return its costs.json, the final validation losses and its
    throughput after ``args.warmup`` steps (from the per-step log)."""
    # epochs: enough for --steps on any data set (the budget is epochs; max_steps only caps it)
    settings = {"max_steps": args.steps, "epochs": 1000, "batch_size": 8, "eval_every": args.steps,
                "val_limit": args.val_limit,
                "seed": seed, "train_limit": args.train_limit, "force": True, "log_every": 1, "threads": args.threads,
                **ARMS[name]}
    method, params = settings.pop("method", "lora"), settings.pop("params", None)
    code = (
        "import json,sys; from codepeft.training import train, TrainSettings; "
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); from training import common_val_loss; "
        "s = TrainSettings(**json.loads(sys.argv[1])); "
        f"r = train({args.model!r}, [{args.dataset!r}], {method!r}, {params!r}, {str(out)!r}, s); "
        "print('RESULT', json.dumps({'val': r.best_val_loss, 'initial': r.initial_val_loss, "
        f"'common': common_val_loss(r.model, sys.argv[2], s.val_limit, {args.dataset!r})}}))"
    )
    env = dict(os.environ, **({"CODEPEFT_THREADS": str(args.threads)} if args.threads else {}))  # common_val too
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(settings), args.model], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"arm {name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[7:])
    costs = json.loads((out / "costs.json").read_text())
    steps = {r["step"]: r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "tokens" in r}
    first, last = steps[args.warmup], steps[args.steps]
    steady = (last["tokens"] - first["tokens"]) / (last["seconds"] - first["seconds"])
    return {**costs, "val_loss": result["val"], "initial_val_loss": result["initial"],
            "common_val_loss": result["common"], "steady_tokens_per_second": steady,
            "steady_share": (last["tokens"] - first["tokens"]) / costs["tokens_seen"], "seed": seed}


def common_val_loss(model: object, model_spec: str, limit: int | None, dataset: str = "conala") -> float:
    """Validation loss of a trained model on the data set's validation split, the same way for every arm
    (examples cut at 128 tokens for CoNaLa, the reference's 64 + 64, else at 512)."""
    import torch

    from codepeft.data import get_task
    from codepeft.home import default_data_dir
    from codepeft.models import load_model
    from codepeft.training.data import collate, tokenize_all

    loaded = load_model(model_spec, dtype="bfloat16")  # for its tokenizer and prompt style
    task = get_task(dataset, default_data_dir())
    length = 128 if dataset == "conala" else 512
    items = tokenize_all(task, task.load("validation")[:limit], loaded, length)
    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for start in range(0, len(items), 8):
            batch = items[start : start + 8]
            inputs = collate(batch, "grouped", True, loaded.tokenizer.pad_token_id, length)
            targets = sum(item.target_tokens(True) for item in batch)
            total += float(model(**inputs, use_cache=False).loss) * targets
            count += targets
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="conala",
                        help="training data (mbpp: ~1,700 real tokens a step against CoNaLa's ~400, where memory "
                        "differences that grow with the tokens show)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per arm")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per arm (medians reported)")
    parser.add_argument("--arms", default="reference,codepeft", help=f"comma list of {', '.join(ARMS)}")
    parser.add_argument("--val-limit", type=int, default=100)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per arm (default: every CPU; 1 on a machine shared with other jobs, "
                        "where threads that wait for each other at every operation cost more than they bring)")
    parser.add_argument("--seeds", default="0", help="comma list: every repeat runs each arm once per seed")
    parser.add_argument("--warmup", type=int, default=3,
                        help="steps left out of the steady-state throughput (first shapes, heap growth)")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if not 1 <= args.warmup < args.steps:
        raise SystemExit(f"--warmup must be between 1 and --steps - 1 (got {args.warmup})")

    import torch

    from codepeft.models.loading import set_threads

    threads = set_threads(args.threads)
    peak = matmul_peak_flops()
    arms = args.arms.split(",")
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for seed in seeds:
                for arm in arms:
                    runs[arm].append(run_arm(arm, args, Path(tmp) / f"{arm}-{repeat}-{seed}", seed))
                    print(f"# {arm} run {repeat + 1} seed {seed}: {runs[arm][-1]['tokens_per_second']} real tokens/s, "
                          f"steady {runs[arm][-1]['steady_tokens_per_second']:.1f}, "
                          f"common val {runs[arm][-1]['common_val_loss']:.4f}", flush=True)
        shape = model_shape(Path(tmp) / f"{arms[0]}-0-{seeds[0]}" / "adapter")
    peak_after = matmul_peak_flops()

    def median(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[arm])

    baseline = median(arms[0], "tokens_per_second")
    steady_baseline = median(arms[0], "steady_tokens_per_second")
    print(f"\nbf16 matmul peak ({threads} threads): {peak / 1e9:.1f} GFLOP/s before, {peak_after / 1e9:.1f} after; "
          f"{args.steps} steps x batch 8 per arm on {args.dataset}, {args.repeats} repeat(s) x seeds {args.seeds}, "
          f"torch {torch.__version__}")
    header = f"{'arm':<16} {'real tok/s':>10} {'ratio':>6} {'steady':>7} {'ratio':>6} {'pad %':>6} {'val loss':>9} " \
             f"{'common val':>10} {'peak RSS':>9} {'MFU':>6} {'steady':>7} {'train s':>8}"
    print(header)
    print("-" * len(header))
    best_peak = max(peak, peak_after)
    for arm in arms:
        tps, steady = median(arm, "tokens_per_second"), median(arm, "steady_tokens_per_second")
        mfu = statistics.median(step_flops(r, shape) / r["train_seconds"] for r in runs[arm]) / best_peak
        # steady MFU: the same FLOPs per real token, at the steady-state rate
        steady_mfu = statistics.median(step_flops(r, shape) / r["tokens_seen"] * r["steady_tokens_per_second"]
                                       for r in runs[arm]) / best_peak
        print(f"{arm:<16} {tps:>10.1f} {tps / baseline:>6.2f} {steady:>7.1f} {steady / steady_baseline:>6.2f} "
              f"{100 * median(arm, 'padding_fraction'):>6.1f} {median(arm, 'val_loss'):>9.4f} "
              f"{median(arm, 'common_val_loss'):>10.4f} "
              f"{median(arm, 'peak_rss_bytes') / 2**30:>8.2f}G {100 * mfu:>5.1f}% {100 * steady_mfu:>6.1f}% "
              f"{median(arm, 'train_seconds'):>8.1f}")
    print(f"\nMFU: FLOPs needed for the real tokens ({shape['matmul'] / 1e6:.1f}M matmul params, head "
          f"{shape['head'] / 1e6:.1f}M, attention {shape['attention_width']} x {shape['layers']} layers) / seconds / "
          "best bf16 peak")
    print("ratios per repeat: " + "; ".join(
        f"{arm}=" + ",".join(f"{r['tokens_per_second'] / b['tokens_per_second']:.2f}"
                             for r, b in zip(runs[arm], runs[arms[0]], strict=True)) for arm in arms[1:]))
    print("tokens seen per arm: " + ", ".join(f"{a}={runs[a][0]['tokens_seen']}" for a in arms))
    print(f"steady: real tokens/s and MFU after the first {args.warmup} steps (the per-step log of each run)")
    if len(seeds) > 1:
        for arm in arms[1:]:  # paired by seed: same examples, same order, same initialisation
            diffs = [r["common_val_loss"] - b["common_val_loss"] for r, b in zip(runs[arm], runs[arms[0]], strict=True)]
            spread = statistics.stdev(b["common_val_loss"] for b in runs[arms[0]])
            print(f"common val {arm} - {arms[0]} per run: " + ", ".join(f"{d:+.4f}" for d in diffs)
                  + f"; mean {statistics.mean(diffs):+.4f} (sd {statistics.stdev(diffs):.4f}); "
                  f"{arms[0]}'s own spread over seeds: sd {spread:.4f}")


if __name__ == "__main__":
    main()
