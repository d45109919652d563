"""The study file: models x data sets x arms x seeds, with limits, generation settings and metrics.

A study is read from YAML, then ``key=value`` overrides with dotted keys are applied to the raw
mapping by OmegaConf (``limits.test_size=20``, ``arms.lora.params.r=16``, ``models=[smollm2-135m]``;
values are parsed as YAML), then the result is validated by ``StudyConfig``. Unknown keys and wrong values
are one-line ``CodepeftError``s naming the key. The packaged default study is ``studies/default.yaml``.
"""

from __future__ import annotations

import copy
from importlib import resources as package_files
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from codepeft.errors import CodepeftError, validation_message
from codepeft.generation.settings import GenerationSettings


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(StrictModel):
    """One data set of the study and the splits each stage reads."""

    task: str = Field(description="task name or name:PATH, as `codepeft datasets` lists them")
    train_split: str = "train"
    validation_split: str | None = Field(
        None, description="validation split for training (None: the task's 'validation' split if it has one, "
        "else a held-out share of the training split)"
    )
    test_split: str = "test"
    pool_split: str | None = Field(None, description="where ICL/RAG draw demonstrations from (default: train_split)")
    options: dict[str, Any] = Field(default_factory=dict, description="task options (e.g. path for jsonl)")

    @property
    def label(self) -> str:
        return self.task

    @property
    def demonstration_split(self) -> str:
        return self.pool_split or self.train_split


class ArmSpec(StrictModel):
    """One arm: a registered method and its parameters; train arms may override training settings."""

    method: str | None = Field(None, description="registered method name (default: the arm's own name)")
    params: dict[str, Any] = Field(default_factory=dict, description="the method's hyperparameters")
    train: dict[str, Any] = Field(default_factory=dict, description="training settings for this arm only")
    generation: dict[str, Any] = Field(default_factory=dict, description="generation settings for this arm only")
    resources: dict[str, Any] = Field(
        default_factory=dict, description="what one run of this arm asks of a Ray cluster (overrides the study's)")
    seeds: list[int] | None = Field(
        None, min_length=1, description="this arm's seeds (None: the study's); e.g. more seeds for a noisy arm")

    @field_validator("seeds", mode="before")
    @classmethod
    def _one_seed(cls, value: Any) -> Any:
        return _seed_list(value)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int] | None) -> list[int] | None:
        _check_distinct_seeds(value or [])
        return value


def _seed_list(value: Any) -> Any:
    """``seeds: 3`` means ``[3]``."""
    return [value] if isinstance(value, int) else value


def _check_distinct_seeds(seeds: list[int]) -> None:
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds lists the same seed twice")


class Resources(StrictModel):
    """What one run asks of a Ray cluster (``executor: ray``); the local executor ignores them."""

    cpus: float = Field(1.0, ge=0, description="CPU cores reserved per run")
    gpus: float = Field(0.0, ge=0, description="GPUs per run; a fraction packs several runs on one GPU")
    memory_gb: float | None = Field(None, gt=0, description="memory reserved per run in GiB (scheduling only)")

    @field_validator("gpus")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError("more than one GPU must be a whole number (fractions pack runs on one GPU: use <= 1)")
        return value


class RaySpec(StrictModel):
    """Where the Ray cluster is and where the study's run directories go on storage every node sees."""

    address: str | None = Field(
        None, description="auto (the running cluster), HOST:PORT, or None: start Ray on this machine")
    storage: str | None = Field(
        None, description="shared directory holding the study directory <storage>/<name> (default: --out)")


class StudyLimits(StrictModel):
    """What keeps a study small: test subset, training subset, step cap."""

    test_size: int | None = Field(None, ge=1, description="first N test examples (None: all)")
    train_size: int | None = Field(None, ge=1, description="first N training examples (None: all)")
    val_size: int | None = Field(None, ge=1, description="first N validation examples (None: all)")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps of every train arm")


class ScoringSpec(StrictModel):
    """Sandbox settings for pass@k."""

    timeout: float = Field(10.0, gt=0, description="seconds per test program")
    workers: int | None = Field(None, ge=1, description="parallel sandbox processes (None: CPU count)")


