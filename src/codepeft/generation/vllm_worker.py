"""The vLLM side of ``backend=vllm``: run by the vLLM environment's python, never imported by codepeft.

vLLM pins its own torch/transformers, so it lives in a virtual environment of its own
(``.venv-vllm``) and this file is its only contact with codepeft: it imports nothing but the
standard library and vLLM (and safetensors, which vLLM installs). It reads one JSON request (path
given as the first argument): the model directory, dtype, prompt token ids (tokenized by codepeft
with the same tokenizer as the transformers path) and the decoding settings. For a prompt-tuning
adapter the request also names a safetensors file holding each prompt's embeddings (key: the
prompt's index), which are fed to the engine instead of the token ids. It writes one JSON line per
chunk of prompts to stdout,
``{"indices": [i, ...], "tokens": [[[ids of candidate 1], ...], ...], "seconds": s}``, so the caller
can save progress, after a first ``{"ready": true, "startup_seconds": s}`` and before a last
``{"done": true}``. Decoding the ids into text, trimming at EOS and cutting at stop strings stay in
codepeft, so both backends share them. vLLM's own logs go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

#: tokens vLLM may schedule in one step (at least the context length, as unchunked prefill requires)
MIN_BATCHED_TOKENS = 8192


def _engine(request: dict[str, Any]) -> Any:
    from vllm import LLM

    on_cpu = not _cuda()
    # On CPU vLLM reads this share of host RAM as "GPU memory"; its default (0.9+) refuses to start on a
    # shared machine. The KV cache itself is VLLM_CPU_KVCACHE_SPACE GiB (set by the caller).
    memory = request.get("memory_utilization") or (0.15 if on_cpu else 0.85)
    extra = {"enable_prompt_embeds": True} if request.get("prompt_embeds") else {}
    context = request.get("max_model_len")
    # Whole prompts per step: with chunked prefill, vLLM 0.32 on CPU crashes on seeded sampling
    # ("CPU Generator does not use offset") once a prompt is split across steps, which many sequences
    # in flight make certain; the step budget must then hold the longest prompt, so the context is needed.
    whole_prompts = {"enable_chunked_prefill": False,
                     "max_num_batched_tokens": max(context, MIN_BATCHED_TOKENS)} if context else {}
    return LLM(
        model=request["model"],
        tokenizer=request.get("tokenizer") or request["model"],
        dtype=request.get("dtype", "float32"),
        enforce_eager=True,  # compiled graphs start 4x slower and decode no faster on CPU (measured)
        gpu_memory_utilization=memory,
        max_model_len=context,
        max_num_seqs=request.get("max_num_seqs") or 256,
        **whole_prompts,
        seed=request.get("seed", 0),
        trust_remote_code=False,
        **extra,
    )


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return False


def _sampling_params(request: dict[str, Any], index: int) -> Any:
    from vllm import SamplingParams

    common = {
        "n": request["n"],
        "max_tokens": request["max_new_tokens"],
        "stop": request.get("stop") or None,
        "stop_token_ids": request.get("eos_ids") or None,
        "skip_special_tokens": True,
        "repetition_penalty": 1.0,
        "detokenize": True,  # stop strings are matched on the detokenized text
    }
    if request["strategy"] == "greedy":
        return SamplingParams(temperature=0.0, **common)
    # top_k disabled so that top_p alone truncates, as on the transformers path; one seed per prompt
    # (codepeft derives it from the run's seed and the prompt) so its samples do not depend on the batch.
    return SamplingParams(temperature=request["temperature"], top_p=request["top_p"], top_k=0,
                          seed=request["seeds"][index], **common)


def _prompts(request: dict[str, Any], indices: list[int], embeds: Any) -> list[dict[str, Any]]:
    if embeds is None:
        return [{"prompt_token_ids": request["prompts"][i]} for i in indices]
    # the generated token ids vLLM returns for an embeddings prompt are the new tokens only, as for ids
    return [{"prompt_embeds": embeds.get_tensor(str(i))} for i in indices]


def _generate(llm: Any, request: dict[str, Any], indices: list[int], embeds: Any = None) -> list[list[list[int]]]:
    prompts = _prompts(request, indices, embeds)
    if request["strategy"] == "beam":  # never with embeddings: vLLM's beam search refuses them
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(beam_width=request["num_beams"], max_tokens=request["max_new_tokens"],
                                  length_penalty=1.0)
        outputs = llm.beam_search(prompts, params)
        return [[seq.tokens[len(request["prompts"][i]):] for seq in out.sequences[: request["n"]]]
                for i, out in zip(indices, outputs, strict=True)]
    params = [_sampling_params(request, i) for i in indices]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [[list(c.token_ids) for c in out.outputs] for out in outputs]


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as handle:
        request = json.load(handle)
    # Results go to the real stdout; everything else that prints there (vLLM's logger, its worker
    # processes, C extensions) is sent to stderr so it cannot break the JSON lines.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    began = time.perf_counter()
    llm = _engine(request)
    startup = time.perf_counter() - began
    print(json.dumps({"ready": True, "startup_seconds": startup}), file=out, flush=True)
    with contextlib.ExitStack() as stack:
        embeds = None
        if request.get("prompt_embeds"):
            from safetensors import safe_open  # read a chunk's tensors at a time, not the whole file

            embeds = stack.enter_context(safe_open(request["prompt_embeds"], framework="pt"))
        _decode_chunks(llm, request, embeds, out)
    print(json.dumps({"done": True}), file=out, flush=True)
    return 0


def _decode_chunks(llm: Any, request: dict[str, Any], embeds: Any, out: Any) -> None:
    chunk = max(1, int(request.get("chunk") or len(request["prompts"])))
    order = list(range(len(request["prompts"])))
    for start in range(0, len(order), chunk):
        indices = order[start:start + chunk]
        chunk_began = time.perf_counter()
        tokens = _generate(llm, request, indices, embeds)
        seconds = time.perf_counter() - chunk_began
        print(json.dumps({"indices": indices, "tokens": tokens, "seconds": seconds}), file=out, flush=True)


def _die_with_parent() -> None:
    """End this worker and vLLM's engine processes (its process group) when codepeft dies.

    codepeft stops the group itself when it can; a SIGTERM or SIGKILL of codepeft runs none of its
    code, and vLLM's engine core and worker would keep running (seen: a killed study left them
    decoding for minutes). Linux's parent-death signal covers that case.
    """
    import ctypes
    import signal

    parent = os.getppid()

    def stop_group(_signum: int, _frame: Any) -> None:
        os.killpg(os.getpgid(0), signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop_group)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: codepeft's own cleanup is all there is
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        stop_group(signal.SIGTERM, None)


if __name__ == "__main__":
    # vLLM starts its workers by spawn; they re-import this file as a module, so the engine is only
    # created here, never at import.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    _die_with_parent()
    sys.exit(main(sys.argv[1:]))
