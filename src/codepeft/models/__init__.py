"""Resolve a model spec to (model, tokenizer): hub ids, local directories, ``.gguf`` files and the
packaged ``smollm2-135m``; GGUF conversion and caching; adapter target modules found from the model;
trained adapters on disk (save, attach, merge) and the bitsandbytes probe for quantised loading."""

from codepeft.models.adapters import attach_adapter, read_adapter_meta, save_adapter
from codepeft.models.gguf import DEFAULT_MODEL, PACKAGED_MODELS, cached_models
from codepeft.models.loading import LoadedModel, load_model, merge_adapter, resolve_dtype, resolve_model_path
from codepeft.models.quantization import bitsandbytes_problem
from codepeft.models.targets import TargetModules, find_target_modules

__all__ = [
    "DEFAULT_MODEL",
    "PACKAGED_MODELS",
    "LoadedModel",
    "TargetModules",
    "attach_adapter",
    "bitsandbytes_problem",
    "cached_models",
    "find_target_modules",
    "load_model",
    "merge_adapter",
    "read_adapter_meta",
    "resolve_dtype",
    "resolve_model_path",
    "save_adapter",
]