class StudyConfig(StrictModel):
    """A whole study. Each (model, data set, arm, seed) becomes one run directory."""

    name: str = Field("study", min_length=1)
    description: str = ""
    models: list[str] = Field(min_length=1)
    datasets: list[DatasetSpec] = Field(min_length=1)
    arms: dict[str, ArmSpec] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    limits: StudyLimits = Field(default_factory=StudyLimits)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    eval_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="dtype of the test generations: float32 (greedy output independent of batch "
        "size) or bfloat16 (about 1.8x vLLM's tokens/s on a CPU with bf16; for sampled studies)")
    training: dict[str, Any] = Field(default_factory=dict, description="training settings for every train arm")
    metrics: list[Literal["em", "codebleu", "bleu", "passk"]] | None = Field(
        None, description="metric families; None: em, codebleu, bleu, and passk where the data has tests"
    )
    ks: list[int] = Field(default_factory=lambda: [1], min_length=1)
    primary_metric: str | None = Field(None, description="leaderboard metric; None: pass@1 with tests, else codebleu")
    comparisons: list[tuple[str, str]] = Field(
        default_factory=list, description="planned paired tests on the primary metric, [arm, other arm] each, beside "
        "every arm vs zero-shot and the best arm vs every other; all Holm-corrected together")
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    data_dir: str | None = None
    tracking: Literal["auto", "none", "mlflow", "tensorboard"] = "auto"
    report_examples: int = Field(3, ge=0, description="example problems shown side by side in the report")
    executor: Literal["local", "ray"] = Field("local", description="local: one run after another; ray: Ray tasks")
    ray: RaySpec = Field(default_factory=RaySpec)
    resources: Resources = Field(default_factory=Resources, description="per run, for executor: ray")

    @field_validator("datasets", mode="before")
    @classmethod
    def _dataset_names(cls, value: Any) -> Any:
        return _dataset_mappings([value] if isinstance(value, str) else value)

    @field_validator("models", mode="before")
    @classmethod
    def _one_model(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("seeds", mode="before")
    @classmethod
    def _one_seed(cls, value: Any) -> Any:
        return _seed_list(value)

    @field_validator("arms", mode="before")
    @classmethod
    def _arm_list(cls, value: Any) -> Any:
        return _normalize_arms(value)

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, value: dict[str, ArmSpec]) -> dict[str, ArmSpec]:
        for name in value:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"arm name {name!r} is not usable as a directory name")
        return value

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError("every k must be >= 1")
        return sorted(set(value))

    @model_validator(mode="after")
    def _unique(self) -> StudyConfig:
        if len(set(self.models)) != len(self.models):
            raise ValueError("models lists the same model twice")
        if len({d.task for d in self.datasets}) != len(self.datasets):
            raise ValueError("datasets lists the same data set twice")
        _check_distinct_seeds(self.seeds)
        for pair in self.comparisons:
            unknown = [arm for arm in pair if arm not in self.arms]
            if unknown:
                raise ValueError(f"comparisons names {unknown[0]!r}, which is not one of the arms "
                                 f"({', '.join(self.arms)}): add the arm, or drop the pair (comparisons=[] "
                                 "on the command line drops them all)")
            if pair[0] == pair[1]:
                raise ValueError(f"comparisons compares {pair[0]!r} with itself")
        return self

    def seeds_for(self, arm: str) -> list[int]:
        """The arm's own seeds when it lists them, else the study's."""
        return self.arms[arm].seeds or self.seeds

    def all_seeds(self) -> list[int]:
        """Every seed some arm runs with, in first-seen order (the study's first)."""
        return list(dict.fromkeys([*self.seeds, *(s for arm in self.arms for s in self.seeds_for(arm))]))

    def method_of(self, arm: str) -> str:
        return self.arms[arm].method or arm

    def generation_for(self, arm: str, seed: int) -> GenerationSettings:
        """The study's generation settings, updated by the arm's and seeded with the run's seed."""
        merged = {**self.generation.model_dump(), **self.arms[arm].generation, "seed": seed}
        try:
            return GenerationSettings(**merged)
        except ValidationError as err:
            raise CodepeftError(f"arms.{arm}.generation: {_first_error(err)}") from None

    def resources_for(self, arm: str) -> Resources:
        """The study's per-run resources updated by the arm's own."""
        try:
            return Resources(**{**self.resources.model_dump(), **self.arms[arm].resources})
        except ValidationError as err:
            raise CodepeftError(f"arms.{arm}.resources: {_first_error(err)}") from None

    def training_for(self, arm: str, seed: int) -> dict[str, Any]:
        """Training settings of a train arm: study defaults, the arm's own, the seed and the step cap."""
        merged = {**self.training, **self.arms[arm].train, "seed": seed}
        if self.limits.max_steps is not None:
            current = merged.get("max_steps")
            merged["max_steps"] = min(current, self.limits.max_steps) if current else self.limits.max_steps
        if self.limits.train_size is not None:
            merged.setdefault("train_limit", self.limits.train_size)
        if self.limits.val_size is not None:
            merged.setdefault("val_limit", self.limits.val_size)
        return merged


