"""Resolve a model spec to (model, tokenizer): hub ids, local directories, ``.gguf`` files and the
packaged ``smollm2-135m``; GGUF conversion and caching; adapter target modules found from the model."""

from codepeft.models.gguf import DEFAULT_MODEL, PACKAGED_MODELS, cached_models
from codepeft.models.loading import LoadedModel, load_model, resolve_dtype, resolve_model_path
from codepeft.models.targets import TargetModules, find_target_modules

__all__ = [
    "DEFAULT_MODEL",
    "PACKAGED_MODELS",
    "LoadedModel",
    "TargetModules",
    "cached_models",
    "find_target_modules",
    "load_model",
    "resolve_dtype",
    "resolve_model_path",
]
