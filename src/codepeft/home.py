"""Where codepeft keeps caches (converted models, retrieval indexes): ``$CODEPEFT_HOME``."""

from __future__ import annotations

import os
from pathlib import Path


def codepeft_home() -> Path:
    """The cache root: ``$CODEPEFT_HOME`` if set, else ``~/.cache/codepeft``. Created on demand."""
    root = Path(os.environ.get("CODEPEFT_HOME") or Path.home() / ".cache" / "codepeft").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_data_dir() -> Path | None:
    """``$CODEPEFT_DATA_DIR`` if set, else ``../shared/data`` beside the checkout if it exists."""
    env = os.environ.get("CODEPEFT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if (parent / "pyproject.toml").exists() and candidate.is_dir():
            return candidate
    return None
