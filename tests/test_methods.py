"""The shared suite: every registered train method, on tiny random causal and seq2seq models.

Each trains a few steps on a memo set and must: lower the validation loss, count exactly the
trainable parameters the method implies, save an adapter that reloads to the same validation
loss, and generate with it exactly what a step-by-step greedy decode of the same model gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codepeft.methods.finetuning import train_methods
from codepeft.models.quantization import bitsandbytes_problem
from codepeft.training import TrainSettings, train
from codepeft.training.data import collate, tokenize_all

METHODS = sorted(train_methods())
# memorising 4 examples in a few steps needs larger steps than the defaults (meant for real data)
TEST_LR = {"lora": 1e-2, "dora": 1e-2, "qlora-4bit": 1e-2, "qlora-8bit": 1e-2, "ia3": 1e-1,
           "prompt-tuning": 1e-1, "prefix-tuning": 3e-2, "full": 3e-3}
def expected_trainable(method: str, model, params: dict) -> int:
    """Trainable parameters the method implies, computed from the base model's own layers."""
    from codepeft.models import find_target_modules

    config = model.config
    hidden = getattr(config, "hidden_size", None) or config.d_model
    seq2seq = getattr(config, "is_encoder_decoder", False)
    found = find_target_modules(model)

    def linears(suffixes):
        return [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                and any(name == s or name.endswith("." + s) for s in suffixes)]

    if method in {"lora", "dora", "qlora-4bit", "qlora-8bit"}:
        r = params.get("r", 16)
        count = sum(r * (m.in_features + m.out_features) for m in linears(found.all_linear))
        return count + (sum(m.out_features for m in linears(found.all_linear)) if method == "dora" else 0)
    if method == "ia3":
        feedforward = {id(m) for m in linears(found.feedforward)}
        return sum(m.in_features if id(m) in feedforward else m.out_features for m in linears(found.ia3))
    if method == "prompt-tuning":
        return params.get("num_virtual_tokens", 20) * hidden * (2 if seq2seq else 1)
    if method == "prefix-tuning":
        layers = config.num_hidden_layers if not seq2seq else config.num_layers
        if not seq2seq and getattr(config, "num_key_value_heads", None):
            width = (hidden // config.num_attention_heads) * config.num_key_value_heads  # grouped-query attention
        else:
            width = hidden
        return params.get("num_virtual_tokens", 10) * layers * 2 * width
    if method == "full":
        return sum(p.numel() for p in model.parameters())
    raise AssertionError(f"no expectation for {method}")


def validation_loss(loaded, data: Path) -> float:
    from codepeft.data import get_task

    task = get_task(f"jsonl:{data}")
    items = tokenize_all(task, task.load("validation"), loaded, 512)
    causal = loaded.kind == "causal"
    total = count = 0.0
    with torch.no_grad():
        for item in items:
            batch = collate([item], "grouped", causal, loaded.tokenizer.pad_token_id, 512)
            n = item.target_tokens(causal)
            total += float(loaded.model(**batch).loss) * n
            count += n
    return total / count


def greedy_by_hand(loaded, prompt: str, steps: int) -> str:
    """Greedy decoding one forward pass per token, no cache: what ``generate`` must reproduce."""
    tokenizer = loaded.tokenizer
    ids = tokenizer(prompt, add_special_tokens=loaded.style != "chat", return_tensors="pt")["input_ids"]
    eos = {tokenizer.eos_token_id, loaded.model.config.eos_token_id}
    new: list[int] = []
    decoder = torch.tensor([[loaded.model.config.decoder_start_token_id or 0]]) if loaded.kind == "seq2seq" else None
    with torch.no_grad():
        for _ in range(steps):
            if decoder is None:
                full = torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], dim=1) if new else ids
                logits = loaded.model(input_ids=full, attention_mask=torch.ones_like(full)).logits
            else:
                logits = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      decoder_input_ids=decoder).logits
            token = int(logits[0, -1].argmax())
            new.append(token)
            if decoder is not None:
                decoder = torch.cat([decoder, torch.tensor([[token]])], dim=1)
            if token in eos:
                break
    return tokenizer.decode(new, skip_special_tokens=True)


# seq2seq: one of each family (dora and the qlora variants share LoRA's code path; T5 is 32 wide)
CASES = [(m, "causal") for m in METHODS] + [
    (m, "seq2seq") for m in METHODS if m in {"lora", "ia3", "prompt-tuning", "prefix-tuning", "full"}]


