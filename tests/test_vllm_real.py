"""vLLM against transformers on the real smollm2-135m (slow; needs the vLLM environment, ``.venv-vllm``).

In fp32 greedy decoding the raw text of every prompt must be the same on both engines, for CoNaLa
and HumanEval prompts built as ``codepeft evaluate`` builds them; a user-supplied stop string must
end both at the same place. The same holds for a prompt-tuning adapter, which vLLM is given as
prompt embeddings.
"""

from __future__ import annotations

import pytest

from codepeft.data import get_task
from codepeft.generation import GenerationSettings, generate
from codepeft.generation.backends import vllm_installed
from codepeft.generation.vllm_backend import load_for_backend
from codepeft.methods.prompting import build_prompts
from codepeft.models import load_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # two engines on 24 prompts: ~2 minutes idle, far more on a busy machine
    pytest.mark.skipif(vllm_installed() is None,
                       reason="no vLLM environment (.venv-vllm): run `CODEPEFT_VLLM=1 scripts/setup`"),
]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _real_home(real_home, monkeypatch):
    monkeypatch.setenv("CODEPEFT_HOME", str(real_home))


@pytest.fixture(scope="module")
def smollm(real_home):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODEPEFT_HOME", str(real_home))
        yield load_model("smollm2-135m", dtype="float32")


def _prompts(loaded, data_dir, counts: dict[str, int]) -> list[tuple[str, str]]:
    """(id, prompt) for the first examples of each task's test split."""
    out = []
    for name, count in counts.items():
        task = get_task(name, data_dir)
        queries = task.load("test")[:count]
        built = build_prompts(task, queries, [[]] * len(queries), loaded.tokenizer, loaded.style, None)
        out += [(f"{name}:{q.id}", b.text) for q, b in zip(queries, built, strict=True)]
    return out


def _compare(loaded, items: list[tuple[str, str]], settings: GenerationSettings) -> list[str]:
    prompts = [text for _, text in items]
    reference = generate(loaded, prompts, settings.model_copy(update={"backend": "hf"}))
    candidate = generate(loaded, prompts, settings.model_copy(update={"backend": "vllm"}))
    assert all(g.new_tokens[0] > 0 for g in candidate)
    return [f"{key}: {a.texts[0]!r} != {b.texts[0]!r}"
            for (key, _), a, b in zip(items, reference, candidate, strict=True) if a.texts != b.texts]


def test_vllm_fp32_greedy_raw_text_equals_transformers(smollm, data_dir):
    items = _prompts(smollm, data_dir, {"conala": 16, "humaneval": 8})
    differing = _compare(smollm, items, GenerationSettings(max_new_tokens=96, batch_size=8))
    assert not differing, "\n".join(differing)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU (and the CUDA `vllm` package in .venv-vllm)")
def test_vllm_fp32_greedy_on_cuda_equals_transformers(data_dir, real_home):
    loaded = load_model("smollm2-135m", dtype="float32")
    loaded.model.to("cuda")
    items = _prompts(loaded, data_dir, {"conala": 32, "humaneval": 16})
    differing = _compare(loaded, items, GenerationSettings(max_new_tokens=128, batch_size=16))
    assert not differing, "\n".join(differing)


@pytest.fixture(scope="module")
def prompt_tuned(real_home, memo, tmp_path_factory):
    """A prompt-tuning adapter (8 virtual tokens) trained a few steps on smollm2-135m."""
    from codepeft.training import TrainSettings, train

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODEPEFT_HOME", str(real_home))
        result = train("smollm2-135m", f"jsonl:{memo}", "prompt-tuning", {"num_virtual_tokens": 8},
                       tmp_path_factory.mktemp("prompt-tuning"),
                       TrainSettings(max_steps=3, batch_size=4, eval_every=3, dtype="float32", val_limit=None))
    return result.adapter_dir


def _rate(results) -> float:
    return sum(g.new_tokens[0] for g in results) / sum(g.seconds for g in results)


def test_vllm_prompt_tuning_fp32_greedy_raw_text_equals_transformers(prompt_tuned, data_dir):
    settings = GenerationSettings(max_new_tokens=64, batch_size=8)
    light, choice = load_for_backend("smollm2-135m", "vllm", dtype="float32", adapter=prompt_tuned, threads=None)
    assert choice.name == "vllm" and choice.prompt_embeds
    items = _prompts(light, data_dir, {"conala": 8, "humaneval": 4})
    prompts = [text for _, text in items]
    candidate = generate(light, prompts, settings.model_copy(update={"backend": "vllm"}), backend=choice)
    loaded = load_model("smollm2-135m", dtype="float32", adapter=prompt_tuned)
    # batched and left-padded on transformers: each prompt still decodes as its unpadded embeddings
    reference = generate(loaded, prompts, settings.model_copy(update={"backend": "hf"}))
    print(f"prompt tuning, new tokens/s: transformers {_rate(reference):.1f}, vLLM {_rate(candidate):.1f}")
    assert all(g.new_tokens[0] > 0 for g in candidate)
    differing = [f"{key}: {a.texts[0]!r} != {b.texts[0]!r}"
                 for (key, _), a, b in zip(items, reference, candidate, strict=True) if a.texts != b.texts]
    assert not differing, "\n".join(differing)


@pytest.fixture(scope="module")
def qlora_tuned(real_home, memo, tmp_path_factory):
    """A QLoRA 8-bit adapter trained a few steps on smollm2-135m (bf16 base, as QLoRA trains here)."""
    from codepeft.models.quantization import bitsandbytes_problem
    from codepeft.training import TrainSettings, train

    if problem := bitsandbytes_problem():
        pytest.skip(f"qlora-8bit cannot run on this machine: {problem}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODEPEFT_HOME", str(real_home))
        result = train("smollm2-135m", f"jsonl:{memo}", "qlora-8bit", {"lr": 1e-3}, tmp_path_factory.mktemp("qlora"),
                       TrainSettings(max_steps=3, batch_size=4, eval_every=3, dtype="bfloat16", val_limit=None))
    return result.adapter_dir


def test_vllm_qlora_fp32_greedy_raw_text_equals_transformers(qlora_tuned, data_dir):
    """A QLoRA adapter merged into its base's dequantized 8-bit weights (what vLLM loads) decodes as the same
    dequantized model with the adapter attached does on transformers."""
    settings = GenerationSettings(max_new_tokens=64, batch_size=8)
    light, choice = load_for_backend("smollm2-135m", "vllm", dtype="float32", adapter=qlora_tuned, threads=None)
    assert choice.name == "vllm" and "qlora-8bit adapter merged" in choice.reason
    assert light.identity["dequantized_from"] == "8bit"
    items = _prompts(light, data_dir, {"conala": 8, "humaneval": 4})
    prompts = [text for _, text in items]
    candidate = generate(light, prompts, settings.model_copy(update={"backend": "vllm"}), backend=choice)
    loaded, hf = load_for_backend("smollm2-135m", "hf", dtype="float32", adapter=qlora_tuned, threads=None)
    reference = generate(loaded, prompts, settings.model_copy(update={"backend": "hf"}), backend=hf)
    assert all(g.new_tokens[0] > 0 for g in candidate)
    differing = [f"{key}: {a.texts[0]!r} != {b.texts[0]!r}"
                 for (key, _), a, b in zip(items, reference, candidate, strict=True) if a.texts != b.texts]
    assert not differing, "\n".join(differing)
