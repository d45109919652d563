"""Model specs to a loaded (model, tokenizer): hub ids, local directories, ``.gguf`` files, packaged names.

A spec is resolved to a local directory first (``resolve_model_path``); the directory's config then
decides causal or seq2seq, and the tokenizer decides the prompt style.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from codepeft.data.prompts import PromptStyle, prompt_style_for
from codepeft.errors import CodepeftError
from codepeft.models.adapters import MERGED_META, attach_adapter, read_adapter_meta
from codepeft.models.gguf import PACKAGED_MODELS, ensure_gguf, ensure_packaged
from codepeft.rundir import replacing

ModelKind = Literal["causal", "seq2seq"]
Quantization = Literal["4bit", "8bit"]
DTYPES = ("auto", "float32", "bfloat16", "float16")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    """A model ready to generate or train, with what is needed to record where it came from."""

    model: Any
    tokenizer: Any
    kind: ModelKind
    style: PromptStyle
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        """The longest input the model takes (prompt plus new tokens)."""
        config = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", None)
        return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 2048


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or (os.sep in spec.rstrip(os.sep) and not _HUB_ID.match(spec))


def _resolve_hub_id(spec: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if _hub_offline():
        raise CodepeftError(
            f"model {spec!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: unset HF_HUB_OFFLINE "
            f"to download it, or pass a local model directory, a .gguf file or {', '.join(PACKAGED_MODELS)}"
        )
    try:
        return Path(snapshot_download(spec, etag_timeout=10))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
        reason = type(err).__name__
        raise CodepeftError(
            f"model {spec!r} could not be fetched from the Hugging Face hub ({reason}): check the id and the "
            f"network, or pass a local model directory, a .gguf file or {', '.join(PACKAGED_MODELS)}"
        ) from None


def resolve_model_path(spec: str | Path) -> Path:
    """A local model directory for ``spec``: a packaged name, a directory, a ``.gguf`` file or a hub id."""
    text = str(spec).strip()
    if not text:
        raise CodepeftError(f"empty model spec: pass a model directory, a .gguf file, a hub id or {DEFAULT_HINT}")
    if text in PACKAGED_MODELS:
        return ensure_packaged(text)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CodepeftError(
                f"model directory {path} has no config.json: pass a directory written by save_pretrained"
            )
        return path.resolve()
    if path.suffix.lower() == ".gguf":
        return ensure_gguf(path)
    if path.exists():
        raise CodepeftError(f"model {text!r} is a file but not a .gguf: pass a model directory or a .gguf file")
    if _looks_like_path(text) or not (_HUB_ID.match(text) or re.fullmatch(r"[\w.-]+", text)):
        raise CodepeftError(f"model path {text!r} not found: check the path, or use {DEFAULT_HINT}")
    if "/" not in text:
        raise CodepeftError(
            f"unknown model {text!r}: use {DEFAULT_HINT}, a hub id like org/name, a model directory or a .gguf file"
        )
    return _resolve_hub_id(text)


DEFAULT_HINT = " or ".join(repr(name) for name in PACKAGED_MODELS)


def bf16_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX); without it bf16 is emulated and slow."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_dtype(dtype: str | Any = "auto") -> Any:
    """``auto`` is bf16 where the hardware has it, else fp32; ``$CODEPEFT_DTYPE`` overrides ``auto``."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype or "auto").lower().replace("torch.", "")
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(name, name)
    if name == "auto":
        name = os.environ.get("CODEPEFT_DTYPE", "").lower() or ("bfloat16" if bf16_supported() else "float32")
        name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(name, name)
    if name not in DTYPES[1:]:
        raise CodepeftError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, else ``$CODEPEFT_THREADS``, else the CPUs this process may use."""
    import torch

    if threads is None:
        env = os.environ.get("CODEPEFT_THREADS")
        threads = int(env) if env and env.isdigit() else len(os.sched_getaffinity(0))
    if threads < 1:
        raise CodepeftError(f"threads must be at least 1 (got {threads}): pass a positive --threads")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def model_kind(config: Any) -> ModelKind:
    """``seq2seq`` for encoder-decoder configs, ``causal`` otherwise."""
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def _quantization_config(quantization: Quantization | None, compute_dtype: Any) -> Any:
    if quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                                  bnb_4bit_use_double_quant=True)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise CodepeftError(f"unknown quantization {quantization!r}: use 4bit or 8bit")


def _config_sha256(path: Path) -> str:
    from codepeft.provenance import sha256_file

    return sha256_file(path / "config.json")


def load_tokenizer(path: Path, kind: ModelKind) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        # Padding positions are masked out, so reusing EOS as pad changes no output.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if kind == "causal":
        tokenizer.padding_side = "left"
    return tokenizer


def load_model(
    spec: str | Path,
    *,
    dtype: str | Any = "auto",
    adapter: str | Path | None = None,
    merge: bool = False,
    quantization: Quantization | None = None,
    threads: int | None = None,
) -> LoadedModel:
    """Load ``spec`` (packaged name, directory, ``.gguf``, hub id) in eval mode, with an adapter if given."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    used_threads = set_threads(threads)
    torch_dtype = resolve_dtype(dtype)
    path = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, OSError) as err:
        raise CodepeftError(f"cannot read the model config in {path} ({err}): pass a transformers model") from None
    kind = model_kind(config)
    loader = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    options: dict[str, Any] = {"dtype": torch_dtype}
    quant = _quantization_config(quantization, torch_dtype)
    if quant is not None:
        options["quantization_config"] = quant
    try:
        model = loader.from_pretrained(path, **options)
    except ValueError as err:
        raise CodepeftError(f"cannot load {spec!r} as a {kind} model ({err})") from None
    model.eval()
    tokenizer = load_tokenizer(path, kind)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    style = prompt_style_for(tokenizer, kind)
    identity = {
        "spec": str(spec),
        "path": str(path),
        "architecture": (config.architectures or [type(model).__name__])[0],
        "config_sha256": _config_sha256(path),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "kind": kind,
        "style": style,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "quantization": quantization,
        "threads": used_threads,
    }
    loaded = LoadedModel(model=model, tokenizer=tokenizer, kind=kind, style=style, identity=identity)
    if adapter is not None:
        loaded = attach_adapter(loaded, adapter, merge)
    return loaded


def merge_adapter(adapter: str | Path, output: str | Path, base: str | None = None, dtype: str = "auto") -> Path:
    """Fold ``adapter`` into its base and save the merged model (+ tokenizer) to ``output``."""
    adapter, output = Path(adapter), Path(output)
    meta = read_adapter_meta(adapter)
    spec = base or meta.get("base", {}).get("path") or meta.get("base", {}).get("spec")
    if not spec:
        raise CodepeftError(f"{adapter} does not name its base model: pass --base")
    if output.exists() and any(output.iterdir()):
        raise CodepeftError(f"{output} already exists and is not empty: choose another --output")
    loaded = load_model(spec, dtype=dtype, adapter=adapter, merge=True)
    if output.exists():
        output.rmdir()  # empty (checked above): replaced by the merged model
    output.parent.mkdir(parents=True, exist_ok=True)
    with replacing(output) as tmp:
        tmp.mkdir()
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        record = {"adapter": str(adapter.resolve()), "method": meta.get("method"), "base": meta.get("base")}
        (tmp / MERGED_META).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return output
