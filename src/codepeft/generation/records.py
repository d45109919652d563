"""Kept so older imports work: the run-directory format now lives in ``codepeft.rundir``."""

from codepeft.rundir import (
    CONFIG,
    ENVIRONMENT,
    GENERATIONS,
    METRICS,
    GenerationsFile,
    append_generations,
    read_generations,
    read_json,
    write_json,
)

__all__ = ["CONFIG", "ENVIRONMENT", "GENERATIONS", "METRICS", "GenerationsFile", "append_generations",
           "read_generations", "read_json", "write_json"]
