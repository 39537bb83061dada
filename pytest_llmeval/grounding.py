"""Grounding checks against a context. The deterministic pre-check needs no model: every
price, percentage, number, date and product name in an answer must appear in the
context, or it is reported as an unsupported claim.

It catches the classic hallucinations of a support bot (a subtly wrong price, an invented
feature name, a changed deadline) cheaply and exactly; claims it cannot see (a wrong
statement made of ordinary words) need the judge's claim check, which ``merge`` combines
with it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .records import ClaimEntry, GroundingVerdict

SUPPORTED = "SUPPORTED"
UNSUPPORTED = "UNSUPPORTED"
NOT_CHECKABLE = "NOT_CHECKABLE"
REASONABLE_INFERENCE = "REASONABLE_INFERENCE"
LABELS = (SUPPORTED, UNSUPPORTED, NOT_CHECKABLE, REASONABLE_INFERENCE)

_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("date", re.compile(r"\b\d{4}-\d{2}-\d{2}\b")),
    (
        "date",
        re.compile(
            rf"\b(?:{_MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?(?:,? \d{{4}})?\b", re.IGNORECASE
        ),
    ),
    (
        "price",
        re.compile(
            r"[$€£]\s?\d[\d,]*(?:\.\d+)?"
            r"|\b\d[\d,]*(?:\.\d+)? ?(?:USD|EUR|GBP|dollars?|euros?)\b"
        ),
    ),
    ("percentage", re.compile(r"\b\d+(?:\.\d+)?\s?%")),
    ("number", re.compile(r"\b\d[\d,]*(?:\.\d+)?\b")),
    # CamelCase or letter-digit product names (AutoPilot, SmartRoute, GPT4); plain
    # capitalised words are too common to check without a list of names.
    ("name", re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+\b|\b[A-Z]+\d+[A-Za-z0-9]*\b")),
)


@dataclass(frozen=True)
class Claim:
    """A checkable statement of an answer, its label and the evidence for it."""

    text: str
    label: str
    kind: str = "claim"
    evidence: str = ""

    def to_json(self) -> ClaimEntry:
        return {
            "text": self.text,
            "label": self.label,
            "kind": self.kind,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class GroundingResult:
    """The labelled claims of one answer and how they were labelled."""

    claims: list[Claim]
    method: str  # "precheck" or "judge+precheck"
    model: str | None = None
    prompt_sha256: str | None = None

    @property
    def unsupported(self) -> list[Claim]:
        return [c for c in self.claims if c.label == UNSUPPORTED]

    @property
    def faithfulness(self) -> float:
        return faithfulness(self.claims)

    def to_json(self) -> GroundingVerdict:
        return {
            "kind": "grounding",
            "method": self.method,
            "faithfulness": self.faithfulness,
            "unsupported": len(self.unsupported),
            "claims": [c.to_json() for c in self.claims],
            "model": self.model,
            "prompt_sha256": self.prompt_sha256,
        }


def merge(judged: list[Claim], prechecked: list[Claim]) -> list[Claim]:
    """The judge's claims, overruled by the pre-check where a claim carries a value the
    context does not have (the pre-check is exact; a judge can miss $27 against $29).
    Unsupported values that no judged claim mentions are added as claims of their own."""
    missing = [c for c in prechecked if c.label == UNSUPPORTED]
    covered: set[str] = set()
    merged = []
    for claim in judged:
        inside = [m for m in missing if m.text.lower() in claim.text.lower()]
        covered.update(m.text for m in inside)
        if inside and claim.label != UNSUPPORTED:
            values = ", ".join(repr(m.text) for m in inside)
            claim = Claim(
                claim.text, UNSUPPORTED, claim.kind, f"pre-check: {values} not in the context"
            )
        merged.append(claim)
    return merged + [m for m in missing if m.text not in covered]


def precheck_result(answer: str, context: str, names: Iterable[str] = ()) -> GroundingResult:
    """The pre-check alone, as a result."""
    return GroundingResult(precheck(answer, context, names), "precheck")


def _numbers(text: str) -> set[float]:
    found = set()
    for match in re.finditer(r"\d[\d,]*(?:\.\d+)?", text):
        try:
            found.add(float(match.group(0).replace(",", "")))
        except ValueError:
            continue
    return found


def facts(answer: str) -> list[tuple[str, str]]:
    """(kind, text) of each fact-like span of the answer, the most specific kind first;
    a span already taken by a more specific pattern is not counted again."""
    taken: list[tuple[int, int]] = []
    found = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(answer):
            span = match.span()
            if any(span[0] < end and start < span[1] for start, end in taken):
                continue
            taken.append(span)
            found.append((span[0], kind, match.group(0).strip()))
    return [(kind, text) for _, kind, text in sorted(found)]


@functools.lru_cache(maxsize=64)
def _index(context: str) -> tuple[dict[str, set[float]], str]:
    """The context's values by kind, and its lower-cased text. Cached: a suite checks
    many answers against the same few documents."""
    # A price must match a price of the context, a percentage a percentage: "25%" is
    # not supported by "25 agents". Plain numbers match any number of the context.
    known: dict[str, set[float]] = {
        "price": set(),
        "percentage": set(),
        "number": _numbers(context),
    }
    for kind, text in facts(context):
        if kind in ("price", "percentage"):
            known[kind] |= _numbers(text)
    return known, context.lower()


def precheck(answer: str, context: str, names: Iterable[str] = ()) -> list[Claim]:
    """Label every number, price, percentage, date and product name of ``answer``:
    SUPPORTED when the context has it (numbers compared by value), UNSUPPORTED when not.
    ``names`` adds product or feature names to look for verbatim."""
    known, lowered = _index(context)
    claims = []
    for kind, text in facts(answer):
        by_text = kind in ("name", "date")
        ok = text.lower() in lowered if by_text else _numbers(text) <= known[kind]
        claims.append(_checked(text, kind, ok))
    seen = {c.text.lower() for c in claims}
    for name in names:
        if name.lower() not in seen and re.search(
            rf"(?<!\w){re.escape(name)}(?!\w)", answer, re.IGNORECASE
        ):
            ok = name.lower() in lowered
            claims.append(_checked(name, "name", ok))
    return claims


def _checked(text: str, kind: str, found: bool) -> Claim:
    if found:
        return Claim(text, SUPPORTED, kind, "in the context")
    return Claim(text, UNSUPPORTED, kind, "not in the context")


def faithfulness(claims: Iterable[Claim]) -> float:
    """The share of checkable claims that are supported (1.0 when none is checkable)."""
    checked = [c for c in claims if c.label != NOT_CHECKABLE]
    if not checked:
        return 1.0
    good = sum(c.label in (SUPPORTED, REASONABLE_INFERENCE) for c in checked)
    return good / len(checked)
