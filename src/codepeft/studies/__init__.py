"""Packaged study files (``default.yaml`` is what ``codepeft study`` runs with no file)."""
