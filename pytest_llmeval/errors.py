"""Exceptions and warnings raised by pytest_llmeval."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .metrics import MetricResult


class LLMEvalError(Exception):
    """Base class of the plugin's own errors."""


class DatasetError(LLMEvalError, ValueError):
    """A dataset could not be loaded: the message names the file, the line or example, and why."""

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        line: int | None = None,
        example_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.problem = problem
        self.line = line
        self.example_id = example_id
        self.field = field
        where = path if line is None else f"{path}:{line}"
        parts = [where]
        if example_id is not None:
            parts.append(f"example {example_id!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        super().__init__(f"{', '.join(parts)}: {problem}")


class LLMEvalAssertionError(AssertionError):
    """An eval assertion failed; carries the metric result that failed it and a short
    ``kind`` (the metric, or the failed constraint names) to group failures by."""

    def __init__(self, message: str, result: MetricResult, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.kind = kind or result.name


class LLMEvalWarning(pytest.PytestWarning):
    """Base class of the plugin's warnings."""


class JudgeFamilyWarning(LLMEvalWarning):
    """The judge and the model under test come from the same family (self-preference)."""


class EmptySelectionWarning(LLMEvalWarning):
    """An ``llmeval`` marker's partition or tag filter selects no example."""


class CacheCorruptWarning(LLMEvalWarning):
    """A response cache entry is not a valid response: it was treated as a miss, fetched
    again and rewritten."""
