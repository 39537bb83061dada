"""``assert_*`` helpers: compute a metric, write it into the running test's record,
and on failure raise an ``AssertionError`` that shows score, threshold and why."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import thresholds
from .errors import LLMEvalAssertionError
from .metrics import Checks, MetricResult, exact_match, run_checks, token_f1
from .records import Record, StepLimits, ToolCall, as_document, current_record
from .trajectory import (
    ArgsRule,
    Order,
    Trajectory,
    call_matches,
    call_text,
    expected_call,
    match_calls,
)

if TYPE_CHECKING:
    from .dataset import ExpectedToolCall
    from .embeddings import Embedder, Similarity
    from .grounding import GroundingResult
    from .judge import Judge, JudgeResult, PairwiseResult
    from .retrieval import RetrievalScores

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


def assert_tool_calls(
    trajectory: Trajectory | Record | Sequence[ToolCall] | None,
    expected: Iterable[str | Mapping[str, Any] | ExpectedToolCall] | None,
    *,
    order: Order = "in_order",
    args: ArgsRule = "subset",
) -> MetricResult:
    """Assert that the app's tool calls hold the ``expected`` ones (tool names, or
    ``{"name": ..., "args": {...}}``; an example's ``expected_tool_calls`` as they are).
    ``order``: ``in_order`` (in this order, others may come between), ``exact`` (these
    calls and no others, in this order) or ``any``; ``args``: ``subset`` (the expected
    arguments have these values, others may be there) or ``exact``. The calls are the
    tools the app ran (``@traced``, ``llmeval_record.step``, OpenTelemetry), or when it
    recorded none, those the model asked for; ``trajectory=None`` is the running test's."""
    __tracebackhide__ = True
    if order not in ("in_order", "exact", "any") or args not in ("subset", "exact"):
        raise ValueError(f"order={order!r}, args={args!r}: see assert_tool_calls' docstring")
    if expected is None:
        raise ValueError(
            "assert_tool_calls: expected is None (an example without expected_tool_calls?)"
        )
    wanted = [expected_call(e if isinstance(e, str) else _plain(e)) for e in expected]
    actual = _calls(trajectory)
    matched = match_calls(actual, wanted, order, args)
    hits = sum(i is not None for i in matched)
    extra = order == "exact" and len(actual) > len(wanted)
    passed = hits == len(wanted) and not extra
    score = hits / len(wanted) if wanted else float(not actual or order != "exact")
    result = MetricResult(
        "tool_calls",
        score,
        1.0,
        passed,
        {"order": order, "args": args, "expected": wanted, "actual": actual},
    )
    lines = [
        f"tool_calls: {len(wanted) - hits} of {len(wanted)} expected calls not found "
        f"(order {order}, args {args}){_where()}"
        if not extra
        else f"tool_calls: {len(actual) - len(wanted)} calls more than expected (exact){_where()}",
        "  expected:",
    ]
    for n, (want, at) in enumerate(zip(wanted, matched, strict=True), 1):
        shown = call_text(want) if want["args"] is not None else f"{want['name']}(any arguments)"
        lines.append(f"    {n}. {shown}  {_found(want, at, actual, args)}")
    lines.append("  actual:" if actual else "  actual: no tool calls")
    lines += [f"    {n}. {call_text(call)}" for n, call in enumerate(actual, 1)]
    _conclude(result, None, "\n".join(lines))
    return result


def assert_retrieval(
    retrieved: Trajectory | Record | Sequence[Any] | None,
    relevant: Collection[str] | Mapping[str, float] | None,
    *,
    k: int = 5,
    min_recall: float | None = None,
    min_precision: float | None = None,
    min_mrr: float | None = None,
    min_ndcg: float | None = None,
) -> RetrievalScores:
    """Assert that a retriever's ranked results hold the ``relevant`` documents (ids,
    or id -> graded relevance; an example's ``relevant_ids``). Records recall@k,
    precision@k, MRR@k and nDCG@k as the metrics ``retrieval_recall``,
    ``retrieval_precision``, ``retrieval_mrr`` and ``retrieval_ndcg``. Recall must reach
    its threshold (default 0.8, golden 1.0; ``llmeval_thresholds``); each other metric
    only when given a minimum here or in ``llmeval_thresholds``. ``retrieved`` is a
    trajectory (its retrieval steps' documents), a list of ids or documents, or None:
    the running test's."""
    __tracebackhide__ = True
    from .retrieval import score_ranking

    if relevant is None:
        raise ValueError("assert_retrieval: relevant is None (an example without relevant_ids?)")

    if retrieved is None or isinstance(retrieved, Record | Trajectory):
        ranked = _trajectory(retrieved).retrieved_ids()
    else:
        ranked = [as_document(d)["id"] for d in retrieved]
    scores = score_ranking(ranked, relevant, k)
    partition = _partition()
    explicit = {
        "recall": min_recall,
        "precision": min_precision,
        "mrr": min_mrr,
        "ndcg": min_ndcg,
    }
    failed = []
    results = []
    for name, value in scores.as_dict().items():
        metric = f"retrieval_{name}"
        if name == "recall":
            limit: float | None = thresholds.resolve(metric, partition, explicit[name])
        else:
            limit = thresholds.configured(metric, partition, explicit[name])
        ok = limit is None or value >= limit
        details: dict[str, Any] = {"k": k}
        if name == "recall":
            details.update(found=list(scores.found), missed=list(scores.missed))
        results.append(MetricResult(metric, value, limit, ok, details))
        if not ok:
            failed.append(f"{name}@{k} {value:.3f} < {limit:.3f}")
    record = current_record()
    if record is not None:
        record.metrics += [r.to_json() for r in results]
    if failed:
        lines = [
            f"retrieval: {', '.join(failed)}{_where()}",
            f"  retrieved (top {k}): {ranked[:k]}",
            f"  relevant: {dict(relevant) if isinstance(relevant, Mapping) else list(relevant)}",
        ]
        if scores.missed:
            lines.append(f"  missed: {list(scores.missed)}")
        first_failed = next(r for r in results if not r.passed)
        raise LLMEvalAssertionError("\n".join(lines), first_failed, kind="retrieval")
    return scores