@pytest.mark.parametrize(("method", "kind"), CASES)
def test_method_trains_saves_reloads_and_generates(method, kind, memo, tiny_seq2seq_dir, tiny_wide_causal_dir,
                                                   tmp_path):
    from codepeft.data import get_task
    from codepeft.data.prompts import build_prompt
    from codepeft.generation.generate import generate
    from codepeft.generation.settings import GenerationSettings
    from codepeft.methods import get_method
    from codepeft.models import load_model

    if get_method(method).quantization and (problem := bitsandbytes_problem()):
        pytest.skip(f"{method} cannot run on this machine: {problem}")
    model_dir = tiny_seq2seq_dir if kind == "seq2seq" else tiny_wide_causal_dir
    quantization = get_method(method).quantization
    params = {"lr": TEST_LR[method]}
    if method in {"lora", "dora", "qlora-4bit", "qlora-8bit"}:
        params["r"] = 4
    settings = TrainSettings(max_steps=8, epochs=10, batch_size=4, eval_every=4, dtype="float32", val_limit=None)
    result = train(str(model_dir), [f"jsonl:{memo}"], method, params, tmp_path / "run", settings)

    # the loss falls on a memo set
    assert result.best_val_loss < result.initial_val_loss - 0.1, (result.initial_val_loss, result.val_losses)
    assert result.val_losses[-1][1] <= result.val_losses[0][1]
    # trainable parameters are exactly what the method implies for this base model
    base = load_model(model_dir, dtype="float32")
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    assert costs["trainable_parameters"] == expected_trainable(method, base.model, params)
    assert costs["tokens_seen"] > 0 and costs["tokens_per_second"] > 0 and costs["peak_rss_bytes"] > 0

    # the saved adapter reloads to the model that scored the best validation loss
    # (a QLoRA adapter was trained on the quantised base and is evaluated on it)
    loaded = load_model(model_dir, dtype="float32", adapter=result.adapter_dir, quantization=quantization)
    assert validation_loss(loaded, memo) == pytest.approx(result.best_val_loss, rel=2e-3)

    # generation with the adapter: generate() gives what step-by-step greedy decoding gives
    task = get_task(f"jsonl:{memo}")
    example = task.load("validation")[1]
    prompt = build_prompt(task, example, loaded.tokenizer, loaded.style)
    generated = generate(loaded, [prompt, "x"], GenerationSettings(max_new_tokens=6, batch_size=2))
    assert generated[0].texts[0] == greedy_by_hand(loaded, prompt, 6)


def test_qlora_4bit_on_a_narrow_model_says_why(tiny_causal_dir, memo, tmp_path):
    from codepeft.errors import CodepeftError

    if bitsandbytes_problem() or torch.cuda.is_available():
        pytest.skip("only the CPU path has the width limit")
    with pytest.raises(CodepeftError, match="divisible by 64"):
        train(str(tiny_causal_dir), [f"jsonl:{memo}"], "qlora-4bit", {}, tmp_path / "run",
              TrainSettings(max_steps=1, dtype="float32"))


@pytest.mark.parametrize("upcast", [True, False, None])
def test_qlora_upcast_decides_the_dtype_of_the_unquantized_weights(upcast, memo, tiny_wide_causal_dir,
                                                                  tmp_path):
    """peft's QLoRA preparation casts embeddings and norms to fp32; ``upcast=false`` keeps the base's bf16,
    and so does the default (None) on a bf16 base: the fp32 cast guards fp16 bases only. Without the cast
    the adapters compute in bf16 too, as LoRA's do."""
    if problem := bitsandbytes_problem():
        pytest.skip(f"qlora-4bit cannot run on this machine: {problem}")
    settings = TrainSettings(max_steps=4, batch_size=4, eval_every=4, dtype="bfloat16", val_limit=None)
    params = {"lr": TEST_LR["qlora-4bit"], "r": 4} | ({} if upcast is None else {"upcast": upcast})
    result = train(str(tiny_wide_causal_dir), [f"jsonl:{memo}"], "qlora-4bit", params, tmp_path / "run", settings)
    embeddings = result.model.get_input_embeddings().weight
    assert embeddings.dtype == (torch.float32 if upcast else torch.bfloat16)
    # the adapters compute in bf16 unless the fp32 recipe was asked for (fp32 copies cost QLoRA its memory saving)
    compute = json.loads((tmp_path / "run" / "config.json").read_text())["compute"]
    assert compute["bf16_adapters"] is (not upcast) and compute["autocast_bf16"] is (not upcast)
    assert result.best_val_loss < result.initial_val_loss
