"""Slow: LoRA on smollm2-135m with a small CoNaLa subset; the validation loss falls and the adapter generates."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_lora_on_smollm2_lowers_conala_validation_loss(real_home, data_dir, tmp_path, monkeypatch):
    from codepeft.generation.generate import generate
    from codepeft.generation.settings import GenerationSettings
    from codepeft.models import load_model
    from codepeft.training import TrainSettings, train

    monkeypatch.setenv("CODEPEFT_HOME", str(real_home))
    settings = TrainSettings(max_steps=4, batch_size=4, eval_every=4, train_limit=32, val_limit=8, seed=0)
    result = train("smollm2-135m", ["conala"], "lora", {"lr": 1e-3}, tmp_path / "run", settings, data_dir)
    assert result.best_val_loss < result.initial_val_loss - 0.05, (result.initial_val_loss, result.val_losses)
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    assert costs["padding_fraction"] == 0.0 and costs["tokens_per_second"] > 0

    loaded = load_model("smollm2-135m", adapter=result.adapter_dir)
    prompt = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "reverse a list `x`"}],
                                                  tokenize=False, add_generation_prompt=True)
    out = generate(loaded, [prompt], GenerationSettings(max_new_tokens=24))
    assert out[0].new_tokens[0] > 0 and out[0].texts[0].strip()
