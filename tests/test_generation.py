"""Batched decoding on tiny random models: batching never changes greedy output; beams, samples, stops."""

from __future__ import annotations

import pytest
import torch

from codepeft.data.postprocess import cut_at_stop
from codepeft.generation import GenerationSettings, generate
from codepeft.generation.generate import generation_config
from codepeft.models import load_model

INTENTS = [
    "sort a list",
    "reverse a list lst in place and print it",
    "open file read json",
    "x",
    "convert a string to an integer, then add one to it and return the result of the whole computation",
    "import os",
    "def add(a, b)",
]


def spiky(loaded, seed: int = 0):
    """Re-draw the tiny model's weights with a large scale: a freshly initialised model predicts nearly
    uniform logits and repeats one token, which would let padding bugs go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.4)
    return loaded


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Tiny models gain nothing from threads, and on a shared, busy CPU two threads spin-wait 10x slower."""
    monkeypatch.setenv("CODEPEFT_THREADS", "1")


@pytest.fixture(scope="module")
def causal(tiny_causal_dir):
    return spiky(load_model(tiny_causal_dir, dtype="float32", threads=1))


@pytest.fixture(scope="module")
def base(tiny_base_dir):
    return spiky(load_model(tiny_base_dir, dtype="float32", threads=1), seed=1)


@pytest.fixture(scope="module")
def seq2seq(tiny_seq2seq_dir):
    return spiky(load_model(tiny_seq2seq_dir, dtype="float32", threads=1), seed=2)


def chat_prompts(loaded):
    return [loaded.tokenizer.apply_chat_template([{"role": "user", "content": intent}], tokenize=False,
                                                 add_generation_prompt=True) for intent in INTENTS]


