"""A run against its baseline: per-example samples of each gated metric by partition,
the metadata that decides whether two runs are comparable, the gated family's
comparisons and the decision they make (render.py shows them).

Works on records in their JSON form (``Record.to_json()`` or a report's ``records``), so
the same code reads this run and a stored baseline. The statistics (numpy, scipy) are
imported only when two runs are compared.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from ..partitions import PARTITIONS
from ..records import LLM_ERROR, RecordJSON, RubricVerdict, case_of, is_rubric
from .report import check_unique

if TYPE_CHECKING:
    from ..settings import RegressionSettings
    from ..stats import Comparison, Kind, Samples

JUDGE_SCALE = (1.0, 5.0)
# metric -> (kind, scale): what the statistics need to know about it.
METRICS: dict[str, tuple[str, tuple[float, float]]] = {
    "pass_rate": ("binary", (0.0, 1.0)),
    "judge": ("ordinal", JUDGE_SCALE),
    # From the metrics the pipeline helpers record: whether the example's tool calls were
    # as expected, and the share of its relevant documents the retriever found.
    "tool_calls": ("binary", (0.0, 1.0)),
    "retrieval_recall": ("continuous", (0.0, 1.0)),
}


def samples(
    records: Sequence[RecordJSON],
    metric: str,
    judged: Collection[str] = (),
) -> Mapping[str, Samples]:
    """partition -> example id -> the example's samples of ``metric``.

    ``pass_rate``: one 0/1 sample per draw of the example (one, unless it was repeated),
    1 when every test of the draw passed. A test that errored because a model call failed
    after retries is missing (None), not a failure: the infrastructure, not the model,
    lost it. ``judge``: every rubric score of the example's verdicts (k samples; a failed
    judge sample is None, and so is a panel's verdict missing a judge). A test whose case
    (its node id without the draw) is in ``judged`` (it produced verdicts in either run)
    that failed before the judge saw anything scores the scale minimum when the app
    failed, and is missing when a model call was lost. ``tool_calls``: 1 or 0 per
    ``assert_tool_calls`` of the example (passed or not); ``retrieval_recall``: each
    ``assert_retrieval``'s recall. For
    these two, ``judged`` holds the cases that recorded the metric in either run: such
    a test that failed first scores 0, or is missing when a model call was lost."""
    if metric not in METRICS:
        raise ValueError(f"unknown gated metric {metric!r}; valid: {', '.join(METRICS)}")
    found: dict[str, dict[str, list[float | None]]] = {}
    # (partition, example) -> draw -> its tests' outcomes
    passed: dict[tuple[str, str], dict[int, list[bool | None]]] = {}
    for record in records:
        key = (record["partition"], record["example_id"])
        lost = record["status"] == "error" and str(record.get("failure_kind") or "").startswith(
            LLM_ERROR
        )
        if metric == "pass_rate":
            if record["status"] != "skipped":
                draws = passed.setdefault(key, {})
                outcome = None if lost else record["status"] == "passed"
                draws.setdefault(record.get("draw") or 1, []).append(outcome)
            continue
        if metric != "judge":
            entries = [m for m in record.get("metrics", []) if m["name"] == metric]
            if not entries and _case(record) in judged and record["status"] != "skipped":
                # The test measures this but failed first (an agent stopped at a limit):
                # the worst outcome, as for the judge; a lost call is missing.
                if record["status"] != "passed":
                    found.setdefault(key[0], {}).setdefault(key[1], []).append(
                        None if lost else 0.0
                    )
                continue
            if entries:
                values = [
                    None
                    if m["score"] is None
                    else float(m["passed"] if metric == "tool_calls" else m["score"])
                    for m in entries
                ]
                found.setdefault(key[0], {}).setdefault(key[1], []).extend(values)
            continue
        scores = [
            score
            for verdict in record.get("judge", [])
            if is_rubric(verdict)
            for score in _rubric_samples(verdict)
        ]
        if not scores and _case(record) in judged and record["status"] != "skipped":
            # No verdict because the test failed first: the model's failure is a real
            # (worst) outcome; a lost call is missing.
            scores = [None if lost else JUDGE_SCALE[0]] if record["status"] != "passed" else []
        if scores:
            found.setdefault(key[0], {}).setdefault(key[1], []).extend(scores)
    for (partition, example), draws in passed.items():
        found.setdefault(partition, {})[example] = [_all_passed(o) for o in draws.values()]
    return found


def _all_passed(outcomes: list[bool | None]) -> float | None:
    """1 when every test of a draw passed, 0 when one failed; missing when none failed
    but a lost model call leaves it unknown."""
    known = [o for o in outcomes if o is not None]
    return None if len(known) < len(outcomes) and all(known) else float(all(known))


def _rubric_samples(verdict: RubricVerdict) -> list[float | None]:
    """A rubric verdict's samples. A panel's whose judge gave no verdict is missing as a
    whole: its mean would lean toward the judges that answered."""
    if any(entry["mean"] is None for entry in verdict.get("panel", [])):
        return [None]
    return [None if s is None else float(s) for s in verdict["scores"]]


def _case(record: Mapping[str, Any]) -> str:
    """The test and example a record is a draw of: runs drawn differently share it."""
    return case_of(str(record.get("nodeid") or ""), record["example_id"], record.get("draw"))


def measured_tests(metric: str, *runs: Sequence[RecordJSON]) -> set[str]:
    """The cases (node ids without the draw) that recorded ``metric`` in any run."""
    return {
        _case(r)
        for run in runs
        for r in run
        if r.get("nodeid") and any(m["name"] == metric for m in r.get("metrics", []))
    }


def judged_tests(*runs: Sequence[RecordJSON]) -> set[str]:
    """The cases (node ids without the draw) that produced a rubric verdict in any run."""
    return {
        _case(r)
        for records in runs
        for r in records
        if r.get("nodeid") and any(is_rubric(v) for v in r.get("judge", []))
    }


class RunMetadata(TypedDict):
    """What must match between a baseline and a candidate for their judge scores to be
    compared, and the dataset hashes (the regression report's ``metadata``)."""

    judge_model: list[str]
    judge_prompt_sha256: list[str]
    scale: list[list[float]]
    parser: list[str]
    datasets: dict[str, str | None]


def metadata(records: Sequence[RecordJSON]) -> RunMetadata:
    """The run's :class:`RunMetadata`: judge model, prompt sha256, scale and parser of
    its rubric verdicts, and the hash of each dataset."""
    verdicts = [v for r in records for v in r.get("judge", []) if is_rubric(v)]
    return {
        # A panel's verdict is its judges': a changed panel is a changed judge.
        "judge_model": sorted({p["model"] for v in verdicts for p in v.get("panel", [v])}),
        "judge_prompt_sha256": sorted({v["prompt_sha256"] for v in verdicts}),
        "scale": [list(s) for s in sorted({tuple(v.get("scale", JUDGE_SCALE)) for v in verdicts})],
        "parser": sorted({v.get("parser", "") for v in verdicts}),
        "datasets": {d: r.get("dataset_hash") for r in records if (d := r.get("dataset"))},
    }


def check_deltas(delta: Mapping[str, float]) -> None:
    """ValueError unless every δ is a positive number: checked whether or not the
    reports hold the metric, so a typo never waits for the run that needs it."""
    for metric, value in delta.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"llmeval_delta: {metric}:{value:g} is not a positive number (δ is the "
                f"smallest change in {metric} that matters)"
            )


