"""The study's calls into training, generation and scoring: one function each, per the module contracts.

Kept apart so the runner's bookkeeping (reuse, resume, failures, timing) does not depend on how
those APIs spell their arguments. (Planning, ``runs.py``, also validates methods, training settings
and models through their own modules, and the runner measures memory through ``training.costs``.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codepeft.data.base import Example, Task, get_task, register_task
from codepeft.errors import CodepeftError
from codepeft.study.config import DatasetSpec
from codepeft.study.runs import RunSpec


def train_arm(spec: RunSpec, output_dir: Path, data_dir: Path | None) -> Any:
    """Fine-tune ``spec.model`` with the arm's method on the data set's training split."""
    from codepeft.training import train

    return train(spec.model, [training_source(spec.dataset.spec)], spec.method, spec.params, Path(output_dir),
                 spec.training, data_dir=data_dir)


def training_source(dataset: DatasetSpec) -> str:
    """The data set as ``train`` reads it: its own spec when its splits are the usual ones, else a split view.

    ``train`` trains on a task's ``train`` split and validates on ``validation`` (or a held-out share
    of ``train``); a study may name other splits (HumanEval's ``study-train``), which the
    ``study-split`` view below presents under the usual names.
    """
    usual_validation = dataset.validation_split in (None, "validation")
    if dataset.train_split == "train" and usual_validation and not dataset.options:
        return dataset.task
    view = {"task": dataset.task, "train": dataset.train_split, "validation": dataset.validation_split,
            "options": dataset.options}
    return f"{SplitView.name}:{json.dumps(view, sort_keys=True)}"


@register_task
class SplitView(Task):
    """Another task with chosen splits presented as ``train`` / ``validation`` (studies use it for training)."""

    name = "study-split"
    description = "internal to studies: a task's chosen splits presented as train/validation"

    def __init__(self, data_dir: Path | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        try:
            view = json.loads(options["path"])
        except (KeyError, json.JSONDecodeError) as err:
            raise CodepeftError("study-split needs a JSON description of the view (used by `codepeft study`)") from err
        self.inner = get_task(view["task"], data_dir, **view.get("options", {}))
        self.mapping = {"train": view["train"]}
        if view.get("validation"):
            self.mapping["validation"] = view["validation"]
        self.splits = tuple(self.mapping)  # type: ignore[misc]  # per-instance splits
        self.has_tests = self.inner.has_tests  # type: ignore[misc]

    def load(self, split: str) -> list[Example]:
        self.check_split(split)
        return self.inner.load(self.mapping[split])

    def instruction(self, example: Example) -> str:
        return self.inner.instruction(example)

    def target(self, example: Example) -> str:
        return self.inner.target(example)

    def normalize(self, code: str) -> str:
        return self.inner.normalize(code)

    def postprocess(self, generation: str) -> str:
        return self.inner.postprocess(generation)


def generate_arm(spec: RunSpec, run_dir: Path, adapter: Path | None, data_dir: Path | None) -> Path:
    """Generate for the test split (prompt arms build their prompts; train arms use their adapter)."""
    from codepeft.generation.evaluate import evaluate

    dataset = spec.dataset.spec
    prompt_arm = spec.kind == "prompt"
    return evaluate(
        spec.model, spec.dataset.task, split=dataset.test_split,
        method=spec.method if prompt_arm else "zero-shot",
        method_params=spec.params if prompt_arm else None,
        settings=spec.generation, run_dir=Path(run_dir), limit=spec.test_size, adapter=adapter,
        data_dir=data_dir, pool_split=dataset.demonstration_split, dtype=spec.eval_dtype,
    )


def score_arm(run_dir: Path, metrics: list[str], ks: list[int], workers: int | None, timeout: float,
              force: bool) -> dict[str, Any]:
    from codepeft.metrics.score import score_run

    return score_run(Path(run_dir), metrics=tuple(metrics), ks=tuple(ks), workers=workers, timeout=timeout,
                     force=force)
