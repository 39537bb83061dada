"""What a run contributes to a regression comparison: per-example samples of each gated
metric by partition, and the metadata that decides whether two runs are comparable.

Works on records in their JSON form (``Record.to_json()`` or a report's ``records``), so
the same code reads this run and a stored baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .partitions import PARTITIONS
from .records import LLM_ERROR

if TYPE_CHECKING:
    from .regression import Comparison
    from .settings import RegressionSettings

JUDGE_SCALE = (1.0, 5.0)
# metric -> (kind, scale): what the statistics need to know about it.
METRICS: dict[str, tuple[str, tuple[float, float]]] = {
    "pass_rate": ("binary", (0.0, 1.0)),
    "judge": ("ordinal", JUDGE_SCALE),
}


def samples(
    records: Sequence[Mapping[str, Any]], metric: str
) -> dict[str, dict[str, list[float | None]]]:
    """partition -> example id -> the example's samples of ``metric``.

    ``pass_rate``: one 0/1 sample per example, 1 when every test of the example passed.
    A test that errored because a model call failed after retries is missing (None), not
    a failure: the infrastructure, not the model, lost it. ``judge``: every rubric score
    of the example's verdicts (k samples; a failed judge sample is None)."""
    if metric not in METRICS:
        raise ValueError(f"unknown gated metric {metric!r}; valid: {', '.join(METRICS)}")
    found: dict[str, dict[str, list[float | None]]] = {}
    passed: dict[tuple[str, str], list[bool | None]] = {}
    for record in records:
        key = (record["partition"], record["example_id"])
        if metric == "pass_rate":
            if record["status"] == "skipped":
                continue
            lost = record["status"] == "error" and str(record.get("failure_kind") or "").startswith(
                LLM_ERROR
            )
            passed.setdefault(key, []).append(None if lost else record["status"] == "passed")
        else:
            scores = [
                None if s is None else float(s)
                for verdict in record.get("judge", [])
                if verdict.get("kind") == "rubric"
                for s in verdict["scores"]
            ]
            if scores:
                found.setdefault(key[0], {}).setdefault(key[1], []).extend(scores)
    for (partition, example), outcomes in passed.items():
        known = [o for o in outcomes if o is not None]
        value = None if len(known) < len(outcomes) and all(known) else float(all(known))
        found.setdefault(partition, {})[example] = [value]
    return found


def metadata(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What must match between a baseline and a candidate for their judge scores to be
    compared (judge model, prompt sha256, scale, parser), and the dataset hashes."""
    verdicts = [v for r in records for v in r.get("judge", []) if v.get("kind") == "rubric"]
    return {
        "judge_model": sorted({v["model"] for v in verdicts}),
        "judge_prompt_sha256": sorted({v["prompt_sha256"] for v in verdicts}),
        "scale": [list(s) for s in sorted({tuple(v.get("scale", JUDGE_SCALE)) for v in verdicts})],
        "parser": sorted({v.get("parser", "") for v in verdicts}),
        "datasets": {r["dataset"]: r.get("dataset_hash") for r in records if r.get("dataset")},
    }


def compare_runs(
    baseline: Sequence[Mapping[str, Any]],
    candidate: Sequence[Mapping[str, Any]],
    settings: RegressionSettings,
) -> list[Comparison]:
    """Every gated (metric, partition) that either run has, compared with Holm across the
    family. Judge scores from runs whose judges differ are REFUSED, not compared."""
    from .regression import apply_holm, comparable, compare, refused

    base = {metric: samples(baseline, metric) for metric in METRICS}
    cand = {metric: samples(candidate, metric) for metric in METRICS}
    family = [
        (metric, partition)
        for metric in METRICS
        for partition in PARTITIONS
        if settings.gated(metric, partition)
        and (partition in base[metric] or partition in cand[metric])
    ]
    meta = {"baseline": metadata(baseline), "candidate": metadata(candidate)}
    mismatches, notes = comparable(meta["baseline"], meta["candidate"])
    clusters = {r["example_id"]: r["cluster"] for r in candidate if r.get("cluster")}
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
        if metric == "judge" and mismatches:
            results.append(refused(metric, partition, mismatches, **options))
            continue
        results.append(
            compare(
                base[metric].get(partition, {}),
                cand[metric].get(partition, {}),
                metric=metric,
                partition=partition,
                scale=scale,
                clusters=clusters or None,
                strict=settings.strict,
                extra_warnings=notes,
                **options,
            )
        )
    return apply_holm(results)
