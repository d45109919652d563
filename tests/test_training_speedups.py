"""Per-example attention for packed rows and fast adapter dropout: same results as the slow way."""

from __future__ import annotations

import pytest
import torch

from codepeft.errors import CodepeftError
from codepeft.training import TrainSettings, train
from codepeft.training.attention import per_example_attention, restore_attention, use_per_example_attention
from codepeft.training.data import collate, tokenize_all
from codepeft.training.dropout import FastDropout, use_fast_dropout


def _loss_and_grads(model, batch) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("row_tokens", [None, 40])
def test_per_example_attention_matches_the_block_diagonal_mask(tiny_causal_dir, memo, row_tokens):
    """Loss and every gradient equal transformers' masked SDPA on packed rows (one row or several, pad runs)."""
    from codepeft.data import get_task
    from codepeft.models import load_model

    loaded = load_model(tiny_causal_dir, dtype="float32")
    task = get_task(f"jsonl:{memo}")
    items = tokenize_all(task, task.load("train")[:6], loaded, 512)
    batch = collate(items, "packed", True, loaded.tokenizer.pad_token_id, 512, row_tokens)
    model = loaded.model.train()
    masked_loss, masked_grads = _loss_and_grads(model, batch)
    previous = use_per_example_attention(model)
    assert previous == "sdpa"
    try:
        loss, grads = _loss_and_grads(model, batch)
    finally:
        restore_attention(model, previous)
    assert model.config._attn_implementation == "sdpa"
    assert loss == pytest.approx(masked_loss, rel=1e-5)
    for got, want in zip(grads, masked_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _reference(query, key, value, lengths, window=None, softcap=None):
    """Each sequence alone, explicit causal (and windowed) attention, keys/values repeated per query group."""
    outs, start = [], 0
    group = query.shape[1] // key.shape[1]
    for length in lengths:
        q = query[:, :, start:start + length]
        k = key[:, :, start:start + length].repeat_interleave(group, dim=1)
        v = value[:, :, start:start + length].repeat_interleave(group, dim=1)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        i = torch.arange(length)[:, None]
        j = torch.arange(length)[None, :]
        allowed = (j <= i) & ((i - j < window) if window else True)
        outs.append(torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v)
        start += length
    return torch.cat(outs, dim=2).transpose(1, 2)


@pytest.mark.parametrize("window, softcap", [(None, None), (3, None), (None, 5.0), (4, 2.0)])
def test_per_example_attention_kernel(window, softcap):
    torch.manual_seed(0)
    lengths = [5, 1, 9, 3]
    positions = torch.tensor([[p for n in lengths for p in range(n)]])
    query, key, value = torch.randn(1, 4, 18, 8), torch.randn(1, 2, 18, 8), torch.randn(1, 2, 18, 8)
    module = torch.nn.Module().eval()
    out, _ = per_example_attention(module, query, key, value, None, scaling=8**-0.5, position_ids=positions,
                                   sliding_window=window, softcap=softcap)
    torch.testing.assert_close(out, _reference(query, key, value, lengths, window, softcap))


def test_per_example_attention_needs_position_ids():
    query = torch.randn(1, 2, 4, 8)
    with pytest.raises(CodepeftError, match="--batching grouped"):
        per_example_attention(torch.nn.Module(), query, query, query, None)


def test_training_with_per_example_attention_follows_the_masked_run(tiny_causal_dir, memo, tmp_path):
    """Same seed, same steps: the validation losses of per-example and masked attention agree."""
    settings = {"max_steps": 4, "epochs": 10, "batch_size": 4, "eval_every": 2, "dtype": "float32", "val_limit": None,
                "fast_dropout": False}
    runs = {}
    for mode in ("masked", "per-example"):
        result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", None, tmp_path / mode,
                       TrainSettings(**settings, packed_attention=mode))
        runs[mode] = [loss for _, loss in result.val_losses]
        assert result.model.config._attn_implementation == "sdpa"  # restored for generation
    assert runs["per-example"] == pytest.approx(runs["masked"], rel=1e-4)
    trained = [p for name, p in result.model.named_parameters() if "lora_B" in name]
    assert trained and all(p.abs().sum() > 0 for p in trained)  # LoRA's B starts at zero: the steps trained it


def test_fast_dropout_drops_the_right_share_and_scales_the_rest():
    torch.manual_seed(0)
    layer = FastDropout(0.05).train()
    x = torch.ones(400, 500, requires_grad=True)
    y = layer(x)
    dropped = float((y == 0).float().mean())
    assert dropped == pytest.approx(0.05, abs=0.002)
    values = torch.unique(y).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / 0.95)]
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient: the same mask and scale
    layer.eval()
    assert layer(x) is x


def test_fast_dropout_is_seeded_and_keeps_the_dtype():
    layer = FastDropout(0.3).train()
    x = torch.randn(64, 48, dtype=torch.bfloat16)
    torch.manual_seed(1)
    first = layer(x)
    torch.manual_seed(1)
    assert torch.equal(first, layer(x)) and first.dtype == torch.bfloat16
    assert not torch.equal(first, layer(x))
    assert FastDropout(0.0).train()(x) is x


