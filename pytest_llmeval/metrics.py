"""Deterministic metrics: normalized exact match, SQuAD token F1, named constraint checks.

Pure functions with no pytest import; the assertion helpers wrap them.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .records import CheckEntry, MetricEntry

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@dataclass
class MetricResult:
    """One metric's outcome: what a record stores and an assertion reports."""

    name: str
    score: float
    threshold: float | None
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> MetricEntry:
        # An undefined score (a NaN from a broken embedding, say) is null: standard JSON has
        # no NaN, and the report's means skip a null.
        return {
            "name": self.name,
            "score": _finite(self.score),
            "threshold": _finite(self.threshold),
            "passed": self.passed,
            "details": self.details,
        }


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, fold white space."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(output: str, expected: str, *, normalize: bool = True) -> float:
    """1.0 when equal (after SQuAD normalisation unless ``normalize=False``), else 0.0."""
    if normalize:
        return float(normalize_answer(output) == normalize_answer(expected))
    return float(output == expected)


def token_f1(output: str, expected: str) -> tuple[float, float, float]:
    """SQuAD token overlap: (precision, recall, F1) over normalized tokens."""
    out_tokens = normalize_answer(output).split()
    ref_tokens = normalize_answer(expected).split()
    if not out_tokens or not ref_tokens:
        same = float(out_tokens == ref_tokens)
        return same, same, same
    overlap = sum((Counter(out_tokens) & Counter(ref_tokens)).values())
    if overlap == 0:
        return 0.0, 0.0, 0.0
    precision = overlap / len(out_tokens)
    recall = overlap / len(ref_tokens)
    return precision, recall, 2 * precision * recall / (precision + recall)


# --- constraints -------------------------------------------------------------------

CheckFn = Callable[[str], Any]


@dataclass(frozen=True)
class CheckOutcome:
    """One named check's result; ``error`` is set when the check itself raised."""

    name: str
    passed: bool
    detail: str = ""
    error: str | None = None

    def to_json(self) -> CheckEntry:
        data: CheckEntry = {"name": self.name, "passed": self.passed}
        if self.detail:
            data["detail"] = self.detail
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass(frozen=True)
class Check:
    """A named check of an output. ``fn`` returns a bool, or ``(bool, detail)``."""

    name: str
    fn: CheckFn

    def run(self, output: str) -> CheckOutcome:
        try:
            verdict = self.fn(output)
        except Exception as exc:  # a check that raises is a failed check carrying its error
            return CheckOutcome(self.name, False, error=f"{type(exc).__name__}: {exc}")
        if isinstance(verdict, tuple) and len(verdict) == 2:
            return CheckOutcome(self.name, bool(verdict[0]), str(verdict[1]))
        if not isinstance(verdict, bool):
            return CheckOutcome(
                self.name,
                False,
                error=f"check returned {type(verdict).__name__}; expected bool or (bool, detail)",
            )
        return CheckOutcome(self.name, verdict)


Checks = Sequence[Check | CheckFn] | Mapping[str, CheckFn]


def as_checks(checks: Checks) -> list[Check]:
    """Normalise a list of checks/callables or a name→callable mapping into named checks."""
    if isinstance(checks, Mapping):
        return [Check(name, fn) for name, fn in checks.items()]
    named = []
    for check in checks:
        if isinstance(check, Check):
            named.append(check)
        elif callable(check):
            named.append(Check(getattr(check, "__name__", repr(check)), check))
        else:
            raise TypeError(f"not a check: {check!r} (use a Check or a callable)")
    return named


def run_checks(output: str, checks: Checks) -> list[CheckOutcome]:
    """Run every check (none short-circuits the others) and return their outcomes."""
    return [check.run(output) for check in as_checks(checks)]


def _measure(output: str, unit: str) -> int:
    if unit == "chars":
        return len(output)
    if unit == "words":
        return len(output.split())
    raise ValueError(f"unit must be 'chars' or 'words', not {unit!r}")


def max_length(limit: int, *, unit: str = "chars", name: str = "max_length") -> Check:
    """Output is at most ``limit`` characters (or words)."""
    _measure("", unit)

    def check(output: str) -> tuple[bool, str]:
        size = _measure(output, unit)
        return size <= limit, f"{size} {unit} (max {limit})"

    return Check(name, check)


def min_length(limit: int, *, unit: str = "chars", name: str = "min_length") -> Check:
    """Output is at least ``limit`` characters (or words)."""
    _measure("", unit)

    def check(output: str) -> tuple[bool, str]:
        size = _measure(output, unit)
        return size >= limit, f"{size} {unit} (min {limit})"

    return Check(name, check)


def _term_pattern(term: str, whole_word: bool, case_sensitive: bool) -> re.Pattern[str]:
    body = re.escape(term)
    if whole_word:
        body = rf"(?<!\w){body}(?!\w)"
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE)


def forbidden_terms(
    terms: Iterable[str],
    *,
    case_sensitive: bool = False,
    whole_word: bool = True,
    name: str = "forbidden_terms",
) -> Check:
    """None of ``terms`` appears in the output (whole words, case-insensitive by default)."""
    patterns = [(t, _term_pattern(t, whole_word, case_sensitive)) for t in terms]

    def check(output: str) -> tuple[bool, str]:
        found = [term for term, pattern in patterns if pattern.search(output)]
        return not found, f"found {', '.join(map(repr, found))}" if found else ""

    return Check(name, check)


def required_phrases(
    phrases: Iterable[str], *, case_sensitive: bool = False, name: str = "required_phrases"
) -> Check:
    """Every one of ``phrases`` appears in the output (case-insensitive by default)."""
    patterns = [(p, _term_pattern(p, False, case_sensitive)) for p in phrases]

    def check(output: str) -> tuple[bool, str]:
        missing = [phrase for phrase, pattern in patterns if not pattern.search(output)]
        return not missing, f"missing {', '.join(map(repr, missing))}" if missing else ""

    return Check(name, check)


def matches_regex(pattern: str, *, name: str = "matches_regex", flags: int = 0) -> Check:
    """The output contains a match of ``pattern`` (``re.search``)."""
    compiled = re.compile(pattern, flags)

    def check(output: str) -> tuple[bool, str]:
        found = compiled.search(output) is not None
        return found, "" if found else f"no match for /{pattern}/"

    return Check(name, check)


def valid_json(*, name: str = "valid_json") -> Check:
    """The output parses as JSON."""

    def check(output: str) -> tuple[bool, str]:
        try:
            json.loads(output)
        except json.JSONDecodeError as exc:
            return False, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        return True, ""

    return Check(name, check)


def matches_schema(schema: Any, *, name: str = "matches_schema") -> Check:
    """The output is JSON that validates against ``schema``: a pydantic model or any type
    pydantic can validate (a TypedDict, a dataclass, ``list[int]`` ...)."""
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(schema)

    def check(output: str) -> tuple[bool, str]:
        try:
            adapter.validate_json(output)
        except ValidationError as exc:
            problems = [
                f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
            ]
            return False, "; ".join(problems[:5])
        return True, ""

    return Check(name, check)
