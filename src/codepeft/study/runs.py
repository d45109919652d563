"""The runs of a study: one ``RunSpec`` per (model, data set, arm, seed), keyed by a hash of its config.

Planning validates everything a run needs before anything runs: each arm's method and parameters,
training settings, generation settings, each data set (and that pass@k has tests to run), each
model. A run's directory is ``runs/<model>__<data set>__<arm>__seed<seed>__<hash>``; the hash covers
the resolved config (model, data and its checksum, method and parameters, training and generation
settings, seed, test subset), so a changed setting is a new run and a finished run is reused.

The run's state lives in ``run.json``: its key, status (queued, training, generating, scoring, done,
failed), error, and the time and peak memory of each stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from codepeft.data.base import Task
from codepeft.errors import CodepeftError, validation_message
from codepeft.generation.settings import GenerationSettings
from codepeft.methods.base import MethodParams
from codepeft.provenance import sha256_json
from codepeft.rundir import read_json, write_json
from codepeft.study.config import DatasetSpec, StudyConfig
from codepeft.training.settings import TrainSettings

RUN_FILE = "run.json"
STUDY_INDEX = "study.json"
RUN_FORMAT = 1
RunStatus = Literal["queued", "training", "generating", "scoring", "done", "failed"]


@dataclass
class DatasetPlan:
    """A data set resolved once for the whole study: its task object, checksums and metric families."""

    spec: DatasetSpec
    task: Task
    checksums: dict[str, str]
    metrics: list[str]
    primary_metric: str
    test_count: int


@dataclass
class RunSpec:
    model: str
    dataset: DatasetPlan
    arm: str
    method: str
    kind: Literal["prompt", "train"]
    params: MethodParams  #: validated once, at planning, like ``training``
    training: TrainSettings | None  #: validated once, at planning; passed to ``train`` as it is
    generation: GenerationSettings
    seed: int
    test_size: int | None
    eval_dtype: str = "float32"  #: the dtype test generations run in (``StudyConfig.eval_dtype``)
    key: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""

    @property
    def dirname(self) -> str:
        return f"{slug(self.model)}__{slug(self.dataset.spec.task)}__{slug(self.arm)}__seed{self.seed}__{self.run_id}"

    @property
    def label(self) -> str:
        return f"{short_model(self.model)} · {short_dataset(self.dataset.spec.task)} · {self.arm} · s{self.seed}"

    def index_entry(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dir": f"runs/{self.dirname}", "model": self.model,
                "dataset": self.dataset.spec.task, "arm": self.arm, "method": self.method, "kind": self.kind,
                "seed": self.seed, "metrics": self.dataset.metrics, "primary_metric": self.dataset.primary_metric}


def slug(text: str) -> str:
    """A short, filesystem-safe version of a model spec, data set name or arm name."""
    text = text.rstrip("/").replace("\\", "/")
    if "/" in text and (text.startswith(("/", ".", "~")) or Path(text).suffix):
        text = Path(text).name  # a local path: its last part says enough (the hash keeps runs apart)
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.")
    return cleaned[:48] or "x"


def short_model(spec: str) -> str:
    return Path(spec.rstrip("/")).name if ("/" in spec or "\\" in spec) else spec


def short_dataset(task: str) -> str:
    """``jsonl:/long/path/data.jsonl`` -> ``jsonl:data.jsonl`` (plain names stay as they are)."""
    name, sep, arg = task.partition(":")
    return f"{name}:{Path(arg).name}" if sep else task


def run_key(spec: RunSpec) -> dict[str, Any]:
    """What decides a run's outcome; its hash names the run directory."""
    dataset = spec.dataset.spec
    key: dict[str, Any] = {
        "format": RUN_FORMAT,
        "model": spec.model,
        "dataset": {"task": dataset.task, "options": dataset.options, "test_split": dataset.test_split,
                    "test_checksum": spec.dataset.checksums.get(dataset.test_split)},
        "method": spec.method,
        "params": spec.params.model_dump(mode="json"),
        "generation": spec.generation.model_dump(mode="json"),
        "seed": spec.seed,
        "test_size": spec.test_size,
    }
    if spec.eval_dtype != "float32":  # only when set: runs planned before the option keep their ids
        key["eval_dtype"] = spec.eval_dtype
    if spec.kind == "train":
        key["dataset"].update(train_split=dataset.train_split, validation_split=dataset.validation_split,
                              train_checksum=spec.dataset.checksums.get(dataset.train_split))
        key["training"] = spec.training.model_dump(mode="json") if spec.training else None
    elif spec.method != "zero-shot":
        split = dataset.demonstration_split
        key["dataset"].update(pool_split=split, pool_checksum=spec.dataset.checksums.get(split))
    return key


