"""The arm registry: every way of specializing a model, by name.

An arm is either a *prompt* method (zero-shot, ICL, RAG: nothing is trained, the prompt changes)
or a *train* method (LoRA, DoRA, IA3, prompt/prefix tuning, QLoRA, full fine-tuning). Each
registers one ``Method`` with a pydantic ``Params`` model holding its hyperparameters and defaults,
so a study can list them side by side and validate their parameters the same way.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from codepeft.errors import CodepeftError, validation_message


class MethodParams(BaseModel):
    """Base of every method's hyperparameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Method:
    """One registered arm. Subclasses set ``name``, ``kind``, ``Params`` and add their behaviour."""

    name: ClassVar[str]
    kind: ClassVar[Literal["prompt", "train"]]
    description: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams

    def params(self, overrides: dict[str, Any] | MethodParams | None = None) -> MethodParams:
        """Defaults updated by ``overrides``; a wrong key or value is a one-line error.

        Parameters validated already (a study plans them once) are taken as they are.
        """
        if isinstance(overrides, self.Params):
            return overrides
        try:
            return self.Params(**(overrides or {}))
        except ValidationError as err:
            raise CodepeftError(f"method {self.name!r}: {validation_message(err, default_where='params')}") from None


METHODS: dict[str, Method] = {}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    _load_builtin_methods()
    if name not in METHODS:
        raise CodepeftError(
            f"unknown method {name!r}: choose one of {', '.join(sorted(METHODS))} (see `codepeft methods`)"
        )
    return METHODS[name]


def all_methods() -> dict[str, Method]:
    _load_builtin_methods()
    return dict(METHODS)


def _load_builtin_methods() -> None:
    """Import the modules that register the built-in methods (kept lazy: they import torch/peft)."""
    import importlib

    for module in ("codepeft.methods.prompting", "codepeft.methods.icl", "codepeft.methods.rag",
                   "codepeft.methods.finetuning"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