def compare_runs(
    baseline: Sequence[RecordJSON],
    candidate: Sequence[RecordJSON],
    settings: RegressionSettings,
) -> list[Comparison]:
    """Every gated (metric, partition) of the candidate run, compared with the baseline's
    on the examples both runs evaluated, with Holm across the family. Judge scores from
    runs whose judges differ are REFUSED, not compared, and so is a (metric, partition)
    for which the baseline holds fewer than half of this run's examples: those are not
    runs of the same dataset. ValueError on duplicate ids, a score off the scale (hard
    errors, not verdicts) or a δ that is not a positive number."""
    from ..stats import apply_holm, compare

    check_deltas(settings.delta)
    check_unique(baseline, "the baseline")
    check_unique(candidate, "this run")
    # The tests that measure each metric: one of them that failed before measuring counts.
    measured = {
        metric: judged_tests(baseline, candidate)
        if metric == "judge"
        else measured_tests(metric, baseline, candidate)
        for metric in METRICS
    }
    base = {metric: samples(baseline, metric, measured[metric]) for metric in METRICS}
    cand = {metric: samples(candidate, metric, measured[metric]) for metric in METRICS}
    ran = {r["partition"] for r in candidate}
    family = [
        (metric, partition)
        for metric in METRICS
        for partition in PARTITIONS
        if settings.gated(metric, partition)
        and partition in ran
        and (partition in base[metric] or partition in cand[metric])
    ]
    meta = {"baseline": metadata(baseline), "candidate": metadata(candidate)}
    mismatches, notes = comparable(meta["baseline"], meta["candidate"])
    clusters = {r["example_id"]: c for r in candidate if (c := r.get("cluster"))}
    results = []
    for metric, partition in family:
        kind, scale = METRICS[metric]
        options: dict[str, Any] = {
            "kind": kind,
            "delta": settings.delta[metric],
            "alpha": settings.alpha,
            "m": len(family),
            "metadata": meta,
        }
        before, after = base[metric].get(partition, {}), cand[metric].get(partition, {})
        shared = len(set(before) & set(after))
        if 2 * shared < len(after):
            # Paired on a sliver, a verdict would speak for examples the baseline never
            # saw; with no overlap at all, INSUFFICIENT_DATA would PROCEED having checked
            # nothing.
            reason = (
                f"the baseline shares {shared} of {len(after)} gated examples of {partition} "
                "with this run, fewer than half: they are not runs of the same dataset; save "
                "a new baseline"
            )
            counts: dict[str, Any] = {
                "n": shared,
                "n_baseline": len(before),
                "n_candidate": len(after),
            }
            results.append(refused(metric, partition, reason=reason, **options, **counts))
            continue
        if metric == "judge" and mismatches:
            results.append(refused(metric, partition, mismatches, **options))
            continue
        before, after, unshared = _shared(
            before,
            after,
            _examples(baseline, partition),
            _examples(candidate, partition),
        )
        results.append(
            compare(
                before,
                after,
                metric=metric,
                partition=partition,
                scale=scale,
                clusters=clusters or None,
                strict=settings.strict,
                extra_warnings=[*notes, *unshared],
                **options,
            )
        )
    return apply_holm(results)


