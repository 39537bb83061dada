"""What the monitor does with a sample: evaluation functions and the alerts they raise.

An evaluator is a function of a :class:`Sample`, sync or async, returning an
:class:`Evaluation` (or a bare score or bool). The built-in ones reuse the plugin's
metrics and raise the three kinds of alert: ``hallucination`` (the grounding check),
``constraint`` (named checks), ``quality`` (the judge's rubric score under a threshold).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .store import Sample

if TYPE_CHECKING:
    from ..judge import Judge
    from ..metrics import Checks

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class AlertSpec:
    """An alert an evaluation raises; the monitor adds when, where and which sample."""

    type: str
    severity: Severity
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    """An alert as stored and as alert callbacks receive it."""

    type: str
    severity: Severity
    message: str
    ts: float
    window_start: float
    request_id: str | None = None
    sample_id: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None

    def row(self) -> dict[str, Any]:
        """The alert's columns in the store (its id is the store's to give)."""
        return {k: v for k, v in asdict(self).items() if k != "id"}


@dataclass(frozen=True)
class Evaluation:
    """One evaluator's verdict on one sample. ``kind`` says what the window aggregates
    make of it: ``judge`` (score: the rubric mean), ``grounding`` (passed: no
    unsupported claim), ``constraints`` (passed: every check), or anything else."""

    kind: str = "custom"
    score: float | None = None
    passed: bool | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    alert: AlertSpec | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "score": self.score, "passed": self.passed}
        if self.details:
            data["details"] = dict(self.details)
        if self.error is not None:
            data["error"] = self.error
        return data


EvaluatorResult = Evaluation | float | bool | None
Evaluator = Callable[[Sample], EvaluatorResult | Awaitable[EvaluatorResult]]


def as_evaluation(value: Any, kind: str) -> Evaluation:
    """An evaluator's return value as an Evaluation (a bool is passed, a number a score).
    A NaN or infinite score is an error: no aggregate could use it."""
    if isinstance(value, Evaluation):
        if value.score is not None and not math.isfinite(value.score):
            raise ValueError(f"an evaluator returned a score of {value.score}; return a finite one")
        return value
    if isinstance(value, bool):
        return Evaluation(kind, passed=value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"an evaluator returned {value}; return a finite number")
        return Evaluation(kind, score=float(value))
    if value is None:
        return Evaluation(kind)
    raise TypeError(
        f"an evaluator returned {type(value).__name__}; return an Evaluation, a number or a bool"
    )


# A request that errored has no output to judge: the built-ins record that, no verdict.
NO_OUTPUT = {
    kind: Evaluation(kind, details={"skipped": "the request has no output"})
    for kind in ("judge", "grounding", "constraints")
}


def kind_of(evaluator: Evaluator) -> str:
    """The kind an evaluator's results have (built-ins say; others are ``custom``)."""
    return str(getattr(evaluator, "kind", "custom"))


def _kind(kind: str) -> Callable[[Evaluator], Evaluator]:
    def mark(fn: Evaluator) -> Evaluator:
        fn.kind = kind  # type: ignore[attr-defined]
        return fn

    return mark


def judge_evaluator(
    judge: Judge,
    *,
    task: str,
    criteria: list[str],
    threshold: float = 3.0,
    severe_below: float = 2.5,
) -> Evaluator:
    """The judge's 1-5 rubric score of the output. Under ``threshold`` raises a
    ``quality`` alert: ``high`` under ``severe_below``, else ``medium``."""

    @_kind("judge")
    async def evaluate(sample: Sample) -> Evaluation:
        if sample.output is None:
            return NO_OUTPUT["judge"]
        result = await judge.ascore(sample.output, task=task, criteria=criteria, input=sample.input)
        details = {
            "scores": result.scores,
            "reasoning": result.reasoning,
            "weaknesses": result.weaknesses,
            "prompt_sha256": result.prompt_sha256,
        }
        alert = None
        if result.mean < threshold:
            alert = AlertSpec(
                "quality",
                "high" if result.mean < severe_below else "medium",
                f"judge score {result.mean:.2f} < {threshold:g}: {result.reasoning}",
                details,
            )
        return Evaluation("judge", result.mean, result.mean >= threshold, {**details}, alert)

    return evaluate


def grounding_evaluator(
    context: str | None = None,
    *,
    judge: Judge | None = None,
    names: Collection[str] = (),
    max_unsupported: int = 0,
    severity: Severity = "high",
) -> Evaluator:
    """Every price, percentage, number, date and product name of the output must be in
    the context (the sample's own ``context``, else ``context``), or in the request's
    input; with ``judge``, the judge's claim check as well. More than ``max_unsupported``
    unsupported claims raise a ``hallucination`` alert."""
    from ..grounding import GroundingResult, precheck_result

    @_kind("grounding")
    async def evaluate(sample: Sample) -> Evaluation:
        if sample.output is None:
            return NO_OUTPUT["grounding"]
        source = sample.context if sample.context is not None else context
        if source is None:
            raise ValueError("no context to ground the output in: pass one or push context=")
        # Values the customer gave may be repeated back.
        known = f"{source}\n\n{sample.text}"
        result: GroundingResult = (
            await judge.acheck_grounding(sample.output, known, question=sample.input, names=names)
            if judge is not None
            else precheck_result(sample.output, known, names)
        )
        unsupported = [c.text for c in result.unsupported]
        details = {
            "faithfulness": result.faithfulness,
            "unsupported": unsupported,
            "claims": [c.to_json() for c in result.claims],
        }
        passed = len(unsupported) <= max_unsupported
        alert = None
        if not passed:
            alert = AlertSpec(
                "hallucination",
                severity,
                f"{len(unsupported)} unsupported claim(s): {', '.join(unsupported)}",
                {"unsupported": unsupported},
            )
        return Evaluation("grounding", result.faithfulness, passed, details, alert)

    return evaluate


def constraints_evaluator(
    checks: Checks, *, critical: Collection[str] = (), severity: Severity = "medium"
) -> Evaluator:
    """Named checks of the output (the plugin's constraints). A failed check raises a
    ``constraint`` alert: ``high`` when it is one of ``critical``, else ``severity``."""
    from ..metrics import as_checks

    named = as_checks(checks)

    @_kind("constraints")
    def evaluate(sample: Sample) -> Evaluation:
        if sample.output is None:
            return NO_OUTPUT["constraints"]
        outcomes = [check.run(sample.output) for check in named]
        failed = [o for o in outcomes if not o.passed]
        alert = None
        if failed:
            names = [o.name for o in failed]
            alert = AlertSpec(
                "constraint",
                "high" if set(names) & set(critical) else severity,
                f"failed {', '.join(names)}",
                {"failed": [o.to_json() for o in failed]},
            )
        return Evaluation(
            "constraints",
            (len(outcomes) - len(failed)) / len(outcomes) if outcomes else 1.0,
            not failed,
            {"checks": [o.to_json() for o in outcomes]},
            alert,
        )

    return evaluate
