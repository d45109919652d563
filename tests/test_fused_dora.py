"""Fused DoRA layers: peft's DoRA function and gradients, with a cheap weight norm and sparse dropout product."""

from __future__ import annotations

import pytest
import torch

from codepeft.training import TrainSettings, train
from codepeft.training.fused_dora import (
    STATE,
    DoraLinearFunction,
    dora_weight_norm,
    restore_dora,
    use_fused_dora,
)
from codepeft.training.fused_lora import drop_positions, pack_weight, use_fused_lora


def _wrapped(tiny_causal_dir, method="dora", params=None):
    from codepeft.methods import get_method
    from codepeft.models import load_model

    loaded = load_model(tiny_causal_dir, dtype="float32")
    chosen = get_method(method)
    return loaded, chosen.wrap(loaded, chosen.params(params))


def _dora_layers(model):
    from peft.tuners.lora.layer import Linear as LoraLinear

    return [m for m in model.modules() if isinstance(m, LoraLinear)]


def test_weight_norm_equals_peft_s(tiny_causal_dir):
    """||W + s B A|| per row from ||W||^2 and rank-r terms equals peft's get_weight_norm on the full matrix."""
    _, model = _wrapped(tiny_causal_dir)
    torch.manual_seed(0)
    for layer in _dora_layers(model)[:4]:
        lora_a, lora_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        with torch.no_grad():
            lora_b.normal_(std=0.5)  # B starts at zero; make the update matter
        weight, scaling = layer.base_layer.weight, layer.scaling["default"]
        want = layer.lora_magnitude_vector["default"].get_weight_norm(weight, (lora_b @ lora_a).detach(), scaling)
        got = dora_weight_norm(weight.float().pow(2).sum(1), weight, lora_a, lora_b, scaling)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _reference(x, weight, bias, lora_a, lora_b, magnitude, scaling, keep, keep_scale):
    """peft's DoRA formula, unfused, in float64: W x + b + (m/n - 1) W d(x) + (m/n) s B A d(x), n detached."""
    x64, a64, b64, m64 = (t.detach().double().requires_grad_() for t in (x, lora_a, lora_b, magnitude))
    w64 = weight.double()
    norm = torch.linalg.norm(w64 + scaling * (b64 @ a64), dim=1).detach()
    ratio = m64 / norm
    dropped_x = x64 * keep.view(x.shape) * keep_scale
    want = x64 @ w64.t() + (ratio - 1) * (dropped_x @ w64.t()) + ratio * (dropped_x @ a64.t() @ b64.t()) * scaling
    if bias is not None:
        want = want + bias.double()
    return want, (x64, a64, b64, m64)


@pytest.mark.parametrize("with_dropout", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dora_function_matches_the_unfused_formula(with_dropout, with_bias, packed, dtype):
    """Output and every gradient (input, A, B, magnitude) equal peft's formula computed unfused in float64."""
    torch.manual_seed(0)
    x = torch.randn(2, 19, 24, dtype=dtype, requires_grad=True)
    weight, bias = torch.randn(20, 24, dtype=dtype), (torch.randn(20, dtype=dtype) if with_bias else None)
    packed_weight = pack_weight(weight) if packed else None
    if packed and packed_weight is None:
        pytest.skip("this torch has no oneDNN weight packing")
    lora_a = torch.randn(4, 24, requires_grad=True)
    lora_b = (0.3 * torch.randn(20, 4)).requires_grad_()
    p, scaling = 0.3, 2.0
    norm = dora_weight_norm(weight.float().pow(2).sum(1), weight, lora_a, lora_b, scaling)
    magnitude = (norm * (1 + 0.2 * torch.randn(20))).requires_grad_()
    dropped = drop_positions(x.numel(), p) if with_dropout else None
    keep_scale = 1 / (1 - p) if with_dropout else 1.0
    weight_t = weight.t().contiguous() if with_dropout else None
    out = DoraLinearFunction.apply(x, weight, bias, lora_a, lora_b, magnitude, norm, scaling, dropped, keep_scale,
                                   weight_t, packed_weight)
    grad = torch.randn_like(out)
    out.backward(grad)

    keep = torch.ones(x.numel(), dtype=torch.float64)
    if dropped is not None:
        keep[dropped] = 0
    want, leaves = _reference(x, weight, bias, lora_a, lora_b, magnitude, scaling, keep, keep_scale)
    want.backward(grad.double())

    def close(got, ref):  # float32: exact up to rounding; bfloat16: relative to the tensor's size (8-bit mantissa)
        if dtype == torch.float32:
            torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)
        else:
            assert float((got.double() - ref).norm() / ref.norm()) < 2e-2

    assert out.dtype == dtype and x.grad.dtype == dtype
    close(out, want)
    for got, (ref, _) in zip((x.grad, lora_a.grad, lora_b.grad, magnitude.grad),
                             ((leaf.grad, leaf) for leaf in leaves), strict=True):
        close(got, ref)
    assert lora_a.grad.dtype == lora_b.grad.dtype == magnitude.grad.dtype == torch.float32