def assert_steps(
    trajectory: Trajectory | Record | None = None,
    *,
    max_steps: int | None = None,
    max_tool_calls: int | None = None,
    max_cost: float | None = None,
) -> MetricResult:
    """Assert that the trajectory stayed within its limits: the ones given, else the
    example's (``max_steps``, ``max_tool_calls``, ``max_cost``). (The ``llm`` fixture and
    ``@traced`` already stop an app at the example's limits; this states them in a test,
    and checks limits the example does not set.)"""
    __tracebackhide__ = True
    steps = _trajectory(trajectory)
    record = current_record()
    own = record.limits if record is not None else StepLimits()
    given = {
        "max_steps": own.get("max_steps") if max_steps is None else max_steps,
        "max_tool_calls": own.get("max_tool_calls") if max_tool_calls is None else max_tool_calls,
        "max_cost": own.get("max_cost") if max_cost is None else max_cost,
    }
    limits = {key: value for key, value in given.items() if value is not None}
    if not limits:
        raise ValueError("assert_steps needs a limit: max_steps=, max_tool_calls= or max_cost=")
    taken = {
        "max_steps": len(steps),
        "max_tool_calls": len(steps.tool_calls()),
        "max_cost": steps.cost_usd,
    }
    over = [
        f"{key.removeprefix('max_')} {taken[key]:g} > {limit:g}"
        for key, limit in limits.items()
        if taken[key] > limit
    ]
    result = MetricResult(
        "steps",
        float(len(steps)),
        float(limits["max_steps"]) if "max_steps" in limits else None,
        not over,
        {"limits": limits, "taken": taken},
    )
    headline = f"steps: {', '.join(over)}{_where()}\n" + _indent(steps.render())
    _conclude(result, None, headline, kind="steps")
    return result


def assert_task_completed(
    judge: Judge,
    trajectory: Trajectory | Record | None = None,
    *,
    task: str,
    criteria: Sequence[str] = (
        "achieves the goal the user asked for",
        "takes no harmful or unrequested action",
        "answers from what its tools and documents returned",
    ),
    input: Any = None,
    threshold: float | None = None,
) -> JudgeResult:
    """Assert that the rubric judge, shown the whole trajectory (as untrusted data, like
    every text it judges), finds that the agent achieved ``task``: ``assert_judge`` over
    the numbered steps."""
    __tracebackhide__ = True
    steps = _trajectory(trajectory)
    if not len(steps):
        raise ValueError("assert_task_completed: the trajectory holds no steps")
    shown = "The agent's steps, in order:\n" + steps.render()
    return assert_judge(
        judge, shown, threshold=threshold, task=task, criteria=criteria, input=input
    )


def _found(want: ToolCall, at: int | None, actual: Sequence[ToolCall], args: ArgsRule) -> str:
    if at is not None:
        return f"ok = actual {at + 1}"
    elsewhere = [i + 1 for i, call in enumerate(actual) if call_matches(call, want, args)]
    return f"out of order: actual {elsewhere[0]}" if elsewhere else "MISSING"


def _trajectory(given: Trajectory | Record | None) -> Trajectory:
    return given if isinstance(given, Trajectory) else Trajectory(given)


def _calls(given: Trajectory | Record | Sequence[ToolCall] | None) -> list[ToolCall]:
    if given is None or isinstance(given, Record | Trajectory):
        return _trajectory(given).tool_calls()
    return [expected_call(c if isinstance(c, str) else _plain(c)) for c in given]


def _plain(call: Any) -> Mapping[str, Any]:
    """An expected call as a mapping: a dict, or a pydantic model (an example's)."""
    if isinstance(call, Mapping):
        return call
    dump = getattr(call, "model_dump", None)
    if dump is None:
        raise TypeError(f"a tool call is a name or a mapping with a name: {call!r}")
    return dict(dump())


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


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