def _normalize_arms(value: Any) -> Any:
    """Arms may be written as a list of names / one-key mappings; the config keeps a name -> spec mapping."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value
    arms: dict[str, Any] = {}
    for item in value:
        if isinstance(item, str):
            arms[item] = {}
        elif isinstance(item, dict) and "name" in item:
            spec = dict(item)
            arms[str(spec.pop("name"))] = spec
        elif isinstance(item, dict) and len(item) == 1:
            (name, spec), = item.items()
            arms[str(name)] = spec or {}
        else:
            raise ValueError(f"arm {item!r} must be a name or a mapping with a 'name' key")
    return arms


def _first_error(err: ValidationError) -> str:
    return validation_message(err, unknown="unknown key: remove it or check its spelling (see docs/study.md)",
                              missing="missing: the study needs it")


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """``["limits.test_size=20", ...]`` -> ``[(["limits", "test_size"], 20), ...]`` (values read as YAML)."""
    parsed: list[tuple[list[str], Any]] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise CodepeftError(f"override {item!r} is not key=value: write e.g. limits.test_size=20")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.split("."), value))
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key in (a copy of) the raw study mapping with OmegaConf; list items are addressed by index.

    ``OmegaConf.update`` is what ``merge_with_dotlist`` applies per item; it is called one override at a
    time so a failure names its override. ``merge=False``: a mapping value replaces the old one, as documented.
    """
    data = {key: _list_forms(key, value) for key, value in raw.items()}
    parsed = parse_overrides(overrides)
    if not parsed:
        return copy.deepcopy(data)
    # allow_objects: a YAML file may hold values OmegaConf has no node type for (dates)
    config = OmegaConf.create(data, flags={"allow_objects": True})
    for path, value in parsed:
        if len(path) == 1:  # arms=[zero-shot,lora] then arms.lora.params.r=4 needs the mapping form
            value = _list_forms(path[0], value)
        try:
            OmegaConf.update(config, ".".join(path), value, merge=False)
        except (OmegaConfBaseException, ValueError, TypeError) as err:
            raise CodepeftError(_override_error(config, path, err)) from None
    return OmegaConf.to_container(config)  # type: ignore[return-value]  # a mapping in, a mapping out


def _override_error(config: DictConfig, path: list[str], err: Exception) -> str:
    """One line naming the override; a bad list index says which indexes the list has."""
    for depth in range(1, len(path)):
        node = OmegaConf.select(config, ".".join(path[:depth]), throw_on_missing=False)
        part = path[depth]
        if isinstance(node, ListConfig) and (not part.isdigit() or int(part) >= len(node)):
            return f"override {'.'.join(path[: depth + 1])}: use an index below {len(node)} for this list"
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"override {'.'.join(path)}: {reason}: check the key against docs/study.md"


def _list_forms(key: str, value: Any) -> Any:
    """Arms and data sets given by name in the mapping form that dotted keys reach into."""
    try:
        if key == "arms":
            return _normalize_arms(value)
    except ValueError as err:
        raise CodepeftError(f"arms: {err}") from None
    # datasets: [conala] -> datasets.0.test_split=... needs a mapping
    return _dataset_mappings(value) if key == "datasets" else value


def _dataset_mappings(value: Any) -> Any:
    if isinstance(value, list):
        return [{"task": item} if isinstance(item, str) else item for item in value]
    return value


def default_study_text() -> str:
    return package_files.files("codepeft.studies").joinpath("default.yaml").read_text()


def read_study_file(path: str | Path | None) -> tuple[dict[str, Any], str]:
    """The raw mapping of a study file (the packaged default when ``path`` is None) and its name for errors."""
    if path is None:
        text, source = default_study_text(), "default study"
    else:
        path = Path(path).expanduser()
        if not path.is_file():
            raise CodepeftError(f"study file {path} not found: pass an existing YAML file (or none for the default)")
        text, source = path.read_text(), str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CodepeftError(f"{source} is not valid YAML{where}: fix its syntax") from None
    if raw is None or raw == {}:
        raise CodepeftError(f"{source} is an empty study: list models, datasets and arms (see docs/study.md)")
    if not isinstance(raw, dict):
        raise CodepeftError(f"{source} must be a YAML mapping with models, datasets and arms")
    return raw, source


def load_study(path: str | Path | None = None, overrides: list[str] | None = None) -> StudyConfig:
    """Read, override and validate a study; every problem is a one-line ``CodepeftError``."""
    raw, source = read_study_file(path)
    return validate_study(raw, overrides or [], source)


def validate_study(raw: dict[str, Any], overrides: list[str], source: str = "study") -> StudyConfig:
    data = apply_overrides(raw, overrides)
    for key in ("models", "datasets", "arms"):
        if key in data and not data[key]:
            raise CodepeftError(f"{source}: {key} is empty: list at least one (an empty study has nothing to run)")
    try:
        config = StudyConfig(**data)
    except ValidationError as err:
        raise CodepeftError(f"{source}: {_first_error(err)}") from None
    except TypeError as err:  # e.g. a top-level key that is not a string
        raise CodepeftError(f"{source}: {err}") from None
    for arm in config.arms:
        try:
            config.resources_for(arm)  # an arm's resources are merged with the study's, so checked here
        except CodepeftError as err:
            raise CodepeftError(f"{source}: {err}") from None
    return config


def dump_study(config: StudyConfig) -> str:
    """The resolved study as YAML (saved beside the runs as ``study.yaml``)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
