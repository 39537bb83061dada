"""The plugin's exceptions and warnings. No pytest here: the pytest edge turns a
:class:`ConfigError` into ``pytest.UsageError`` and reports warnings as pytest does.

::

    LLMEvalError
     +-- DatasetError (ValueError)        a dataset that cannot be loaded
     +-- ConfigError (ValueError)         a bad option or ini value
     +-- LLMCallError                     a model call lost for good; .kind names the cause
          +-- RateLimitError              rate_limit      429 after every retry
          +-- CallTimeoutError            timeout
          +-- ServerError                 server_error    5xx, 408, 409, a dropped connection
          +-- AuthError                   auth            401, 403, no API key
          +-- BadRequestError             bad_request     another 4xx
          +-- ConnectionFailedError       connection      nothing listening
          +-- BadResponseError            bad_response    a 200 whose body is not a response
          +-- JudgeError                  judge           too few judge samples gave a verdict
          +-- CacheMissError              cache_miss      replay mode, no recorded response
               +-- CacheCorruptError      cache_corrupt   replay mode, an unreadable entry
    LLMEvalAssertionError (AssertionError)   an eval assertion failed: a quality failure

    LLMEvalWarning (UserWarning)
     +-- JudgeFamilyWarning, EmptySelectionWarning, CacheCorruptWarning
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

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


class ConfigError(LLMEvalError, ValueError):
    """A bad option or ini value; the message names the key, the value and the valid ones."""


class LLMCallError(LLMEvalError):
    """A model call that failed for good (after retries). Its subclass, and ``kind``, say
    why; the test is then an error, not a quality failure."""

    kind: ClassVar[str] = "llm_call"

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(
            f"{self.kind} after {attempts} attempt{'s' if attempts != 1 else ''}: {message}"
        )
        self.attempts = attempts
        self.original: BaseException | None = None  # the last API exception, if any


class RateLimitError(LLMCallError):
    kind = "rate_limit"


class CallTimeoutError(LLMCallError):
    kind = "timeout"


class ServerError(LLMCallError):
    kind = "server_error"


class AuthError(LLMCallError):
    kind = "auth"


class BadRequestError(LLMCallError):
    kind = "bad_request"


class ConnectionFailedError(LLMCallError):
    kind = "connection"


class BadResponseError(LLMCallError):
    kind = "bad_response"


class JudgeError(LLMCallError):
    kind = "judge"


class CacheMissError(LLMCallError):
    """A replay-mode lookup found no recorded response."""

    kind = "cache_miss"


class CacheCorruptError(CacheMissError):
    """A replay-mode lookup found an entry that is not a valid recorded response."""

    kind = "cache_corrupt"


def _causes(cls: type[LLMCallError]) -> list[type[LLMCallError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_causes(sub))]


_BY_KIND = {cls.kind: cls for cls in _causes(LLMCallError)}  # every class above, by kind
ERROR_CLASSES: tuple[str, ...] = tuple(_BY_KIND)  # every kind, for the summary


def call_error(kind: str, message: str, *, attempts: int = 1) -> LLMCallError:
    """The error of a call lost for ``kind`` of reason."""
    return _BY_KIND[kind](message, attempts=attempts)


class LLMEvalAssertionError(AssertionError):
    """An eval assertion failed; carries the metric result that failed it and a short
    ``kind`` (the metric, or the failed constraint names) to group failures by."""

    def __init__(self, message: str, result: MetricResult, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.kind = kind or result.name


class StepLimitError(AssertionError):
    """A test's trajectory reached one of its example's limits (``max_steps``,
    ``max_tool_calls``, ``max_cost``): the agent was stopped before the next step. A
    quality failure of the app, named by the limit (``kind``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class LLMEvalWarning(UserWarning):
    """Base class of the plugin's warnings."""


class JudgeFamilyWarning(LLMEvalWarning):
    """The judge and the model under test come from the same family (self-preference)."""


class EmptySelectionWarning(LLMEvalWarning):
    """An ``llmeval`` marker's partition or tag filter selects no example."""


class CacheCorruptWarning(LLMEvalWarning):
    """A response cache entry is not a valid response: it was treated as a miss, fetched
    again and rewritten."""
