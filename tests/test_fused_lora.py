"""Fused LoRA layers: the same function and gradients as peft's, dropout with exactly probability p."""

from __future__ import annotations

import pytest
import torch

from codepeft.training import TrainSettings, train
from codepeft.training.fused_lora import (
    PACKED,
    LoraLinearFunction,
    drop_positions,
    pack_weight,
    restore_lora,
    use_fused_lora,
)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_drop_positions_are_independent_draws_with_probability_p(p):
    torch.manual_seed(0)
    count = 200_000
    positions = drop_positions(count, p)
    assert positions.dtype == torch.int64
    assert bool((positions[1:] > positions[:-1]).all()) and int(positions[0]) >= 0 and int(positions[-1]) < count
    share = len(positions) / count
    sigma = (p * (1 - p) / count) ** 0.5
    assert abs(share - p) < 5 * sigma
    dropped = torch.zeros(count, dtype=torch.bool)
    dropped[positions] = True
    both = float((dropped[1:] & dropped[:-1]).float().mean())  # neighbours independent: p^2
    assert abs(both - p * p) < 5 * (p * p * (1 - p * p) / count) ** 0.5
    torch.manual_seed(0)
    assert torch.equal(drop_positions(count, p), positions)
    assert not torch.equal(drop_positions(count, p), positions)


def test_drop_positions_rejects_a_bad_probability():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        drop_positions(10, 1.0)


@pytest.mark.parametrize("with_dropout", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_function_matches_the_unfused_formula(with_dropout, with_bias, packed, dtype):
    """Output and every gradient equal x W^T + b + s * dropout(x) A^T B^T, computed unfused in float64."""
    torch.manual_seed(0)
    x = torch.randn(2, 19, 24, dtype=dtype, requires_grad=True)
    weight, bias = torch.randn(20, 24, dtype=dtype), (torch.randn(20, dtype=dtype) if with_bias else None)
    packed_weight = pack_weight(weight) if packed else None
    if packed and packed_weight is None:
        pytest.skip("this torch has no oneDNN weight packing")
    lora_a = torch.randn(4, 24, requires_grad=True)
    lora_b = torch.randn(20, 4, requires_grad=True)
    p, scaling = 0.3, 2.0
    dropped = drop_positions(x.numel(), p) if with_dropout else None
    keep_scale = 1 / (1 - p) if with_dropout else 1.0
    out = LoraLinearFunction.apply(x, weight, bias, lora_a, lora_b, scaling, dropped, keep_scale, packed_weight)
    grad = torch.randn_like(out)
    out.backward(grad)

    keep = torch.ones(x.numel(), dtype=torch.float64)
    if dropped is not None:
        keep[dropped] = 0
    x64, a64, b64 = (t.detach().double().requires_grad_() for t in (x, lora_a, lora_b))
    want = x64 @ weight.double().t() + (x64 * keep.view(x.shape) * keep_scale) @ a64.t() @ b64.t() * scaling
    if bias is not None:
        want = want + bias.double()
    want.backward(grad.double())
    def close(got, ref):  # float32: exact up to rounding; bfloat16: relative to the tensor's size (8-bit mantissa)
        if dtype == torch.float32:
            torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
        else:
            assert float((got.double() - ref).norm() / ref.norm()) < 2e-2

    assert out.dtype == dtype and x.grad.dtype == dtype
    close(out, want)
    for got, ref in ((x.grad, x64.grad), (lora_a.grad, a64.grad), (lora_b.grad, b64.grad)):
        close(got, ref)
    assert lora_a.grad.dtype == lora_b.grad.dtype == torch.float32


def _wrapped(tiny_causal_dir, method="lora"):
    from codepeft.methods import get_method
    from codepeft.models import load_model

    loaded = load_model(tiny_causal_dir, dtype="float32")
    chosen = get_method(method)
    return loaded, chosen.wrap(loaded, chosen.params(None))


def test_fused_layers_give_peft_s_loss_and_gradients(tiny_causal_dir, memo):
    from peft.tuners.lora.layer import Linear as LoraLinear

    from codepeft.data import get_task
    from codepeft.training.data import collate, tokenize_all

    loaded, model = _wrapped(tiny_causal_dir)
    task = get_task(f"jsonl:{memo}")
    batch = collate(tokenize_all(task, task.load("train")[:4], loaded, 512), "grouped", True,
                    loaded.tokenizer.pad_token_id, 512)
    model.eval()  # no dropout: both ways compute the same function
    for parameter in model.parameters():  # lora_B starts at zero; make the adapters matter
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter, std=0.2)

    def loss_and_grads():
        model.zero_grad()
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    peft_loss, peft_grads = loss_and_grads()
    layers = use_fused_lora(model)
    assert len(layers) == sum(isinstance(m, LoraLinear) for m in model.modules()) > 0
    assert all(PACKED in layer.__dict__ for layer in layers) == torch.backends.mkldnn.is_available()
    fused_loss, fused_grads = loss_and_grads()
    restore_lora(layers)
    assert all("forward" not in layer.__dict__ and PACKED not in layer.__dict__ for layer in layers)
    assert fused_loss == pytest.approx(peft_loss, rel=1e-5)
    for got, want in zip(fused_grads, peft_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_dora_layers_keep_peft_s_forward(tiny_causal_dir):
    _, model = _wrapped(tiny_causal_dir, "dora")
    assert use_fused_lora(model) == []


def test_training_with_fused_lora_follows_peft(tiny_causal_dir, memo, tmp_path, monkeypatch):
    """Same seed, same steps, no dropout: the validation losses of fused and peft LoRA layers agree."""
    settings = {"max_steps": 4, "epochs": 10, "batch_size": 4, "eval_every": 2, "dtype": "float32", "val_limit": None}
    calls = []
    apply = LoraLinearFunction.apply
    monkeypatch.setattr(LoraLinearFunction, "apply", lambda *args: calls.append(1) or apply(*args))
    runs = {}
    for fused in (False, True):
        calls.clear()
        result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", {"dropout": 0.0}, tmp_path / str(fused),
                       TrainSettings(**settings, fused_lora=fused))
        runs[fused] = [loss for _, loss in result.val_losses]
        assert bool(calls) == fused
        assert not any("forward" in m.__dict__ for m in result.model.modules())  # peft's forward for generation
    assert runs[True] == pytest.approx(runs[False], rel=1e-4)
    assert runs[True][-1] < runs[True][0]


