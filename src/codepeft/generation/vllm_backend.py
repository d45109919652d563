"""Decoding on vLLM: a subprocess in the vLLM environment runs ``vllm_worker.py``; this side tokenizes,
trims and decodes with the same code as the transformers path, so only the engine differs.

Also prepares what vLLM loads for an adapter run: LoRA/DoRA/IA3 adapters are merged into the
weights once and the merged checkpoint is cached under ``$CODEPEFT_HOME/merged``. A prompt-tuning
adapter cannot be merged: vLLM loads the base and is given each prompt as embeddings, built here as
peft's ``generate`` builds them (the virtual tokens, then the prompt's token embeddings).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from codepeft.errors import CodepeftError
from codepeft.generation.backends import BackendChoice
from codepeft.generation.generate import BatchCallback, Generated, _encode, _eos_ids, _trim, stop_strings
from codepeft.generation.prompt_embeds import prompt_embedder
from codepeft.generation.settings import GenerationSettings
from codepeft.models.loading import LoadedModel

WORKER = Path(__file__).with_name("vllm_worker.py")
#: KV cache of the vLLM engine on CPU, GiB (``VLLM_CPU_KVCACHE_SPACE``); override with $CODEPEFT_VLLM_KV_GIB
DEFAULT_KV_GIB = "2"
#: prompts per engine call on the vLLM path: large enough to keep its continuous batching full, small
#: enough that a killed run loses little (each chunk is saved when it finishes)
MIN_CHUNK = 128
#: sequences vLLM's scheduler runs at once (its own default): the transformers path's ``batch_size`` is not
#: a limit here, since continuous batching is where vLLM's speed comes from (2.56x at 128 against 1.70x
#: at 16 on 2 CPU cores, outputs identical in fp32; benchmarks/README.md)
VLLM_MAX_NUM_SEQS = 256
#: how long a worker whose results are all in may take to stop its engines before its group is killed
SHUTDOWN_GRACE_SECONDS = 60
#: the prompt embeddings of a prompt-tuning run, one tensor per prompt index, next to the request
EMBEDS_FILE = "prompt_embeds.safetensors"


def _request(loaded: LoadedModel, choice: BackendChoice, encoded: list[list[int]],
             settings: GenerationSettings, stops: list[str]) -> dict[str, Any]:
    return {
        "model": choice.model_dir,
        "tokenizer": choice.model_dir,
        "dtype": loaded.identity.get("dtype", "float32"),
        "prompts": encoded,
        "strategy": settings.strategy,
        "n": settings.n,
        "num_beams": settings.num_beams,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_new_tokens": settings.max_new_tokens,
        "stop": stops,
        "eos_ids": _eos_ids(loaded),
        "seed": settings.seed,
        "seeds": [prompt_seed(settings.seed, ids) for ids in encoded],
        "max_model_len": loaded.context_length,
        "max_num_seqs": max(settings.batch_size, VLLM_MAX_NUM_SEQS),
        "chunk": max(settings.batch_size, MIN_CHUNK),
    }


def prompt_seed(seed: int, ids: list[int]) -> int:
    """The sampling seed of one prompt: a function of the run's seed and the prompt alone, so its samples
    do not change with the batch, the order or a resumed run's remaining prompts."""
    return zlib.crc32(",".join(map(str, ids)).encode(), seed & 0xFFFFFFFF)


def _environment(loaded: LoadedModel) -> dict[str, str]:
    env = dict(os.environ)
    # The worker must not see this environment's packages (PYTHONPATH points at codepeft's sources in
    # development) nor inherit its thread settings blindly.
    env.pop("PYTHONPATH", None)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", os.environ.get("CODEPEFT_VLLM_KV_GIB", DEFAULT_KV_GIB))
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # The same thread count as the transformers path (default: every CPU this process may use),
    # unpinned: vLLM's own default pins one thread per core and keeps a core for its scheduler, which
    # on a 2-core machine leaves the model one thread (139 against 153 tokens/s with both, measured).
    threads = loaded.identity.get("threads") or len(os.sched_getaffinity(0))
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


@dataclass
class _Run:
    process: Any
    log_path: Path
    done: bool = False  # the worker said it delivered every result


