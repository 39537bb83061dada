"""``assert_*`` helpers: compute a metric, write it into the running test's record,
and on failure raise an ``AssertionError`` that shows score, threshold and why."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import thresholds
from .errors import LLMEvalAssertionError
from .metrics import Checks, MetricResult, exact_match, run_checks, token_f1
from .records import current_record

if TYPE_CHECKING:
    from .judge import Judge, JudgeResult

_SHOWN_CHARS = 300


def assert_exact_match(
    output: str, expected: str | None, *, normalize: bool = True
) -> MetricResult:
    """Assert that ``output`` equals ``expected`` after SQuAD normalisation
    (lower case, no punctuation or articles, folded white space) unless ``normalize=False``."""
    __tracebackhide__ = True
    reference = _reference("exact_match", expected)
    score = exact_match(output, reference, normalize=normalize)
    result = MetricResult("exact_match", score, 1.0, score == 1.0, {"normalized": normalize})
    _conclude(
        result,
        output,
        f"exact_match failed{' (normalized)' if normalize else ''}",
        expected=reference,
    )
    return result


def assert_token_f1(
    output: str, expected: str | None, *, threshold: float | None = None
) -> MetricResult:
    """Assert SQuAD token F1 of ``output`` against ``expected`` is at least the threshold
    (default 0.8; see the ``llmeval_thresholds`` ini key)."""
    __tracebackhide__ = True
    reference = _reference("token_f1", expected)
    limit = thresholds.resolve("token_f1", _partition(), threshold)
    precision, recall, f1 = token_f1(output, reference)
    result = MetricResult(
        "token_f1",
        f1,
        limit,
        f1 >= limit,
        {"precision": round(precision, 6), "recall": round(recall, 6)},
    )
    _conclude(
        result,
        output,
        f"token_f1 {f1:.3f} < threshold {limit:.3f}{_where()}\n"
        f"  precision {precision:.3f}, recall {recall:.3f}",
        expected=reference,
    )
    return result


def assert_constraints(output: str, checks: Checks) -> MetricResult:
    """Assert that every named check passes. ``checks`` is a list of :class:`Check` or
    callables, or a ``{name: callable}`` mapping; each is reported by name, and a check
    that raises counts as failed with its error."""
    __tracebackhide__ = True
    outcomes = run_checks(output, checks)
    if not outcomes:
        raise ValueError("assert_constraints needs at least one check")
    failed = [o for o in outcomes if not o.passed]
    score = 1 - len(failed) / len(outcomes)
    result = MetricResult(
        "constraints", score, 1.0, not failed, {"checks": [o.to_json() for o in outcomes]}
    )
    lines = [f"constraints: {len(failed)} of {len(outcomes)} checks failed{_where()}"]
    for o in outcomes:
        mark = "ok  " if o.passed else "FAIL"
        why = (o.error and f"raised {o.error}") or o.detail
        lines.append(f"  {mark} {o.name}{': ' + why if why else ''}")
    _conclude(
        result, output, "\n".join(lines), kind="constraints:" + ",".join(o.name for o in failed)
    )
    return result


def assert_judge(
    judge: Judge | JudgeResult,
    response: str | None = None,
    *,
    threshold: float | None = None,
    **score: Any,
) -> JudgeResult:
    """Assert that the judge's mean score (1-5) reaches the threshold (default 3, golden 4;
    see ``llmeval_thresholds``). Pass a :class:`Judge` with the response and the
    ``score`` arguments (``task=``, ``criteria=``, ``input=`` ...), or a
    :class:`JudgeResult` computed earlier."""
    __tracebackhide__ = True
    from .judge import JudgeResult

    if isinstance(judge, JudgeResult):
        result = judge
    elif response is None:
        raise TypeError("assert_judge(judge, response, task=..., criteria=...) needs a response")
    else:
        result = judge.score(response, **score)
    limit = thresholds.resolve("judge", _partition(), threshold)
    metric = MetricResult(
        "judge",
        result.mean,
        limit,
        result.mean >= limit,
        {
            "scores": result.scores,
            "variance": result.variance,
            "stable": result.stable,
            "model": result.model,
            "prompt_sha256": result.prompt_sha256,
        },
    )
    lines = [
        f"judge {result.mean:.2f} < threshold {limit:.2f}{_where()}",
        f"  scores {result.scores}{'' if result.stable else ' (unstable: samples disagree)'}",
        f"  reasoning: {result.reasoning}",
    ]
    if result.weaknesses:
        lines.append(f"  weaknesses: {'; '.join(result.weaknesses)}")
    _conclude(metric, response, "\n".join(lines))
    return result


def assert_grounded(
    output: str, context: str, *, names: Iterable[str] = (), max_unsupported: int = 0
) -> MetricResult:
    """Assert that every price, percentage, number, date and product name of ``output``
    appears in ``context`` (the deterministic pre-check: no model needed). ``names`` adds
    product or feature names to check; ``max_unsupported`` tolerates a few."""
    __tracebackhide__ = True
    from .grounding import UNSUPPORTED, faithfulness, precheck

    claims = precheck(output, context, names)
    unsupported = [c for c in claims if c.label == UNSUPPORTED]
    result = MetricResult(
        "grounding",
        faithfulness(claims),
        1.0,
        len(unsupported) <= max_unsupported,
        {
            "claims": [c.to_json() for c in claims],
            "unsupported": len(unsupported),
            "method": "precheck",
        },
    )
    lines = [
        f"grounding: {len(unsupported)} unsupported claim(s) of {len(claims)} checked{_where()}"
    ]
    lines += [f"  UNSUPPORTED {c.kind} {c.text!r}: {c.evidence}" for c in unsupported]
    _conclude(result, output, "\n".join(lines))
    return result


def _reference(metric: str, expected: str | None) -> str:
    if expected is None:
        raise ValueError(
            f"{metric} needs a reference answer, but expected is None "
            "(a reference-free example); use assert_constraints or a judge instead"
        )
    return expected


def _partition() -> str | None:
    record = current_record()
    return record.partition if record is not None else None


def _where() -> str:
    partition = _partition()
    return f" ({partition})" if partition else ""


def _conclude(
    result: MetricResult,
    output: str | None,
    headline: str,
    *,
    expected: str | None = None,
    kind: str | None = None,
) -> None:
    """Record the result on the running test and raise if it failed."""
    __tracebackhide__ = True
    record = current_record()
    if record is not None:
        record.metrics.append(result.to_json())
        if record.output is None:
            record.output = output
    if result.passed:
        return
    lines = [headline] if output is None else [headline, f"  output:   {_clip(output)}"]
    if expected is not None:
        lines.append(f"  expected: {_clip(expected)}")
    raise LLMEvalAssertionError("\n".join(lines), result, kind=kind)


def _clip(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 3] + "..."
