"""Runs untrusted generated code: isolated processes, resource limits, per-test-kind programs."""

from codepeft.sandbox.isolation import Limits, bubblewrap_available, choose_mode, default_workers, namespaces_available
from codepeft.sandbox.programs import build_program
from codepeft.sandbox.runner import Outcome, Program, run_many, run_program

__all__ = ["Limits", "Outcome", "Program", "bubblewrap_available", "build_program", "choose_mode", "default_workers",
           "namespaces_available", "run_many", "run_program"]
