"""The task interface every data set implements, and the registry that names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from codepeft.data.postprocess import extract_code, normalize_code
from codepeft.errors import CodepeftError
from codepeft.provenance import sha256_json
from codepeft.sandbox.programs import build_program
from codepeft.sandbox.runner import Program

#: Every metric family a task can declare: exact match, CodeBLEU, BLEU/chrF, pass@k (needs tests).
METRIC_FAMILIES = ("em", "codebleu", "bleu", "passk")


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
    """A data set and how it is evaluated: load a split, say what the model sees and what it should
    write, clean its output, and score it.

    Subclasses set ``name``, ``splits`` and implement ``load``. Prompt formatting for each model kind
    lives in ``codepeft.data.prompts`` and uses ``instruction`` and ``target``; ``postprocess`` is
    applied to every generation before scoring. Evaluation belongs to the task (as in lm-eval):
    ``metrics`` (the metric families it is scored with), ``primary_metric``, ``normalize`` (applied
    before exact match) and ``program`` (how a candidate becomes a sandbox program for pass@k). Every
    scorer (``codepeft score``, ``codepeft evaluate``'s summary, studies) asks the task named in the
    run's ``config.json``.
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
        return normalize_code(code)

    def postprocess(self, generation: str) -> str:
        """Turn a raw generation into the code to score (stop sequences, code fences)."""
        return extract_code(generation)

    def metrics(self, has_tests: bool) -> tuple[str, ...]:
        """The metric families this task is scored with by default (pass@k only when there are tests)."""
        return tuple(m for m in METRIC_FAMILIES if m != "passk" or has_tests)

    def primary_metric(self, metrics: tuple[str, ...] | list[str]) -> str:
        """The headline metric among the computed ``metrics`` (pass@1 where tests run, else CodeBLEU)."""
        return "pass@1" if "passk" in metrics else "codebleu"

    def program(self, candidate: str, tests: dict[str, Any], *, timeout: float = 10.0) -> Program:
        """The sandbox program checking ``candidate`` against an example's ``tests`` payload.

        The default runs the candidate as it was generated with the payload's own builder; a task whose
        candidates need preparing first (a prefix, a wrapper) overrides this and calls ``build_program``.
        """
        return build_program(candidate, tests, timeout=timeout)

    def has_split(self, split: str) -> bool:
        """Whether ``split`` has examples to load (a user's file may lack a declared split)."""
        return split in self.splits

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise CodepeftError(
                f"data set {self.name!r} has no split {split!r}: use one of {', '.join(self.splits)}"
            )

    def data_checksum(self, split: str) -> str:
        """Checksum of the loaded examples of a split (recorded in every run's provenance)."""
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


class GenericTask(Task):
    """The task-independent defaults, for a run whose task is not known (no or foreign ``config.json``)."""

    name = "generic"
    description = "default normalisation and metrics (a run directory without a known task)"

    def load(self, split: str) -> list[Example]:
        raise CodepeftError("the generic task has no data: name a data set (see `codepeft datasets`)")


def task_of_run(config: dict[str, Any] | None) -> tuple[Task, str | None]:
    """The task a run directory was generated for, from its ``config.json`` (``None``: no config).

    Without a task in the config, ``GenericTask``'s defaults apply; when the named task cannot be rebuilt
    (an unregistered name, options that no longer validate) they apply too, with a note saying so.
    """
    info = (config or {}).get("task") or {}
    spec = info.get("spec") or info.get("name")
    if not spec:
        return GenericTask(), None  # a hand-made run directory: nothing to say beyond the defaults
    try:
        return get_task(str(spec), **dict(info.get("options") or {})), None
    except CodepeftError as err:
        return GenericTask(), f"task {spec!r} of the run could not be loaded ({err}): scored with the defaults"
