"""Scores over a saved generations file: exact match, CodeBLEU, BLEU/chrF and sandboxed pass@k."""
