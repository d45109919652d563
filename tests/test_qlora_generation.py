"""QLoRA adapters at generation: on their base's quantized weights, dequantized, so they merge and vLLM loads them."""

from __future__ import annotations

import json

import pytest
import torch

from codepeft.models.quantization import bitsandbytes_problem
from test_generation_backends import fake_vllm  # noqa: F401  (the stand-in vLLM environment fixture)

pytestmark = pytest.mark.skipif(bool(bitsandbytes_problem()), reason=f"bitsandbytes: {bitsandbytes_problem()}")


@pytest.fixture(scope="module", params=["qlora-8bit", "qlora-4bit"])
def qlora_adapter(request, memo, tiny_wide_causal_dir, tmp_path_factory):
    from codepeft.training import TrainSettings, train

    out = tmp_path_factory.mktemp(request.param)
    settings = TrainSettings(max_steps=3, batch_size=4, eval_every=3, dtype="bfloat16", val_limit=None)
    train(str(tiny_wide_causal_dir), [f"jsonl:{memo}"], request.param, {"lr": 3e-2, "r": 4}, out, settings)
    return request.param, out / "adapter"


@pytest.fixture(autouse=True)
def _own_merge_cache(tmp_path, monkeypatch):
    """Merged checkpoints go to this test's own home: other tests count the checkpoints in the shared one."""
    monkeypatch.setenv("CODEPEFT_HOME", str(tmp_path / "codepeft-home"))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_a_qlora_adapter_generates_on_its_dequantized_base(qlora_adapter, tiny_wide_causal_dir):
    """No bitsandbytes layer is left, the identity says where the weights came from, and the model computes
    what the quantized base with the adapter computes in training (dequantized weights, dropout off)."""
    from codepeft.generation.vllm_backend import load_for_backend
    from codepeft.models import attach_adapter, load_model

    method, adapter = qlora_adapter
    loaded, choice = load_for_backend(str(tiny_wide_causal_dir), "hf", dtype="float32", adapter=adapter, threads=1)
    assert choice.name == "hf"
    assert loaded.identity["quantization"] is None and loaded.identity["dequantized_from"] == method[-4:]
    assert loaded.identity["adapter_method"] == method and loaded.identity["dtype"] == "float32"
    assert not any(type(m).__name__ in ("Linear8bitLt", "Linear4bit") for m in loaded.model.modules())

    quantized = attach_adapter(load_model(str(tiny_wide_causal_dir), dtype="bfloat16", quantization=method[-4:]),
                               adapter)
    quantized.model.train()  # bitsandbytes' training formula: the weights dequantized
    for module in quantized.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids = torch.randint(3, 60, (2, 10), generator=torch.Generator().manual_seed(0))
    got, want = _logits(loaded.model, ids), _logits(quantized.model, ids)
    assert float((got - want).norm() / want.norm()) < 2e-2  # bf16 products against fp32 ones


def test_the_merged_qlora_checkpoint_is_a_plain_model_with_the_same_outputs(qlora_adapter, tiny_wide_causal_dir):
    """What vLLM loads: the adapter merged into the dequantized weights, saved without a quantization config;
    a dequantized merge gets its own cache key, apart from a merge on the unquantized base."""
    from safetensors.torch import load_file

    from codepeft.generation.vllm_backend import _load_dequantized, merged_checkpoint
    from codepeft.models import load_model

    method, adapter = qlora_adapter
    base = {"quantization": method[-4:], "dtype": "bfloat16"}
    unmerged = _load_dequantized(str(tiny_wide_causal_dir), base, "float32", adapter, False, 1)
    merged = _load_dequantized(str(tiny_wide_causal_dir), base, "float32", adapter, True, 1)
    directory = merged_checkpoint(merged)
    assert "quantization_config" not in json.loads((directory / "config.json").read_text())
    reloaded = load_model(directory, dtype="float32")
    ids = torch.randint(3, 60, (2, 10), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(reloaded.model, ids), _logits(unmerged.model, ids), rtol=1e-4, atol=1e-4)
    plain = load_model(str(tiny_wide_causal_dir), dtype="float32", adapter=adapter, merge=True)
    plain_directory = merged_checkpoint(plain)
    assert plain_directory != directory
    # the same tensors (names, shapes, dtypes) as a merge on the unquantized base: vLLM loads it alike
    saved, expected = (load_file(d / "model.safetensors") for d in (directory, plain_directory))
    assert {k: (v.shape, v.dtype) for k, v in saved.items()} == {k: (v.shape, v.dtype) for k, v in expected.items()}


def test_evaluate_runs_a_qlora_adapter_on_vllm(qlora_adapter, fake_vllm, tiny_wide_causal_dir, data_dir,  # noqa: F811
                                               tmp_path):
    """Through ``codepeft evaluate``'s function with vLLM available: the merged dequantized checkpoint is
    what the engine loads, and the run records where its weights came from."""
    from codepeft.generation.evaluate import evaluate
    from codepeft.generation.settings import GenerationSettings

    method, adapter = qlora_adapter
    run = evaluate(str(tiny_wide_causal_dir), "conala", run_dir=tmp_path / "run", limit=2, data_dir=data_dir,
                   settings=GenerationSettings(max_new_tokens=4, backend="auto"), adapter=adapter)
    config = json.loads((run / "config.json").read_text())
    assert config["backend"]["name"] == "vllm" and f"{method} adapter merged" in config["backend"]["reason"]
    engines = [json.loads(line)["engine"]["model"] for line in fake_vllm.read_text().splitlines() if "engine" in line]
    assert engines == [config["backend"]["model_dir"]]
    assert json.dumps(config).count(f'"dequantized_from": "{method[-4:]}"') >= 1
