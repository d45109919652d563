"""The real packaged smollm2-135m (slow: run with ``-m slow``): conversion cache, chat style, targets,
fp32 batched greedy identical to batch-of-one, and a small evaluate run on CoNaLa."""

from __future__ import annotations

import json

import pytest

from codepeft.data import get_task
from codepeft.generation import GenerationSettings, evaluate, generate
from codepeft.methods.prompting import build_prompts
from codepeft.models import find_target_modules, load_model, resolve_model_path
from codepeft.rundir import read_generations

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm(real_home):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODEPEFT_HOME", str(real_home))
        yield load_model("smollm2-135m", dtype="float32")


@pytest.fixture(autouse=True)
def _real_home(real_home, monkeypatch):
    monkeypatch.setenv("CODEPEFT_HOME", str(real_home))


def test_packaged_model_is_converted_once_and_reused(smollm, real_home):
    path = resolve_model_path("smollm2-135m")
    assert path == real_home / "models" / "smollm2-135m" and path == resolve_model_path("smollm2-135m")
    assert (path / "model.safetensors").is_file() and (path / "chat_template.jinja").is_file()
    assert smollm.kind == "causal" and smollm.style == "chat"
    assert smollm.identity["architecture"] == "LlamaForCausalLM"
    assert 130e6 < smollm.identity["num_parameters"] < 140e6
    targets = find_target_modules(smollm.model)
    assert targets.attention == ["k_proj", "o_proj", "q_proj", "v_proj"] and targets.excluded == ["lm_head"]


def test_fp32_batched_greedy_equals_batch_of_one(smollm, data_dir):
    task = get_task("conala", data_dir)
    queries = task.load("test")[:6]
    prompts = [p.text for p in build_prompts(task, queries, [[]] * 6, smollm.tokenizer, smollm.style, None)]
    settings = GenerationSettings(max_new_tokens=40, batch_size=6)
    batched = generate(smollm, prompts, settings)
    one = generate(smollm, prompts, settings.model_copy(update={"batch_size": 1}))
    assert [g.texts for g in batched] == [g.texts for g in one]
    assert all(g.texts[0].strip() for g in batched)


def test_evaluate_on_conala(smollm, data_dir, tmp_path):
    settings = GenerationSettings(max_new_tokens=48, batch_size=4)
    run = evaluate(smollm, "conala", run_dir=tmp_path / "run", limit=4, data_dir=data_dir, settings=settings)
    records = read_generations(run).records
    assert len(records) == 4
    assert all(r["prompt"].startswith("<|im_start|>") and r["candidates"][0] for r in records)
    assert all("```" not in r["candidates"][0] for r in records)  # code fences are stripped
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["spec"] == "smollm2-135m" and config["prompt_style"] == "chat"
