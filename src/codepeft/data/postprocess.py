"""Turning raw generations into code, and normalising code before exact match.

Every regular expression built from a user or model string goes through ``re.escape``: the
reference study cut predictions at the first ``<`` or ``>`` through an unescaped pattern.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The first fenced code block if the text has one (closed or not), else the text itself.

    A fence without a language tag after some text may close a block the model never opened
    (answers that start with unfenced code: ``x = 1\n```\nprose``); then the code is what precedes
    it. See ``_closes_a_block``.
    """
    match = _FENCE.search(text)
    if match is None:
        return text.strip("\n").rstrip()
    before = text[: match.start()]
    if before.strip() and not match.group(1) and _closes_a_block(before, text[match.start() + 3 :], match.group(2)):
        return before.strip("\n").rstrip()
    return match.group(2).strip("\n").rstrip()


def _closes_a_block(before: str, after: str, block: str) -> bool:
    """Whether a fence without a language tag between ``before`` and ``after`` closes a block.

    An opening fence is followed by code, so a fence followed by a blank line or by nothing closes
    one; otherwise it closes one when the text before it is Python and the "block" after it is not
    (``def f(): ...\n```\nThis function...`` against ``Here it is:\n```\ndef f(): ...``).
    """
    if not after.strip() or after.startswith(("\n\n", "\n\r\n")):
        return True
    return _is_python(before) and not _is_python(block)


def _is_python(text: str) -> bool:
    try:
        ast.parse(text.strip("\n"))
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return False
    return True


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string (stops are literal, not regexes)."""
    stops = [s for s in stops if s]
    if not stops:
        return text
    pattern = re.compile("|".join(re.escape(s) for s in stops))
    match = pattern.search(text)
    return text if match is None else text[: match.start()]


def normalize_code(code: str) -> str:
    """Line endings unified, trailing spaces and blank lines dropped, outer whitespace stripped.

    Applied identically to candidates and references, so it never makes a wrong answer right;
    it only stops ``\\r\\n`` (MBPP) or a trailing newline from making a right one wrong.
    """
    lines = code.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines if line.strip()).strip()
