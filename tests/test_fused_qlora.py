"""Fused LoRA layers on QLoRA's quantized bases: peft's function and gradients, and less saved for the backward."""

from __future__ import annotations

import pytest
import torch

from codepeft.models.dequantize import dequantizer
from codepeft.models.quantization import bitsandbytes_problem
from codepeft.training.fused_lora import DEQUANTIZE, PACKED, LoraLinearFunction, restore_lora, use_fused_lora

pytestmark = pytest.mark.skipif(bool(bitsandbytes_problem()), reason=f"bitsandbytes: {bitsandbytes_problem()}")

QLORA = ["qlora-8bit", "qlora-4bit"]


def _wrapped(model_dir, method, dtype="bfloat16", dropout=0.0):
    from codepeft.methods import get_method
    from codepeft.models import load_model

    chosen = get_method(method)
    loaded = load_model(model_dir, dtype=dtype, quantization=chosen.quantization)
    model = chosen.wrap(loaded, chosen.params({"r": 4, "dropout": dropout}))
    torch.manual_seed(0)
    for parameter in model.parameters():  # lora_B starts at zero; make the adapters matter
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter, std=0.2)
    return model


def _batch(rows=2, length=24):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 200, (rows, length), generator=generator)
    return {"input_ids": ids, "labels": ids}


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.item(), [p.grad.float().clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("method", QLORA)
def test_fused_qlora_layers_give_peft_s_loss_and_gradients(method, tiny_wide_causal_dir):
    """In fp32 (bitsandbytes dequantizes to the input's dtype) the two ways agree up to rounding; in bf16 the
    order of bf16 roundings differs, as it does for LoRA's fused layers."""
    from peft.tuners.lora.layer import LoraLayer

    model = _wrapped(tiny_wide_causal_dir, method, dtype="float32")
    model.train()  # dropout 0: both ways compute the same function
    batch = _batch()
    peft_loss, peft_grads = _loss_and_grads(model, batch)
    layers = use_fused_lora(model)
    assert len(layers) == sum(isinstance(m, LoraLayer) for m in model.modules()) > 0
    assert all(DEQUANTIZE in layer.__dict__ and PACKED not in layer.__dict__ for layer in layers)
    fused_loss, fused_grads = _loss_and_grads(model, batch)
    restore_lora(layers)
    assert all(DEQUANTIZE not in layer.__dict__ and "forward" not in layer.__dict__ for layer in layers)
    assert fused_loss == pytest.approx(peft_loss, rel=1e-5)
    for got, want in zip(fused_grads, peft_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", QLORA)
def test_the_dequantized_weight_is_bitsandbytes_own(method, tiny_wide_causal_dir):
    """Dequantized and multiplied by hand, a base layer gives what bitsandbytes' layer gives for the same input."""
    model = _wrapped(tiny_wide_causal_dir, method)
    base = next(m.base_layer for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    model.train()
    x = torch.randn(5, base.in_features, dtype=torch.bfloat16, requires_grad=True)  # training: bitsandbytes' CPU path
    want = base(x)
    got = torch.nn.functional.linear(x, dequantizer(base)(torch.bfloat16), base.bias)
    assert float((got.float() - want.float()).norm() / want.float().norm()) < 1e-2


def _saved_bytes(model, batch):
    """Bytes of the tensors the backward keeps that are not parameters (storages counted once)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    parameters |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), torch.autocast("cpu", torch.bfloat16):
        loss = model(**batch, use_cache=False).loss
    loss.backward()
    return sum(saved.values())


@pytest.mark.parametrize("method", ["qlora-8bit", "qlora-4bit", "lora"])
def test_fused_layers_keep_less_for_the_backward_than_peft_s(method, tiny_wide_causal_dir, monkeypatch):
    """With dropout, peft's layers keep a dropped copy of every adapted layer's input (and bitsandbytes its
    own reference); the fused layers keep the input and the dropped positions: fewer bytes, by at least a
    third of the adapted inputs' size here."""
    model = _wrapped(tiny_wide_causal_dir, method, dropout=0.1)
    model.train()
    batch = _batch(rows=4, length=64)
    torch.manual_seed(0)
    peft_bytes = _saved_bytes(model, batch)
    layers = use_fused_lora(model)
    calls = []
    apply = LoraLinearFunction.apply
    monkeypatch.setattr(LoraLinearFunction, "apply", lambda *args: calls.append(1) or apply(*args))
    torch.manual_seed(0)
    fused_bytes = _saved_bytes(model, batch)
    restore_lora(layers)
    assert len(calls) == len(layers) > 0
    tokens = batch["input_ids"].numel()
    adapted_inputs = sum(layer.in_features for layer in layers) * tokens * 2  # bf16
    assert peft_bytes - fused_bytes > adapted_inputs / 3


@pytest.mark.parametrize("method", QLORA)
def test_qlora_training_runs_the_fused_layers_and_learns(method, memo, tiny_wide_causal_dir, tmp_path, monkeypatch):
    """Through ``train`` on a bf16 base (QLoRA's default compute): every adapted layer goes through the fused
    function, the validation loss falls, and the model given back has peft's own forward again."""
    from codepeft.training import TrainSettings, train

    calls = []
    apply = LoraLinearFunction.apply
    monkeypatch.setattr(LoraLinearFunction, "apply", lambda *args: calls.append(args[9] is not None) or apply(*args))
    settings = TrainSettings(max_steps=4, batch_size=4, eval_every=4, dtype="bfloat16", val_limit=None)
    result = train(str(tiny_wide_causal_dir), [f"jsonl:{memo}"], method, {"lr": 1e-2, "r": 4}, tmp_path / "run",
                   settings)
    assert calls and all(calls)  # every call dequantized its base
    assert result.best_val_loss < result.initial_val_loss
    assert not any("forward" in m.__dict__ or DEQUANTIZE in m.__dict__ for m in result.model.modules())


def test_a_validation_pass_does_not_cut_4bit_layers_out_of_the_backward(tiny_wide_causal_dir):
    """bitsandbytes repacks 4-bit weights for inference on an eval forward without gradients, after which no
    gradient flows through them; a QLoRA model being trained keeps them as they are (peft's own layers here)."""
    model = _wrapped(tiny_wide_causal_dir, "qlora-4bit", dtype="float32")
    batch = _batch()
    model.train()
    _, before = _loss_and_grads(model, batch)
    model.eval()
    with torch.no_grad():
        model(**batch, use_cache=False)
    model.train()
    _, after = _loss_and_grads(model, batch)
    for got, want in zip(after, before, strict=True):
        torch.testing.assert_close(got, want)
