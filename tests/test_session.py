"""Aggregation and gates as plain functions over records."""

from __future__ import annotations

import pytest

from pytest_llmeval.records import Record
from pytest_llmeval.runs.render import summary_lines
from pytest_llmeval.runs.report import build_report
from pytest_llmeval.runs.summary import aggregate, check_partitions, percentile
from pytest_llmeval.settings import Settings


def rec(example_id: str, partition: str, status: str = "passed", **kw: object) -> Record:
    return Record(
        example_id=example_id,
        partition=partition,
        nodeid=f"t.py::t[{example_id}]",
        status=status,
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, None), ([3.0], 95, 3.0), ([1, 2, 3, 4], 50, 2.5), ([1, 2, 3, 4, 5], 95, 4.8)],
)
def test_percentile_matches_numpy_linear(
    values: list[float], q: float, expected: float | None
) -> None:
    assert percentile(values, q) == (pytest.approx(expected) if expected is not None else None)


def test_aggregate_counts_rates_and_metric_means() -> None:
    records = [
        rec("a", "golden", metrics=[{"name": "f1", "score": 1.0}], latency_s=0.2),
        rec("b", "golden", "failed", metrics=[{"name": "f1", "score": 0.5}], duration_s=0.4),
        rec("c", "golden", "skipped"),
        rec("d", "distribution", "error", metrics=[{"name": "f1", "score": float("nan")}]),
    ]
    stats = aggregate(records)
    assert list(stats) == ["golden", "distribution"]
    golden = stats["golden"]
    assert (golden.cases, golden.passed, golden.failed, golden.skipped) == (3, 1, 1, 1)
    assert golden.pass_rate == pytest.approx(1 / 3)  # a skip is not a pass
    assert golden.metric_mean("f1") == 0.75
    assert golden.latencies == [0.2, 0.4]  # the model's latency, else the test's duration
    assert stats["distribution"].metric_mean("f1") is None  # NaN never reaches a mean


def test_gates_golden_hard_and_soft() -> None:
    records = [
        rec("g1", "golden"),
        rec("g2", "golden", "skipped"),
        rec("r1", "regression", "skipped"),
        rec("r2", "regression"),
        *[rec(f"d{i}", "distribution", "failed" if i < 2 else "passed") for i in range(10)],
    ]
    settings = Settings(min_pass_rate={"distribution": 0.8})
    verdicts = {v.partition: v for v in check_partitions(records, aggregate(records), settings)}
    assert not verdicts["golden"].passed
    assert verdicts["golden"].not_passed == (("g2", "skipped"),)
    assert verdicts["regression"].passed  # a skip in a hard partition is not a failure
    assert verdicts["distribution"].passed and verdicts["distribution"].message == (
        "distribution (soft): PASS, pass rate 80.0% (8/10 examples) >= minimum 80.0%"
    )


def test_summary_quiet_hides_details_and_report_is_complete() -> None:
    records = [
        rec(
            "g1",
            "golden",
            "failed",
            failure_kind="exact_match",
            latency_s=1.5,
            tokens={"prompt": 10},
            model="m",
            dataset="d",
            dataset_hash="h",
        )
    ]
    stats = aggregate(records)
    verdicts = check_partitions(records, stats, Settings())
    quiet = [text for text, _ in summary_lines(records, stats, verdicts, verbosity=-1)]
    loud = [text for text, _ in summary_lines(records, stats, verdicts, verbosity=1)]
    assert not any("failures by reason" in line for line in quiet)
    assert "  exact_match (1): g1" in loud and "  1.50s  g1".strip() in " ".join(loud)
    report = build_report(records, stats, verdicts, {"exit_status": 1})
    assert report["passed"] is False and report["run"]["models"] == ["m"]
    assert report["run"]["datasets"] == {"d": "h"}
    assert Record.from_json(report["records"][0]) == records[0]
