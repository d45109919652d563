"""User-facing errors: one line that names what is wrong and how to fix it."""

from __future__ import annotations


class CodepeftError(Exception):
    """An error caused by the user's input or environment, shown as one line without a traceback.

    Always say what is wrong *and* how to fix it, e.g.
    ``CodepeftError("data file conala/cmd_test.json not found under /x: pass --data-dir DIR")``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message.strip().replace("\n", " "))