def test_fast_dropout_replaces_every_lora_dropout(tiny_causal_dir):
    from codepeft.methods import get_method
    from codepeft.models import load_model

    loaded = load_model(tiny_causal_dir, dtype="float32")
    method = get_method("lora")
    model = method.wrap(loaded, method.params(None))
    before = sum(isinstance(m, torch.nn.Dropout) for m in model.modules())
    swapped = use_fast_dropout(model)
    assert swapped == before > 0
    assert sum(isinstance(m, FastDropout) for m in model.modules()) == swapped
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(1.0)


def _tiny_config(name: str):
    from transformers import GemmaConfig, GPT2Config, MistralConfig, Phi3Config, Qwen2Config

    shared = {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 0, "eos_token_id": 1}
    return {
        "gpt2": lambda: GPT2Config(vocab_size=400, n_embd=32, n_layer=2, n_head=4, eos_token_id=1),
        "qwen2": lambda: Qwen2Config(**shared),
        "mistral-sliding-window": lambda: MistralConfig(**shared, sliding_window=4),
        "gemma": lambda: GemmaConfig(**shared, head_dim=8),
        "phi3": lambda: Phi3Config(**shared),
    }[name]()


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "mistral-sliding-window", "gemma", "phi3"])
def test_per_example_attention_keeps_examples_apart_in_other_architectures(name):
    """A packed row scores each example as if it were alone, for architectures beyond Llama."""
    from transformers import AutoModelForCausalLM

    from codepeft.training.data import Tokenized

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_tiny_config(name)).eval()
    items = [Tokenized(tuple(range(5, 5 + n)), tuple([-100] * 2 + list(range(7, 5 + n)))) for n in (6, 9, 4)]
    batch = collate(items, "packed", True, 0, 64)
    with torch.no_grad():
        alone = sum(model(**collate([item], "grouped", True, 0, 64)).loss.item() * item.target_tokens(True)
                    for item in items) / sum(item.target_tokens(True) for item in items)
        masked = model(**batch, use_cache=False).loss.item()  # transformers builds its block mask only without a cache
        previous = use_per_example_attention(model)
        packed = model(**batch).loss.item()  # per-example attention needs no such care
        restore_attention(model, previous)
    assert previous is not None
    assert packed == pytest.approx(alone, rel=1e-5) and masked == pytest.approx(alone, rel=1e-5)


_ALLOCATION_CYCLES = """
import resource, sys, torch
from codepeft.training.malloc import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.empty(16 << 20).fill_(1)  # 64 MiB: above glibc's largest dynamic mmap threshold (32 MiB)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    torch.empty(16 << 20).fill_(1)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_stops_page_faults_on_reused_blocks():
    """A freed 64 MiB block is reused from the heap instead of being mapped (and faulted in) again."""
    import subprocess
    import sys

    faults = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", _ALLOCATION_CYCLES, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        faults[mode] = int(out[1])
        if mode == "keep":
            assert out[0] == "True"
    pages_per_cycle = (64 << 20) // 4096
    assert faults["default"] > 30 * pages_per_cycle  # every cycle maps fresh pages
    # the heap grows once (by up to its 256 MiB top pad, depending on where the block lands), then is reused
    assert faults["keep"] < 8 * pages_per_cycle


def test_a_diverged_run_still_undoes_every_speed_up(tiny_causal_dir, memo, tmp_path, monkeypatch):
    """The divergence error ends the run inside the recipe: the fused layers, the attention and glibc's
    malloc settings are restored all the same (speedups.py undoes them in ``finally``)."""
    from codepeft.training import loop, speedups

    calls: list[str] = []
    monkeypatch.setattr(speedups, "restore_malloc_defaults", lambda: calls.append("malloc") or True)
    original = loop._Recipe.account
    monkeypatch.setattr(loop._Recipe, "account", lambda self, loss, *rest: original(self, float("nan"), *rest))
    settings = TrainSettings(max_steps=3, batch_size=4, dtype="float32", val_limit=2, keep_freed_memory=True,
                             fused_lora=True, packed_attention="per-example")
    captured = {}
    wrap = speedups.apply_speedups

    def spy(model, *args):
        captured["model"] = model
        captured["layers"] = wrap(model, *args)
        return captured["layers"]

    monkeypatch.setattr(loop, "apply_speedups", spy)
    with pytest.raises(CodepeftError, match="training diverged at step 1"):
        train(tiny_causal_dir, f"jsonl:{memo}", "lora", {"r": 2}, tmp_path / "run", settings)
    assert captured["layers"], "the fused LoRA layers were applied"
    assert all("forward" not in layer.__dict__ for layer in captured["layers"])  # peft's own forward again
    assert captured["model"].get_base_model().config._attn_implementation == "sdpa"
    assert calls == ["malloc"]


def test_full_fine_tuning_is_a_property_of_the_method():
    from codepeft.methods import get_method

    assert get_method("full").trains_base_weights
    assert not any(get_method(name).trains_base_weights for name in ("lora", "dora", "ia3", "prompt-tuning"))
