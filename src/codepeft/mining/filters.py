"""Which candidate functions become examples: the filters and the reason each one drops a function."""

from __future__ import annotations

from pydantic import BaseModel, Field

from codepeft.mining.extract import Candidate, FileResult

# Reported in this order; a function is counted under the first filter that drops it.
FILTER_REASONS = ("undocumented", "generated_file", "test", "private", "trivial_body", "one_line_layout",
                  "too_short", "too_long")


class FilterSettings(BaseModel):
    """Defaults keep documented, public, non-test functions whose body has 2 to 60 non-blank lines."""

    min_lines: int = Field(2, ge=1, description="minimum non-blank lines in the body (docstring excluded)")
    max_lines: int = Field(60, ge=1, description="maximum non-blank lines in the body")
    include_tests: bool = False
    include_private: bool = False


def is_private(candidate: Candidate) -> bool:
    """A ``_name`` (not dunder) function, or one inside a ``_Class`` or ``_module``."""
    parts = candidate.module.split(".") + candidate.qualname.split(".")
    return any(part.startswith("_") and not (part.startswith("__") and part.endswith("__")) for part in parts)


def drop_reason(candidate: Candidate, file: FileResult, settings: FilterSettings) -> str | None:
    """The first filter that rejects ``candidate``, or ``None`` to keep it."""
    if not candidate.summary:
        return "undocumented"
    if file.generated:
        return "generated_file"
    is_test = file.is_test_file or candidate.name.startswith("test_") or candidate.name == "test"
    if not settings.include_tests and is_test:
        return "test"
    if not settings.include_private and is_private(candidate):
        return "private"
    if candidate.trivial:
        return "trivial_body"
    if candidate.one_line_layout:
        return "one_line_layout"
    body_lines = sum(1 for line in candidate.reference.splitlines() if line.strip())
    if body_lines < settings.min_lines:
        return "too_short"
    if body_lines > settings.max_lines:
        return "too_long"
    return None