def _examples(records: Sequence[RecordJSON], partition: str) -> set[str]:
    return {r["example_id"] for r in records if r["partition"] == partition}


def _shared(
    base: Samples, cand: Samples, base_ids: set[str], cand_ids: set[str]
) -> tuple[Samples, Samples, list[str]]:
    """Samples of the examples both runs evaluated, and a warning naming how many each
    run has alone. An example one run did not select (a changed dataset, ``-k``, tags) is
    not missing data; one it ran and lost is, and counts in missing_frac."""
    shared = base_ids & cand_ids
    only_base, only_cand = len(base_ids - shared), len(cand_ids - shared)
    notes = []
    if only_base or only_cand:
        notes.append(
            f"compared on the {len(shared)} examples both runs evaluated: {only_base} only "
            f"in the baseline, {only_cand} only in this run"
        )
    keep = {i: v for i, v in base.items() if i in shared}
    return keep, {i: v for i, v in cand.items() if i in shared}, notes


def decision(comparisons: Sequence[Comparison], *, fails: bool = True) -> tuple[bool, str]:
    """(blocks, the line saying so). ``fails`` False: a block is reported, not enforced.
    The line names each blocking comparison and, unless it is a REGRESSION, why it
    blocks; comparisons that block for the same reason share it."""
    groups: dict[tuple[str, str], list[str]] = {}
    for c in comparisons:
        if c.blocks:
            groups.setdefault((c.verdict, _why(c)), []).append(f"{c.metric}[{c.partition}]")
    blocking = [
        f"{' and '.join(labels)} {verdict} ({why})"
        if why
        else ", ".join(f"{label} {verdict}" for label in labels)
        for (verdict, why), labels in groups.items()
    ]
    if not blocking:
        n = len(comparisons)
        return False, f"regression: PROCEED, no blocking verdict ({n} comparison{'s' * (n != 1)})"
    listed = ", ".join(blocking)
    if not fails:
        return False, f"regression: would BLOCK ({listed}); llmeval_regression_fails = no"
    return True, f"regression: BLOCK, {listed}"


