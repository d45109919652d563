"""The task interface every data set implements, and the registry that names them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from codepeft.errors import CodepeftError


@dataclass(frozen=True)
class Example:
    """One uniform example of any data set.

    ``tests`` is ``None`` for data sets without tests; otherwise a JSON-serialisable dict whose
    ``"kind"`` tells the sandbox how to run it:

    - ``{"kind": "humaneval", "prompt", "test", "entry_point"}``
    - ``{"kind": "mbpp", "setup", "asserts": [...]}``
    - ``{"kind": "apps-call", "fn_name", "inputs": [...], "outputs": [...]}``
    - ``{"kind": "apps-stdin", "inputs": [...], "outputs": [...]}``
    - ``{"kind": "assert", "setup", "asserts": [...]}``  (user JSONL)
    - ``{"kind": "doctest", "setup", "header", "entry_point", "doctest"}``  (mined data)
    """

    id: str
    intent: str
    reference: str
    tests: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "intent": self.intent, "reference": self.reference,
                "tests": self.tests, "meta": self.meta}


class Task:
    """A data set: load a split, say what the model sees and what it should write, clean its output.

    Subclasses set ``name``, ``splits`` and implement ``load``. Prompt formatting for each model kind
    lives in ``codepeft.data.prompts`` and uses ``instruction`` and ``target``; ``postprocess`` is
    applied to every generation before scoring.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    has_tests: ClassVar[bool] = False

    def __init__(self, data_dir: Path | None = None, **options: Any) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.options = options

    def load(self, split: str) -> list[Example]:
        raise NotImplementedError

    def instruction(self, example: Example) -> str:
        """The natural-language request the model is given (intent, plus starter code etc.)."""
        return example.intent

    def target(self, example: Example) -> str:
        """What the model should write for ``example`` (the training target)."""
        return example.reference

    def normalize(self, code: str) -> str:
        """Normalisation applied to candidates and references before exact match."""
        from codepeft.data.postprocess import normalize_code

        return normalize_code(code)

    def postprocess(self, generation: str) -> str:
        """Turn a raw generation into the code to score (stop sequences, code fences)."""
        from codepeft.data.postprocess import extract_code

        return extract_code(generation)

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise CodepeftError(
                f"data set {self.name!r} has no split {split!r}: use one of {', '.join(self.splits)}"
            )

    def data_checksum(self, split: str) -> str:
        """Checksum of the loaded examples of a split (recorded in every run's provenance)."""
        from codepeft.provenance import sha256_json

        return sha256_json([e.to_dict() for e in self.load(split)])


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding a task to the registry under ``cls.name``."""
    TASKS[cls.name] = cls
    return cls


def get_task(spec: str, data_dir: Path | str | None = None, **options: Any) -> Task:
    """Build a task from a name, or ``name:ARG`` (e.g. ``jsonl:my.jsonl``, ``mined:ds.jsonl``)."""
    name, _, arg = spec.partition(":")
    if name not in TASKS:
        raise CodepeftError(
            f"unknown data set {name!r}: choose one of {', '.join(sorted(TASKS))} (see `codepeft datasets`)"
        )
    if arg:
        options.setdefault("path", arg)
    return TASKS[name](data_dir=Path(data_dir) if data_dir else None, **options)


TaskFactory = Callable[..., Task]
