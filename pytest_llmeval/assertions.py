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
    from .embeddings import Embedder, Similarity
    from .grounding import GroundingResult
    from .judge import Judge, JudgeResult, PairwiseResult

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


def assert_similar(
    output: str | Similarity,
    expected: str | None = None,
    *,
    threshold: float | None = None,
    embedder: Embedder | None = None,
) -> MetricResult:
    """Assert that the cosine similarity of the embeddings of ``output`` and ``expected``
    reaches the threshold (default 0.85, golden 0.88; see ``llmeval_thresholds``). The
    embedder is the session's (``llmeval_embedding_model``: ``local`` or an
    OpenAI-compatible embedding model) unless one is given. A :class:`Similarity`
    computed earlier (``compare_texts``, ``acompare_texts``) is accepted too."""
    __tracebackhide__ = True
    from .embeddings import Similarity, compare_texts

    if isinstance(output, Similarity):
        computed = output
    else:
        computed = compare_texts(output, _reference("similarity", expected), embedder)
    score = computed.score
    limit = thresholds.resolve("similarity", _partition(), threshold)
    result = MetricResult(
        "similarity", score, limit, score >= limit, {"embedder": computed.embedder}
    )
    _conclude(
        result,
        computed.output,
        f"similarity {score:.3f} < threshold {limit:.3f}{_where()} ({computed.embedder})",
        expected=computed.expected,
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
    output: str | GroundingResult,
    context: str | None = None,
    *,
    judge: Judge | None = None,
    question: Any = None,
    names: Iterable[str] = (),
    max_unsupported: int = 0,
) -> GroundingResult:
    """Assert that ``output`` makes no claim that ``context`` does not support.

    Without a judge, the deterministic pre-check: every price, percentage, number, date
    and product name must appear in the context. With ``judge=``, the judge also splits
    the answer into claims and labels each (SUPPORTED, UNSUPPORTED, NOT_CHECKABLE,
    REASONABLE_INFERENCE), and the pre-check overrules it on values. A
    :class:`GroundingResult` computed earlier is accepted too. ``names`` adds product or
    feature names to check; ``max_unsupported`` tolerates a few unsupported claims."""
    __tracebackhide__ = True
    from .grounding import GroundingResult, precheck_result

    answer: str | None = None
    if isinstance(output, GroundingResult):
        result = output
    elif context is None:
        raise TypeError("assert_grounded(output, context) needs the context to check against")
    elif judge is None:
        answer, result = output, precheck_result(output, context, names)
    else:
        answer = output
        result = judge.check_grounding(output, context, question=question, names=names)
    unsupported = result.unsupported
    metric = MetricResult(
        "grounding",
        result.faithfulness,
        1.0,
        len(unsupported) <= max_unsupported,
        {
            "claims": [c.to_json() for c in result.claims],
            "unsupported": len(unsupported),
            "method": result.method,
        },
    )
    lines = [
        f"grounding: {len(unsupported)} unsupported claim(s) of {len(result.claims)} "
        f"checked{_where()}, faithfulness {result.faithfulness:.2f}"
    ]
    lines += [f"  UNSUPPORTED {c.kind} {c.text!r}: {c.evidence}" for c in unsupported]
    _conclude(metric, answer, "\n".join(lines))
    return result


def assert_preferred(
    judge: Judge | PairwiseResult,
    candidate: str | None = None,
    baseline: str | None = None,
    **compare: Any,
) -> PairwiseResult:
    """Assert that ``candidate`` is not worse than ``baseline`` by the pairwise judge,
    asked in both orders (``task=``, ``criteria=``, ``input=``). A tie passes; when the
    orders disagree it is a tie and is counted as position bias in the summary. A
    :class:`PairwiseResult` from ``judge.compare(candidate, baseline, ...)`` is accepted.

    When the run's judge is position-biased more often than ``llmeval_max_position_bias``,
    such ties on golden and regression examples are errors of class ``judge`` (the plugin
    decides it at the end of the run, from every comparison)."""
    __tracebackhide__ = True
    from .judge import PairwiseResult

    if isinstance(judge, PairwiseResult):
        result = judge
    elif candidate is None or baseline is None:
        raise TypeError("assert_preferred(judge, candidate, baseline, task=...) needs both texts")
    else:
        result = judge.compare(candidate, baseline, **compare)
    score = {"a": 1.0, "tie": 0.5, "b": 0.0}[result.winner]
    metric = MetricResult(
        "preference",
        score,
        0.5,
        score >= 0.5,
        {
            "winner": {"a": "candidate", "b": "baseline", "tie": "tie"}[result.winner],
            "position_bias": result.position_bias,
            "model": result.model,
            "prompt_sha256": result.prompt_sha256,
        },
    )
    lines = [
        f"preference: the baseline is preferred in both orders{_where()}",
        f"  candidate first: {result.reasoning[0]}",
        f"  baseline first:  {result.reasoning[1]}",
    ]
    _conclude(metric, candidate, "\n".join(lines), expected=baseline, reference="baseline")
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
    reference: str = "expected",
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
        lines.append(f"  {reference + ':':<9} {_clip(expected)}")
    raise LLMEvalAssertionError("\n".join(lines), result, kind=kind)


def _clip(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 3] + "..."