def _why(c: Comparison) -> str:
    """Why a comparison blocks, in a few words ("" for a REGRESSION: it says it)."""
    if c.verdict == "REFUSED":
        if c.mismatches:
            return differing(c.mismatches)
        return c.refusal.partition(": ")[0]
    if c.verdict == "INSUFFICIENT_DATA":
        return "strict: the interval reaches \N{MINUS SIGN}δ"
    return ""


# -- comparability: run metadata, not statistics -------------------------------------------

# The metadata that must match for judge scores to be comparable (``metadata()``).
COMPARED_FIELDS = ("judge_model", "judge_prompt_sha256", "scale", "parser")
_FIELD_NAMES = {
    "judge_model": "judge model",
    "judge_prompt_sha256": "judge prompt",
    "scale": "score scale",
    "parser": "verdict parser",
}


def _normal(value: Any) -> Any:
    """JSON round trips turn tuples into lists and 5 into 5.0; compare what they mean."""
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def comparable(
    baseline_meta: Mapping[str, Any], candidate_meta: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """(mismatches, warnings): which of judge model, judge prompt sha256, scale and parser
    differ (any mismatch means REFUSED), and a warning per changed dataset hash (allowed:
    only the shared ids are compared). Keys as in ``metadata()``."""
    mismatches = [
        name
        for name in COMPARED_FIELDS
        if _normal(baseline_meta.get(name)) != _normal(candidate_meta.get(name))
    ]
    base_sets = dict(baseline_meta.get("datasets") or {})
    cand_sets = dict(candidate_meta.get("datasets") or {})
    if "dataset_hash" in baseline_meta or "dataset_hash" in candidate_meta:
        base_sets.setdefault("dataset", baseline_meta.get("dataset_hash"))
        cand_sets.setdefault("dataset", candidate_meta.get("dataset_hash"))
    notes = [
        f"dataset {name!r} changed (hash {base_sets.get(name)} -> {cand_sets.get(name)}): "
        "only the shared example ids are compared"
        for name in sorted(set(base_sets) | set(cand_sets))
        if base_sets.get(name) != cand_sets.get(name)
    ]
    return mismatches, notes


def differing(mismatches: Sequence[str]) -> str:
    """What differs, as a clause: the judge prompt differs, the judge model and judge
    prompt differ."""
    names = " and ".join(_FIELD_NAMES.get(f, f) for f in mismatches)
    return f"the {names} {'differs' if len(mismatches) == 1 else 'differ'}"


def refused(
    metric: str,
    partition: str,
    mismatches: Sequence[str] = (),
    *,
    reason: str = "",
    n: int = 0,
    n_baseline: int = 0,
    n_candidate: int = 0,
    kind: Kind | None = None,
    delta: float = math.nan,
    alpha: float = 0.05,
    m: int = 1,
    metadata: Mapping[str, Any] | None = None,
) -> Comparison:
    """The REFUSED comparison of two runs that are not comparable: it blocks. Either
    their judges differ (``comparable``'s mismatches: the line says to re-judge the
    baseline outputs) or for ``reason``: what is wrong, ": ", what to do (the summary's
    decision line quotes the first part). ``n``, ``n_baseline`` and ``n_candidate``
    say what each run has."""
    from ..stats.comparison import Comparison
    from ..stats.verdict import finish, minimum_n

    if not mismatches and not reason:
        raise ValueError("refused() needs at least one mismatching field, or a reason")
    if mismatches:
        note = f"not comparable: {differing(mismatches)}"
        line = (
            f"Refused: {differing(mismatches)} from the baseline's; re-judge the stored "
            "baseline outputs with the current judge. Blocking."
        )
    else:
        note, line = reason, f"Refused: {reason}. Blocking."
    return finish(
        Comparison(
            metric=metric,
            partition=partition,
            kind=kind,
            paired=True,
            test="none",
            n=n,
            n_baseline=n_baseline,
            n_candidate=n_candidate,
            n_min=minimum_n(alpha / m),
            missing_frac=math.nan,
            ci_level=1 - alpha / m,
            delta=delta,
            alpha=alpha,
            m=m,
            mismatches=tuple(mismatches),
            refusal="" if mismatches else reason,
            metadata=dict(metadata or {}),
            warnings=(note,),
            line=line,
        )
    )
