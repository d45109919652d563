"""Turning raw generations into code, and normalising code before exact match.

Every regular expression built from a user or model string goes through ``re.escape``: the
reference study cut predictions at the first ``<`` or ``>`` through an unescaped pattern.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The first fenced code block if the text has one (closed or not), else the text itself.

    A lone fence without a language tag after some code (``x = 1\n```\nprose``) closes a block
    the model never opened (instruction-style answers are unfenced): the code is what precedes it.
    """
    match = _FENCE.search(text)
    if match is None:
        return text.strip("\n").rstrip()
    before = text[: match.start()]
    if before.strip() and not match.group(1) and text.count("```") == 1:
        return before.strip("\n").rstrip()
    return match.group(2).strip("\n").rstrip()


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
