"""Scores over a saved generations file: exact match, CodeBLEU, BLEU/chrF and sandboxed pass@k."""

from codepeft.metrics.exact_match import exact_match_at_k, exact_match_per_example
from codepeft.metrics.passk import pass_at_k, pass_at_ks
from codepeft.metrics.score import run_summary, score_run

__all__ = ["exact_match_at_k", "exact_match_per_example", "pass_at_k", "pass_at_ks", "run_summary", "score_run"]