def test_gradient_checkpointing_replays_the_same_dropout(tiny_causal_dir, memo, tmp_path):
    """Recomputed layers draw the same dropped positions (torch's RNG state is replayed): same losses as without."""
    settings = {"max_steps": 4, "epochs": 10, "batch_size": 4, "eval_every": 2, "dtype": "float32", "val_limit": None}
    runs = {}
    for checkpointing in (False, True):
        result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "lora", {"dropout": 0.3}, tmp_path / str(checkpointing),
                       TrainSettings(**settings, gradient_checkpointing=checkpointing))
        runs[checkpointing] = [loss for _, loss in result.val_losses]
    assert runs[True] == pytest.approx(runs[False], rel=1e-5)


def test_autocast_to_another_dtype_falls_back_to_peft(tiny_causal_dir, monkeypatch):
    """An fp32 model under bf16 autocast: the fused function would mix dtypes, so peft's forward runs."""
    calls = []
    apply = LoraLinearFunction.apply
    monkeypatch.setattr(LoraLinearFunction, "apply", lambda *args: calls.append(1) or apply(*args))
    _, model = _wrapped(tiny_causal_dir)
    layers = use_fused_lora(model)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, labels=ids).loss.backward()
    assert not calls
    model(input_ids=ids, labels=ids).loss.backward()
    assert len(calls) == len(layers)


def test_other_torch_or_peft_releases_fall_back_to_peft_with_a_logged_reason(tiny_causal_dir, monkeypatch, caplog):
    from codepeft.training import fused_lora

    _, model = _wrapped(tiny_causal_dir)
    assert fused_lora.unverified_versions() is None  # the installed releases are the verified ones
    monkeypatch.setitem(fused_lora.VERIFIED, "peft", "0.1")
    with caplog.at_level("WARNING", logger=fused_lora.__name__):
        assert use_fused_lora(model) == []
    assert "verified on torch" in caplog.text and "peft 0.1.x" in caplog.text and "peft's own layers" in caplog.text
    assert not any("forward" in m.__dict__ or PACKED in m.__dict__ for m in model.modules())