def test_dropout_path_equals_peft_s_layer_on_the_same_dropped_input(tiny_causal_dir):
    """In training with dropout, peft's layer is base(x) + its DoRA module on d(x): the fused function with the
    same dropped positions gives the same output and gradients."""
    _, model = _wrapped(tiny_causal_dir, params={"dropout": 0.3})
    layer = _dora_layers(model)[0]
    torch.manual_seed(1)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(std=0.3)
        layer.lora_magnitude_vector["default"].weight.mul_(1 + 0.1 * torch.randn(layer.out_features))
    x = torch.randn(3, 7, layer.in_features, requires_grad=True)
    p, dropped = 0.3, drop_positions(x.numel(), 0.3)
    keep = torch.ones(x.numel())
    keep[dropped] = 0
    params = [layer.lora_A["default"].weight, layer.lora_B["default"].weight,
              layer.lora_magnitude_vector["default"].weight]
    dora = layer.lora_magnitude_vector["default"]
    peft_out = layer.base_layer(x) + dora(x * keep.view(x.shape) / (1 - p), lora_A=layer.lora_A["default"],
                                          lora_B=layer.lora_B["default"], scaling=layer.scaling["default"],
                                          base_layer=layer.base_layer, base_result=None)
    grad = torch.randn_like(peft_out)
    want = [peft_out, *torch.autograd.grad(peft_out, [x, *params], grad)]
    weight = layer.base_layer.weight
    norm = dora_weight_norm(weight.pow(2).sum(1), weight, params[0], params[1], layer.scaling["default"])
    out = DoraLinearFunction.apply(x, weight, layer.base_layer.bias, *params, norm, layer.scaling["default"], dropped,
                                   1 / (1 - p), weight.t().contiguous(), pack_weight(weight))
    got = [out, *torch.autograd.grad(out, [x, *params], grad)]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_fused_dora_layers_give_peft_s_loss_and_gradients(tiny_causal_dir, memo):
    from codepeft.data import get_task
    from codepeft.training.data import collate, tokenize_all

    loaded, model = _wrapped(tiny_causal_dir)
    task = get_task(f"jsonl:{memo}")
    batch = collate(tokenize_all(task, task.load("train")[:4], loaded, 512), "grouped", True,
                    loaded.tokenizer.pad_token_id, 512)
    model.eval()  # no dropout: both ways compute the same function
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():  # lora_B starts at zero and m at n; make both matter
        if parameter.requires_grad:
            with torch.no_grad():
                if "magnitude" in name:
                    parameter.mul_(1 + 0.1 * torch.randn_like(parameter))
                else:
                    parameter.normal_(std=0.2)

    def loss_and_grads():
        model.zero_grad()
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    peft_loss, peft_grads = loss_and_grads()
    assert use_fused_lora(model) == []  # DoRA layers are not plain LoRA layers
    layers = use_fused_dora(model)
    assert len(layers) == len(_dora_layers(model)) > 0
    fused_loss, fused_grads = loss_and_grads()
    restore_dora(layers)
    assert all("forward" not in layer.__dict__ and STATE not in layer.__dict__ for layer in layers)
    assert fused_loss == pytest.approx(peft_loss, rel=1e-5)
    for got, want in zip(fused_grads, peft_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_plain_lora_layers_are_not_taken(tiny_causal_dir):
    _, model = _wrapped(tiny_causal_dir, "lora")
    assert use_fused_dora(model) == []


def test_training_with_fused_dora_follows_peft(tiny_causal_dir, memo, tmp_path, monkeypatch):
    """Same seed, same steps, no dropout: the validation losses of fused and peft DoRA layers agree."""
    settings = {"epochs": 10, "max_steps": 4, "batch_size": 4, "eval_every": 2, "dtype": "float32", "val_limit": None}
    calls = []
    apply = DoraLinearFunction.apply
    monkeypatch.setattr(DoraLinearFunction, "apply", lambda *args: calls.append(1) or apply(*args))
    runs = {}
    for fused in (False, True):
        calls.clear()
        result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "dora", {"dropout": 0.0}, tmp_path / str(fused),
                       TrainSettings(**settings, fused_lora=fused))
        runs[fused] = [loss for _, loss in result.val_losses]
        assert bool(calls) == fused
        assert not any("forward" in m.__dict__ for m in result.model.modules())  # peft's forward for generation
    assert runs[True] == pytest.approx(runs[False], rel=1e-4)
    assert runs[True][-1] < runs[True][0]


def test_dora_with_dropout_trains_and_checkpointing_replays_it(tiny_causal_dir, memo, tmp_path):
    """The dropout path learns, and gradient checkpointing recomputes the same dropped positions."""
    settings = {"epochs": 10, "max_steps": 4, "batch_size": 4, "eval_every": 2, "dtype": "float32", "val_limit": None}
    runs = {}
    for checkpointing in (False, True):
        result = train(str(tiny_causal_dir), [f"jsonl:{memo}"], "dora", {"dropout": 0.3}, tmp_path / str(checkpointing),
                       TrainSettings(**settings, gradient_checkpointing=checkpointing))
        runs[checkpointing] = [loss for _, loss in result.val_losses]
    assert runs[True] == pytest.approx(runs[False], rel=1e-5)
    assert runs[True][-1] < runs[True][0]


def test_weight_norm_stays_fp32_under_bf16_autocast():
    """Training runs the forward under bf16 autocast; the norm's rank-r products must not drop to bf16."""
    torch.manual_seed(0)
    weight, lora_a, lora_b = torch.randn(20, 24), torch.randn(4, 24), torch.randn(20, 4)
    want = dora_weight_norm(weight.pow(2).sum(1), weight, lora_a, lora_b, 2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dora_weight_norm(weight.pow(2).sum(1), weight, lora_a, lora_b, 2.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
