"""User-facing errors: one line that names what is wrong and how to fix it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class CodepeftError(Exception):
    """An error caused by the user's input or environment, shown as one line without a traceback.

    Always say what is wrong *and* how to fix it, e.g.
    ``CodepeftError("data file conala/cmd_test.json not found under /x: pass --data-dir DIR")``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message.strip().replace("\n", " "))


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), at most ``limit`` characters."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]


def validation_message(err: ValidationError, *, flags: bool = False,
                       unknown: str | None = None,
                       missing: str | None = None, default_where: str = "", plain: bool = False) -> str:
    """``where: what`` for a pydantic ``ValidationError``'s first error, as one line.

    ``flags`` spells the field as a command-line option (``--max-length``); ``unknown`` and ``missing``
    replace pydantic's wording for an extra key and a missing one; ``plain`` drops pydantic's
    "Value error, " prefix from a validator's message.
    """
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or default_where
    if flags and where:
        where = "--" + where.replace("_", "-")
    message = str(first["msg"]).removeprefix("Value error, ") if plain else str(first["msg"])
    if first["type"] == "extra_forbidden" and unknown:
        message = unknown
    elif first["type"] == "missing" and missing:
        message = missing
    return f"{where}: {message}" if where else message
