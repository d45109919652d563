"""Optional experiment tracking: each finished run's training curve and metrics to MLflow or TensorBoard.

``tracking: auto`` uses whichever of the two is installed (MLflow first) and does nothing when
neither is; naming one that is not installed is a one-line error. Neither is a dependency of codepeft.
MLflow logs into ``<study>/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set; TensorBoard writes
``<study>/tensorboard/<run>``.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from codepeft.errors import CodepeftError


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def open_tracker(kind: str, study_dir: Path, study_name: str) -> Tracker | None:
    if kind == "none":
        return None
    has_mlflow, has_tensorboard = _installed("mlflow"), _installed("tensorboard")
    if kind == "mlflow" and not has_mlflow:
        raise CodepeftError("tracking: mlflow is not installed: pip install mlflow, or set tracking=none")
    if kind == "tensorboard" and not has_tensorboard:
        raise CodepeftError("tracking: tensorboard is not installed: pip install tensorboard, or set tracking=none")
    if kind == "mlflow" or (kind == "auto" and has_mlflow):
        return MlflowTracker(study_dir, study_name)
    if kind == "tensorboard" or (kind == "auto" and has_tensorboard):
        return TensorboardTracker(study_dir)
    return None


def run_payload(spec: Any, run_dir: Path) -> tuple[dict[str, Any], dict[str, float], list[dict[str, Any]]]:
    """(params, final metrics, training log lines) of a finished run, read from its directory."""
    params = {"model": spec.model, "dataset": spec.dataset.spec.task, "arm": spec.arm, "method": spec.method,
              "seed": spec.seed, **{f"param.{k}": v for k, v in spec.params.model_dump(mode="json").items()}}
    metrics: dict[str, float] = {}
    metrics_path = run_dir / "eval" / "metrics.json"
    if metrics_path.exists():
        for key, value in json.loads(metrics_path.read_text()).items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                metrics[key.replace("@", "_at_")] = float(value)
    log: list[dict[str, Any]] = []
    log_path = run_dir / "train" / "train_log.jsonl"
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            try:
                log.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return params, metrics, log


class Tracker:
    def log_run(self, spec: Any, run_dir: Path) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class MlflowTracker(Tracker):
    def __init__(self, study_dir: Path, study_name: str) -> None:
        import os

        import mlflow

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri((Path(study_dir).resolve() / "mlruns").as_uri())
        mlflow.set_experiment(study_name)

    def log_run(self, spec: Any, run_dir: Path) -> None:
        params, metrics, log = run_payload(spec, run_dir)
        with self.mlflow.start_run(run_name=spec.dirname):
            self.mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
            for line in log:
                step = line.get("step")
                for key in ("loss", "train_loss", "val_loss", "eval_loss", "lr"):
                    if isinstance(step, int) and isinstance(line.get(key), int | float):
                        self.mlflow.log_metric(key, float(line[key]), step=step)
            if metrics:
                self.mlflow.log_metrics(metrics)


class TensorboardTracker(Tracker):
    def __init__(self, study_dir: Path) -> None:
        self.root = Path(study_dir) / "tensorboard"

    def log_run(self, spec: Any, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        params, metrics, log = run_payload(spec, run_dir)
        writer = SummaryWriter(log_dir=str(self.root / spec.dirname))
        try:
            for line in log:
                step = line.get("step")
                for key in ("loss", "train_loss", "val_loss", "eval_loss", "lr"):
                    if isinstance(step, int) and isinstance(line.get(key), int | float):
                        writer.add_scalar(f"train/{key}", float(line[key]), step)
            writer.add_hparams({k: str(v) for k, v in params.items()}, {f"result/{k}": v for k, v in metrics.items()},
                               run_name=".")
        finally:
            writer.close()