@contextlib.contextmanager
def _worker(choice: BackendChoice, request: dict[str, Any], env: dict[str, str],
            embeds: dict[str, Any] | None = None) -> Iterator[_Run]:
    """The running worker; it is ended however the caller leaves, unless it delivered everything.

    ``embeds`` (prompt index as a string: its embeddings) are written next to the request."""
    workdir = Path(tempfile.mkdtemp(prefix="codepeft-vllm-"))
    request_path, log_path, embeds_path = workdir / "request.json", workdir / "vllm.log", workdir / EMBEDS_FILE
    if embeds is not None:
        from safetensors.torch import save_file

        save_file(embeds, str(embeds_path))
        request, embeds = {**request, "prompt_embeds": str(embeds_path)}, None  # held on disk only
    request_path.write_text(json.dumps(request))
    log: IO[str] = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen([str(choice.python), str(WORKER), str(request_path)], stdout=subprocess.PIPE,
                               stderr=log, stdin=subprocess.DEVNULL, text=True, env=env, cwd=workdir,
                               start_new_session=True)  # its own process group: see _end
    run = _Run(process, log_path)
    try:
        yield run
    finally:
        if process.poll() is None and run.done:
            _reap(process)
        else:
            _end(process)
        log.close()
        if run.done:  # a failed worker's request and log stay for the user (the error names the log)
            for path in (request_path, log_path, embeds_path):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                workdir.rmdir()


