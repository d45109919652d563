"""``codepeft version``: what is installed, for bug reports and provenance."""

from __future__ import annotations

import json

from codepeft.cli.app import app, out
from codepeft.provenance import environment


@app.command()
def version() -> None:
    """Print codepeft's version, git commit, key package versions and the machine."""
    out.print_json(json.dumps(environment()))
