"""Studies: one config that runs every arm on the same model and data, with costs, provenance and CIs.

``config`` reads and validates the study file, ``runner`` turns it into run directories and runs
them (resuming and reusing finished work), ``executors`` runs them as Ray tasks on a cluster
(``executor: ray``), ``results`` gathers the saved runs into one table,
``stats`` holds the confidence intervals and paired tests, ``tracking`` mirrors results to MLflow or
TensorBoard when one is installed.
"""

from codepeft.study.config import StudyConfig, load_study

__all__ = ["StudyConfig", "load_study"]