def plan_datasets(config: StudyConfig, data_dir: Path | None, needs_pool: bool, needs_train: bool) -> list[DatasetPlan]:
    """Load every data set once: splits exist, checksums, and which metrics apply to it."""
    from codepeft.data import get_task

    plans: list[DatasetPlan] = []
    for spec in config.datasets:
        task = get_task(spec.task, data_dir, **spec.options)
        splits = [spec.test_split]
        if needs_pool:
            splits.append(spec.demonstration_split)
        if needs_train:
            splits.append(spec.train_split)
            if spec.validation_split:
                splits.append(spec.validation_split)
        checksums: dict[str, str] = {}
        test_examples: list[Any] = []
        for split in dict.fromkeys(splits):
            task.check_split(split)
            examples = task.load(split)
            if not examples:
                raise CodepeftError(f"data set {spec.task!r} split {split!r} is empty: choose another split")
            if split == spec.test_split:
                test_examples = examples
            checksums[split] = sha256_json([e.to_dict() for e in examples])
        if config.limits.test_size is not None:
            test_examples = test_examples[: config.limits.test_size]
        has_tests = any(e.tests for e in test_examples)
        has_references = any(e.reference.strip() for e in test_examples)
        if config.metrics is None:
            metrics = [m for m in task.metrics(has_tests) if m == "passk" or has_references]
        else:
            metrics = list(config.metrics)
            if "passk" in metrics and not has_tests:
                raise CodepeftError(
                    f"data set {spec.task!r} has no tests in split {spec.test_split!r}, so pass@k cannot be "
                    "computed: remove passk from metrics or use a data set with tests"
                )
            if not has_references:  # e.g. the local APPS file: the reference metrics are left out
                metrics = [m for m in metrics if m == "passk"]
            if not metrics:
                raise CodepeftError(
                    f"data set {spec.task!r} has no reference code in split {spec.test_split!r}, so "
                    f"{', '.join(config.metrics)} cannot be computed: use metrics: [passk] with a data set with tests"
                )
        primary = config.primary_metric or task.primary_metric(metrics)
        _check_primary(primary, metrics, config.ks, spec.task)
        plans.append(DatasetPlan(spec, task, checksums, metrics, primary, len(test_examples)))
    return plans


def _check_primary(primary: str, metrics: list[str], ks: list[int], dataset: str) -> None:
    family, _, k = primary.partition("@")
    family = {"pass": "passk"}.get(family, family)
    if family in {"chrf"}:
        family = "bleu"
    if family not in metrics or (k and (not k.isdigit() or int(k) not in ks)):
        raise CodepeftError(
            f"primary_metric {primary!r} is not computed for data set {dataset!r} (metrics: {', '.join(metrics)}; "
            f"ks: {', '.join(map(str, ks))}): choose one of em@K, pass@K, codebleu, bleu, chrf that is computed"
        )


def plan_runs(config: StudyConfig, data_dir: Path | None = None, check_models: bool = True) -> list[RunSpec]:
    """Every run of the study, validated; a wrong arm, model or data set is a one-line error here."""
    from codepeft.methods import get_method

    methods: dict[str, tuple[Any, MethodParams]] = {}
    for arm, arm_spec in config.arms.items():
        method = get_method(config.method_of(arm))
        try:
            params = method.params(arm_spec.params)
        except CodepeftError as err:
            raise CodepeftError(f"arms.{arm}.params: {err}") from None
        if method.kind == "prompt" and arm_spec.train:
            raise CodepeftError(f"arms.{arm}.train: {method.name!r} is a prompt method and trains nothing: remove it")
        methods[arm] = (method, params)
        for seed in config.seeds_for(arm):
            config.generation_for(arm, seed)  # validates the arm's generation settings early
    kinds = {m.kind for m, _ in methods.values()}
    needs_pool = any(m.kind == "prompt" and m.name != "zero-shot" for m, _ in methods.values())
    datasets = plan_datasets(config, data_dir, needs_pool, "train" in kinds)
    if check_models:
        from codepeft.models import resolve_model_path

        for model in config.models:
            resolve_model_path(model)
    runs: list[RunSpec] = []
    for model in config.models:
        for dataset in datasets:
            for seed in config.all_seeds():
                for arm, (method, params) in methods.items():
                    if seed not in config.seeds_for(arm):
                        continue
                    training = _training(config, arm, seed) if method.kind == "train" else None
                    if "seed" in method.Params.model_fields and "seed" not in config.arms[arm].params:
                        # a seeded prompt method (ICL's random draw) follows the study's seed
                        params = method.params({**config.arms[arm].params, "seed": seed})
                    spec = RunSpec(model, dataset, arm, method.name, method.kind, params, training,
                                   config.generation_for(arm, seed), seed, config.limits.test_size,
                                   config.eval_dtype)
                    spec.key = run_key(spec)
                    spec.run_id = sha256_json(spec.key)[:12]
                    runs.append(spec)
    return runs


def _training(config: StudyConfig, arm: str, seed: int) -> TrainSettings:
    merged = config.training_for(arm, seed)
    try:
        return TrainSettings(**merged)
    except ValidationError as err:
        message = validation_message(err, unknown="unknown key: remove it or check its spelling")
        raise CodepeftError(f"training settings of arm {arm!r}: {message}") from None


def read_run_state(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        state = read_json(path)
    except CodepeftError:
        return None
    return state if isinstance(state, dict) else None


def write_run_state(run_dir: Path, state: dict[str, Any]) -> None:
    write_json(Path(run_dir) / RUN_FILE, state)
