"""Trained adapters on disk: save with the base model's identity, attach to a loaded base, merge, export.

An adapter directory is what peft writes (``adapter_config.json`` + weights), or a whole model for
full fine-tuning, plus ``codepeft_adapter.json``: the method, its parameters and the identity of
the base it was trained on. Attaching it to another base is a one-line error, not silent garbage.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from codepeft.errors import CodepeftError, first_line
from codepeft.rundir import replacing

META = "codepeft_adapter.json"
MERGED_META = "codepeft_merged.json"
PEFT_CONFIG = "adapter_config.json"
#: identity keys that must agree between the training base and the base an adapter is attached to
IDENTITY_KEYS = ("architecture", "config_sha256")


def save_adapter(model: Any, loaded: Any, method: str, params: dict[str, Any], path: Path,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter (or full model) to ``path`` atomically: the previous one stays until the new one is whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.mkdir()
        model.save_pretrained(tmp)
        if not hasattr(model, "peft_config"):  # a whole model (full fine-tuning) keeps its tokenizer beside it
            loaded.tokenizer.save_pretrained(tmp)
        base = {k: v for k, v in loaded.identity.items() if k not in {"adapter", "merged"}}
        meta = {"method": method, "params": params, "base": base, **(extra or {})}
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path


def read_adapter_meta(path: Path) -> dict[str, Any]:
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise CodepeftError(
            f"{path} is not a codepeft adapter (no {META}): pass the adapter/ directory of a training run"
        )
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CodepeftError(f"{meta_path} is corrupted ({err.msg}): retrain or restore the adapter") from None


def check_base(meta: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """The adapter must be attached to the base it was trained on."""
    base = meta.get("base", {})
    for key in IDENTITY_KEYS:
        if base.get(key) and identity.get(key) and base[key] != identity[key]:
            raise CodepeftError(
                f"adapter {path} was trained on {base.get('spec')!r} ({base.get('architecture')}) but the model is "
                f"{identity.get('spec')!r} ({identity.get('architecture')}): load the adapter with its base model"
            )


def attach_adapter(loaded: Any, path: str | Path, merge: bool = False) -> Any:
    """``loaded`` with the trained adapter at ``path`` applied (``merge``: folded into the weights)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CodepeftError(f"adapter {path} not found: pass the adapter/ directory written by `codepeft train`")
    meta = read_adapter_meta(path)
    check_base(meta, loaded.identity, path)
    method = meta.get("method", "?")
    try:
        if not (path / PEFT_CONFIG).is_file():  # a whole fine-tuned model, not a peft adapter
            model = _load_full(loaded, path)
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(loaded.model, path)
            if merge:
                # prompt and prefix tuning add virtual tokens: there is no weight update to fold in
                if model.active_peft_config.is_prompt_learning:
                    raise CodepeftError(
                        f"a {method} adapter cannot be merged into the weights (it adds virtual tokens): "
                        "load it without --merge"
                    )
                model = model.merge_and_unload()
    except CodepeftError:
        raise
    except Exception as err:  # unreadable or mismatched weight files
        first = first_line(err)
        raise CodepeftError(f"cannot load adapter {path} ({first}): retrain or restore it") from None
    model.eval()
    identity = {**loaded.identity, "adapter": str(path), "adapter_method": method, "merged": bool(merge)}
    return dataclasses.replace(loaded, model=model, identity=identity)


def _load_full(loaded: Any, path: Path) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    loader = AutoModelForSeq2SeqLM if loaded.kind == "seq2seq" else AutoModelForCausalLM
    dtype = next(loaded.model.parameters()).dtype
    return loader.from_pretrained(path, dtype=dtype)