def _reap(process: Any) -> None:
    """Every result is in: wait (bounded) while vLLM stops its engine processes, which it joins, so the
    worker is reaped now and its CPU time and its engines' (``os.times`` children) count for this
    generation, not for whatever stage runs when it would otherwise be reaped."""
    try:
        process.wait(timeout=SHUTDOWN_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _end(process)


def _end(process: Any) -> None:
    """Stop the worker and the engine processes it spawned: signalling only the worker leaves vLLM's
    engine core running as an orphan, so the whole process group is signalled."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # engine processes still shutting down
            return
        except subprocess.TimeoutExpired:
            continue


def _failure(process: Any, log_path: Path) -> CodepeftError:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line] or lines
    last = errors[-1][:300] if errors else "no output"
    return CodepeftError(f"the vLLM worker failed (exit {process.returncode}): {last} (full log: {log_path}); "
                         "use --backend hf to decode with transformers")


def generate_vllm(loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings,
                  choice: BackendChoice, on_batch: BatchCallback | None = None,
                  stats: dict[str, float] | None = None) -> list[Generated]:
    """``generate``'s contract on vLLM: same tokenization, EOS trimming and decoding, ``n`` candidates each.

    ``stats`` (if given) receives ``startup_seconds``: engine start, as the worker measured it.
    """
    encoded = _encode(loaded, prompts)
    stops = stop_strings(loaded, settings)
    eos = set(_eos_ids(loaded))
    pad_id = loaded.tokenizer.pad_token_id
    results: list[Generated | None] = [None] * len(prompts)
    if not prompts:
        return []
    request = _request(loaded, choice, encoded, settings, stops)
    embeds = None
    if choice.prompt_embeds:
        embedder = prompt_embedder(loaded.model)
        embeds = {str(index): embedder(ids) for index, ids in enumerate(encoded)}
    with _worker(choice, request, _environment(loaded), embeds) as run:
        embeds = None  # the worker reads them from its file
        for line in run.process.stdout:
            message = json.loads(line)
            if "startup_seconds" in message and stats is not None:
                stats["startup_seconds"] = message["startup_seconds"]
            if message.get("done"):
                run.done = all(r is not None for r in results)
                break
            if "indices" not in message:
                continue
            batch = []
            for index, candidates in zip(message["indices"], message["tokens"], strict=True):
                trimmed = [_trim(list(c), eos, pad_id, False) for c in candidates]
                texts = [loaded.tokenizer.decode(t, skip_special_tokens=True) for t in trimmed]
                results[index] = Generated(texts, [len(t) for t in trimmed], len(encoded[index]),
                                           message["seconds"] / len(message["indices"]))
                batch.append(results[index])
            if on_batch is not None:
                on_batch(list(message["indices"]), batch)
        if not run.done:
            run.process.wait()
            raise _failure(run.process, run.log_path)
    return [r for r in results if r is not None]


def merged_checkpoint(loaded: LoadedModel) -> Path:
    """Save ``loaded`` (a base with its adapter merged) once under ``$CODEPEFT_HOME/merged/KEY``.

    The key covers the adapter's files, the base's identity and the dtype, so a retrained adapter or
    another dtype gets its own checkpoint; a finished checkpoint is reused.
    """
    from codepeft.home import codepeft_home
    from codepeft.models.adapters import MERGED_META
    from codepeft.provenance import sha256_file, sha256_json
    from codepeft.rundir import replacing

    adapter = Path(loaded.identity["adapter"])
    files = {p.name: sha256_file(p) for p in sorted(adapter.iterdir()) if p.is_file()}
    dequantized = loaded.identity.get("dequantized_from")  # QLoRA: the quantized weights' values, not the base's
    key = sha256_json({"adapter": files, "base": loaded.identity.get("config_sha256"),
                       "path": loaded.identity.get("path"), "dtype": loaded.identity.get("dtype"),
                       **({"dequantized_from": dequantized} if dequantized else {})})[:20]
    target = codepeft_home() / "merged" / key
    if (target / "config.json").is_file():
        return target
    with replacing(target) as tmp:
        tmp.mkdir(parents=True)
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        (tmp / MERGED_META).write_text(json.dumps({"adapter": str(adapter), "files": files}, indent=2) + "\n")
    return target


def without_weights(loaded: LoadedModel, keep_prompt: bool = False) -> LoadedModel:
    """``loaded`` keeping only what the vLLM path reads here (configs, tokenizer): frees the weights.

    ``keep_prompt``: also keep a prompt-tuning model's virtual tokens and input embeddings, from
    which its prompts' embeddings are built."""
    model = loaded.model
    light = SimpleNamespace(config=model.config, generation_config=model.generation_config, device="cpu")
    if keep_prompt:
        light.prompt_embedder = prompt_embedder(model)
    return replace(loaded, model=light)


def _adapter_meta(adapter: str | Path | None) -> dict:
    """What ``codepeft train`` recorded beside the adapter (its method, the base it trained on); {} if none."""
    if adapter is None or not Path(adapter).expanduser().exists():
        return {}  # load_model reports a missing adapter
    from codepeft.models.adapters import read_adapter_meta

    return read_adapter_meta(Path(adapter).expanduser())


def _load_dequantized(model: str | Path, base: dict, dtype: str, adapter: str | Path, merge: bool,
                      threads: int | None) -> LoadedModel:
    """A QLoRA adapter on its base's quantized weights, dequantized to ``dtype`` (see ``models.dequantize``).

    The base is quantized as in training (same scheme, from the same dtype), so the weights are the
    values the adapter was trained against; as plain layers they merge, and vLLM loads the result.
    """
    from codepeft.models.adapters import attach_adapter
    from codepeft.models.dequantize import dequantized
    from codepeft.models.loading import load_model, resolve_dtype

    quantized = load_model(model, dtype=base.get("dtype") or "auto", quantization=base["quantization"],
                           threads=threads)
    return attach_adapter(dequantized(quantized, resolve_dtype(dtype)), adapter, merge)


def load_for_backend(model: str | Path, requested: str, *, dtype: str, adapter: str | Path | None,
                     threads: int | None, strategy: str = "greedy") -> tuple[LoadedModel, BackendChoice]:
    """Load ``model`` (with ``adapter``) for the backend that will decode it, and say which one that is.

    For vLLM a mergeable adapter is merged and saved as a checkpoint vLLM loads, and the weights held
    here are dropped (only the tokenizer and configs are used in this process, and for prompt tuning
    the virtual tokens and input embeddings that build the prompts' embeddings).
    """
    from codepeft.generation.backends import choose_backend, uses_prompt_embeds, wants_vllm
    from codepeft.models.loading import load_model

    meta = _adapter_meta(adapter)
    method, base = meta.get("method"), meta.get("base", {})
    vllm = wants_vllm(requested, method, strategy=strategy)  # may raise: vllm asked, not installed
    merge = vllm and method not in (None, "full") and not uses_prompt_embeds(method)
    if base.get("quantization"):  # QLoRA: trained on a bitsandbytes-quantized base
        loaded = _load_dequantized(model, base, dtype, adapter, merge, threads)
    else:
        loaded = load_model(model, dtype=dtype, adapter=adapter, merge=merge, threads=threads)
    if merge:
        loaded.identity["vllm_model_dir"] = str(merged_checkpoint(loaded))
    choice = choose_backend(requested, loaded.identity, strategy=strategy)
    if choice.name == "vllm":
        loaded = without_weights(loaded, keep_prompt=bool(choice.prompt_embeds))
    return loaded, choice
