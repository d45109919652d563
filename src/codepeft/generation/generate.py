"""Batched decoding: greedy, beam search and sampling over a list of prompts, from one settings object.

Prompts are sorted by length and batched so each batch pads as little as possible (the original
order is restored), causal models are padded on the left with the attention mask and position ids
following the padding (a prompt-tuning model's prompts are padded as whole embeddings, virtual
tokens included, and decoded by its base model), and each sequence stops at EOS or at the first
stop string. Raw texts are returned; cutting at stops and extracting code is the caller's
postprocessing.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from codepeft.data.prompts import default_stops
from codepeft.generation.prompt_embeds import prompt_embedder
from codepeft.generation.settings import GenerationSettings
from codepeft.models.loading import LoadedModel


@dataclass
class Generated:
    """The candidates for one prompt: ``texts`` (n raw decodings), their token counts, the prompt's
    token count and this example's share of its batch's wall time."""

    texts: list[str]
    new_tokens: list[int]
    prompt_tokens: int
    seconds: float


BatchCallback = Callable[[list[int], list[Generated]], None]


def stop_strings(loaded: LoadedModel, settings: GenerationSettings) -> list[str]:
    """The settings' stop strings plus the prompt style's own (e.g. ``### Instruction`` blocks)."""
    stops = [*settings.stop, *default_stops(loaded.style)]
    return list(dict.fromkeys(s for s in stops if s))


def _eos_ids(loaded: LoadedModel) -> list[int]:
    ids: list[int] = []
    configured = loaded.model.generation_config.eos_token_id
    ids.extend(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if loaded.tokenizer.eos_token_id is not None:
        ids.append(loaded.tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


def generation_config(loaded: LoadedModel, settings: GenerationSettings) -> Any:
    """The transformers ``GenerationConfig`` for ``settings``, built on the model's own (EOS, pad, start ids)."""
    config = copy.deepcopy(loaded.model.generation_config)
    neutral = {"temperature": 1.0, "top_p": 1.0, "top_k": 50}
    common = {
        "max_new_tokens": settings.max_new_tokens,
        "eos_token_id": _eos_ids(loaded),
        "pad_token_id": loaded.tokenizer.pad_token_id,
        "num_return_sequences": settings.n,
        "repetition_penalty": 1.0,
        "length_penalty": 1.0,
        "no_repeat_ngram_size": 0,
    }
    if settings.strategy == "greedy":
        specific = {"do_sample": False, "num_beams": 1, **neutral}
    elif settings.strategy == "beam":
        specific = {"do_sample": False, "num_beams": settings.num_beams, "early_stopping": True, **neutral}
    else:
        # top_k=0 so that top_p alone truncates, as the settings say.
        specific = {"do_sample": True, "num_beams": 1, "temperature": settings.temperature,
                    "top_p": settings.top_p, "top_k": 0}
    config.update(**common, **specific)
    if config.max_length is not None:
        config.max_length = None  # max_new_tokens governs
    return config


def _encode(loaded: LoadedModel, prompts: Sequence[str]) -> list[list[int]]:
    # Chat templates already hold the BOS / special tokens; plain prompts get the tokenizer's own.
    add_special = loaded.style != "chat"
    return [loaded.tokenizer(p, add_special_tokens=add_special)["input_ids"] for p in prompts]


def _pad(loaded: LoadedModel, encoded: list[list[int]]) -> dict[str, Any]:
    import torch

    pad_id = loaded.tokenizer.pad_token_id
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    left = loaded.kind == "causal"  # a causal model continues from the last column, so pad before the prompt
    for row, ids in enumerate(encoded):
        start = width - len(ids) if left else 0
        input_ids[row, start:start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, start:start + len(ids)] = 1
    return {"input_ids": input_ids.to(loaded.model.device), "attention_mask": mask.to(loaded.model.device)}


def _prompt_tuning_embedder(loaded: LoadedModel) -> Any:
    """The ``PromptEmbedder`` of a prompt-tuning model, else None."""
    config = getattr(loaded.model, "active_peft_config", None)
    if loaded.kind != "causal" or getattr(config, "peft_type", None) != "PROMPT_TUNING":
        return None
    return prompt_embedder(loaded.model)


def _pad_embedded(loaded: LoadedModel, embedder: Any, encoded: list[list[int]]) -> dict[str, Any]:
    """A prompt-tuning batch for the base model: each prompt's own ``[virtual; embed(ids)]``, left-padded.

    peft's ``generate`` would put the virtual tokens before the padding and drop the position ids,
    so a padded prompt's positions would count its padding. Padding the prompts' whole embeddings
    lets transformers derive the positions from the mask (``cumsum - 1``) as for any causal model,
    and gives each prompt what vLLM is given. ``input_ids`` (pad ids for the virtual tokens) keep
    the prompt in the returned sequences, so stop strings see it as on the other paths."""
    import torch

    virtual = len(embedder.virtual)
    inputs = _pad(loaded, [[loaded.tokenizer.pad_token_id] * virtual + ids for ids in encoded])
    rows = [embedder(ids) for ids in encoded]
    width = inputs["input_ids"].shape[1]
    embeds = torch.zeros((len(rows), width, rows[0].shape[1]), dtype=rows[0].dtype)
    for row, values in enumerate(rows):
        embeds[row, width - len(values):] = values  # pads stay zero: the mask hides them
    return {**inputs, "inputs_embeds": embeds.to(loaded.model.device)}


def _trim(tokens: list[int], eos: set[int], pad_id: int | None, skip_first: bool) -> list[int]:
    """New tokens up to and including the first EOS, without the padding of finished sequences."""
    if skip_first:
        tokens = tokens[1:]  # the decoder start token of an encoder-decoder
    for index, token in enumerate(tokens):
        if token in eos:
            return tokens[: index + 1]
    while tokens and pad_id is not None and tokens[-1] == pad_id:
        tokens = tokens[:-1]
    return tokens


def generate(
    loaded: LoadedModel,
    prompts: Sequence[str],
    settings: GenerationSettings,
    on_batch: BatchCallback | None = None,
    *,
    sort_by_length: bool = True,
    backend: Any = None,
) -> list[Generated]:
    """Generate ``settings.n`` candidates for every prompt, in the prompts' order.

    ``on_batch(indices, generated)`` is called after each batch with the prompt indices it covered,
    so callers can save results and show progress as batches finish. ``settings.backend`` picks the
    engine (``backend``: a ``BackendChoice`` already made by the caller); vLLM loads the model from
    its directory on disk, so changes made to ``loaded.model`` in memory are not seen there.
    """
    import torch

    if settings.backend != "hf" or backend is not None:
        from codepeft.generation.backends import choose_backend

        backend = backend or choose_backend(settings.backend, loaded.identity, strategy=settings.strategy)
        if backend.name == "vllm":
            from codepeft.generation.vllm_backend import generate_vllm

            return generate_vllm(loaded, prompts, settings, backend, on_batch)

    encoded = _encode(loaded, prompts)
    order = list(range(len(prompts)))
    if sort_by_length:
        # Longest first: similar lengths share a batch (little padding) and memory peaks show up early.
        order.sort(key=lambda i: -len(encoded[i]))
    config = generation_config(loaded, settings)
    stops = stop_strings(loaded, settings)
    extra: dict[str, Any] = {"stop_strings": stops, "tokenizer": loaded.tokenizer} if stops else {}
    eos = set(_eos_ids(loaded))
    pad_id = loaded.tokenizer.pad_token_id
    embedder = _prompt_tuning_embedder(loaded)
    # prompt tuning: the base model decodes the prompts' embeddings (see _pad_embedded)
    model = loaded.model.get_base_model() if embedder is not None else loaded.model
    results: list[Generated | None] = [None] * len(prompts)
    for batch_number, start in enumerate(range(0, len(order), settings.batch_size)):
        indices = order[start:start + settings.batch_size]
        batch_ids = [encoded[i] for i in indices]
        inputs = _pad(loaded, batch_ids) if embedder is None else _pad_embedded(loaded, embedder, batch_ids)
        if settings.strategy == "sample":
            torch.manual_seed(settings.seed + batch_number)
        began = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, generation_config=config, **extra)
        seconds = time.perf_counter() - began
        sequences = output.sequences if hasattr(output, "sequences") else output
        if loaded.kind == "causal":
            sequences = sequences[:, inputs["input_ids"].shape[1]:]
        rows = sequences.tolist()
        batch: list[Generated] = []
        for position, index in enumerate(indices):
            candidates = rows[position * settings.n:(position + 1) * settings.n]
            trimmed = [_trim(c, eos, pad_id, loaded.kind == "seq2seq") for c in candidates]
            texts = [loaded.tokenizer.decode(t, skip_special_tokens=True) for t in trimmed]
            generated = Generated(texts, [len(t) for t in trimmed], len(encoded[index]), seconds / len(indices))
            results[index] = generated
            batch.append(generated)
        if on_batch is not None:
            on_batch(indices, batch)
    return [r for r in results if r is not None]