@pytest.mark.parametrize("fixture", ["causal", "base", "seq2seq"])
def test_batched_greedy_equals_batch_of_one(fixture, request):
    loaded = request.getfixturevalue(fixture)
    prompts = chat_prompts(loaded) if fixture == "causal" else INTENTS
    settings = GenerationSettings(max_new_tokens=24, batch_size=4)
    batched = generate(loaded, prompts, settings)
    unbatched = generate(loaded, prompts, settings.model_copy(update={"batch_size": 1}))
    unsorted = generate(loaded, prompts, settings, sort_by_length=False)
    assert [g.texts for g in batched] == [g.texts for g in unbatched] == [g.texts for g in unsorted]
    assert len({g.texts[0] for g in batched}) > 1, "outputs must differ between prompts for this test to mean much"
    for generated, prompt in zip(batched, prompts, strict=True):
        assert len(generated.texts) == 1 and 0 < generated.new_tokens[0] <= 24
        add_special = fixture != "causal"
        assert generated.prompt_tokens == len(loaded.tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
        assert generated.seconds > 0


def test_on_batch_reports_each_batch_in_length_order(causal):
    prompts = chat_prompts(causal)
    seen: list[list[int]] = []
    results = generate(causal, prompts, GenerationSettings(max_new_tokens=4, batch_size=3),
                       on_batch=lambda indices, batch: seen.append(indices))
    assert sorted(i for batch in seen for i in batch) == list(range(len(prompts)))
    assert [len(b) for b in seen] == [3, 3, 1]
    lengths = [results[i].prompt_tokens for batch in seen for i in batch]
    assert lengths == sorted(lengths, reverse=True)


@pytest.mark.parametrize("fixture", ["causal", "seq2seq"])
def test_beam_returns_k_distinct_candidates(fixture, request):
    loaded = request.getfixturevalue(fixture)
    settings = GenerationSettings(strategy="beam", n=3, num_beams=4, max_new_tokens=12, batch_size=2)
    results = generate(loaded, INTENTS[:3], settings)
    for generated in results:
        assert len(generated.texts) == 3 == len(set(generated.texts)) == len(generated.new_tokens)
    one = generate(loaded, INTENTS[:3], settings.model_copy(update={"batch_size": 1}))
    assert [g.texts for g in one] == [g.texts for g in results]


def test_sampling_is_reproducible_with_the_seed(causal):
    settings = GenerationSettings(strategy="sample", n=4, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=7)
    first = generate(causal, INTENTS[:3], settings)
    again = generate(causal, INTENTS[:3], settings)
    other = generate(causal, INTENTS[:3], settings.model_copy(update={"seed": 8}))
    assert [g.texts for g in first] == [g.texts for g in again]
    assert [g.texts for g in first] != [g.texts for g in other]
    assert all(len(g.texts) == 4 for g in first)
    assert any(len(set(g.texts)) > 1 for g in first)


def test_settings_map_to_transformers_config(causal):
    sample = generation_config(causal, GenerationSettings(strategy="sample", n=2, temperature=0.5, top_p=0.7))
    assert (sample.do_sample, sample.temperature, sample.top_p, sample.top_k, sample.num_return_sequences) == \
        (True, 0.5, 0.7, 0, 2)
    beam = generation_config(causal, GenerationSettings(strategy="beam", n=2, num_beams=5, max_new_tokens=9))
    assert (beam.do_sample, beam.num_beams, beam.max_new_tokens) == (False, 5, 9)
    assert causal.tokenizer.eos_token_id in beam.eos_token_id


def test_stop_sequences_end_generation_early_and_are_cut(causal):
    prompts = chat_prompts(causal)[:3]
    free = generate(causal, prompts, GenerationSettings(max_new_tokens=24))
    text = free[0].texts[0]
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert stop.strip(), text
    stopped = generate(causal, prompts, GenerationSettings(max_new_tokens=24, stop=[stop]))
    first = stopped[0]
    assert first.new_tokens[0] < free[0].new_tokens[0]
    assert stop in first.texts[0]
    assert cut_at_stop(first.texts[0], [stop]) == text[: text.index(stop)]
    for before, after in zip(free[1:], stopped[1:], strict=True):  # other prompts unaffected unless they hit it
        if stop not in before.texts[0]:
            assert before.texts == after.texts


def test_instruction_style_stops_at_a_new_block(base):
    """Base models get ``### Instruction`` as a default stop, so a continued demonstration is never scored."""
    from codepeft.generation.generate import stop_strings

    assert "\n### Instruction" in stop_strings(base, GenerationSettings())


def _prompt_learning(model_dir, method: str):
    """A prompt-learning adapter (4 virtual tokens) on the tiny chat model, its weights made spiky."""
    from dataclasses import replace

    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    loaded = load_model(model_dir, dtype="float32", threads=1)
    config = {"prompt-tuning": PromptTuningConfig, "prefix-tuning": PrefixTuningConfig}[method]
    model = get_peft_model(loaded.model, config(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    return spiky(replace(loaded, model=model), seed=3)


@pytest.fixture(scope="module")
def prompt_tuned(tiny_causal_dir):
    return _prompt_learning(tiny_causal_dir, "prompt-tuning")


@pytest.fixture(scope="module")
def prefix_tuned(tiny_causal_dir):
    return _prompt_learning(tiny_causal_dir, "prefix-tuning")


@pytest.mark.parametrize("fixture", ["prompt_tuned", "prefix_tuned"])
def test_prompt_learning_batched_greedy_and_beams_equal_batch_of_one(fixture, request):
    """Virtual tokens or prefixes must not see the left padding: a prompt's output is its own."""
    loaded = request.getfixturevalue(fixture)
    prompts = chat_prompts(loaded)
    greedy = GenerationSettings(max_new_tokens=24, batch_size=4)
    batched = generate(loaded, prompts, greedy)
    assert [g.texts for g in batched] == [g.texts for g in generate(loaded, prompts, greedy.model_copy(
        update={"batch_size": 1}))] == [g.texts for g in generate(loaded, prompts, greedy, sort_by_length=False)]
    assert len({g.texts[0] for g in batched}) > 1
    beam = GenerationSettings(strategy="beam", n=2, num_beams=3, max_new_tokens=12, batch_size=4)
    beams = generate(loaded, prompts, beam)
    assert [g.texts for g in beams] == [g.texts for g in generate(loaded, prompts, beam.model_copy(
        update={"batch_size": 1}))]
    assert all(len(g.texts) == 2 for g in beams)


def test_prompt_tuning_decodes_each_prompts_own_embeddings_as_vllm_is_given_them(prompt_tuned):
    """Batched and left-padded, every prompt decodes as its unpadded ``[virtual; embed(ids)]`` alone,
    which is what the vLLM path sends."""
    from codepeft.generation.generate import _trim
    from codepeft.generation.vllm_backend import prompt_embedder

    prompts = chat_prompts(prompt_tuned)
    settings = GenerationSettings(max_new_tokens=24, batch_size=4)
    batched = generate(prompt_tuned, prompts, settings)
    base, embedder = prompt_tuned.model.get_base_model(), prompt_embedder(prompt_tuned.model)
    config, eos = generation_config(prompt_tuned, settings), {prompt_tuned.tokenizer.eos_token_id}
    for prompt, generated in zip(prompts, batched, strict=True):
        embeds = embedder(prompt_tuned.tokenizer(prompt, add_special_tokens=False)["input_ids"])[None]
        with torch.inference_mode():  # only the new tokens come back when only embeddings go in
            tokens = base.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                   generation_config=config)[0].tolist()
        assert prompt_tuned.tokenizer.decode(_trim(tokens, eos, None, False), skip_special_tokens=True) == \
            generated.texts[0]
