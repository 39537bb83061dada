"""runs/draws.py: an example's draws reduced to one case, at the edges (errors, skips,
metrics whose pass is not their score against a threshold), and the regression samples
of runs drawn differently."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llmeval.records import NOT_RUN, MetricEntry, Record, case_of
from pytest_llmeval.runs.compare import compare_runs, samples
from pytest_llmeval.runs.draws import aggregate_cases, reduce_draws
from pytest_llmeval.settings import RegressionSettings, Settings


def draws(*statuses: str, partition: str = "golden", **fields: Any) -> list[Record]:
    out = []
    for n, status in enumerate(statuses, 1):
        record = Record("ex", partition, f"t.py::test_a[ex-r{n}]", draw=n, **fields)
        if status == "not run":
            record.status, record.failure_kind = "skipped", NOT_RUN
        elif status != "passed":
            record.fail(status, "assertion", f"draw {n} {status}")  # type: ignore[arg-type]
        out.append(record)
    return out


def one_case(records: list[Record], **settings: Any) -> Record:
    (case,) = reduce_draws(records, Settings(**settings)).cases
    return case


@pytest.mark.parametrize(
    ("statuses", "reducer", "expected"),
    [
        (("passed", "failed", "passed"), "all", "failed"),
        (("passed", "failed", "passed"), "majority", "passed"),
        (("failed", "failed", "passed"), "majority", "failed"),
        (("failed", "failed", "passed"), "any", "passed"),
        (("passed", "error", "passed"), "any", "error"),  # not the k draws asked for
        (("passed", "skipped", "passed"), "all", "skipped"),  # a skipped golden example fails
        (("passed", "not run", "passed"), "any", "skipped"),
    ],
)
def test_the_reducer_and_undecided_draws(
    statuses: tuple[str, ...], reducer: str, expected: str
) -> None:
    case = one_case(draws(*statuses), reducer={"golden": reducer}, flaky={"golden": "ignore"})
    assert (case.status, case.nodeid, case.draw) == (expected, "t.py::test_a[ex]", None)


def test_pass_hat_k_and_pass_at_k_count_only_examples_whose_draws_are_known() -> None:
    errored = draws("passed", "passed", "error")
    for record in errored:
        record.example_id = "other"
        record.nodeid = record.nodeid.replace("[ex-", "[other-")
    records = draws("passed", "failed", "passed") + draws("passed", "passed", "passed") + errored
    records[3].nodeid, records[4].nodeid, records[5].nodeid = (
        f"t.py::test_b[ex-r{n}]" for n in (1, 2, 3)
    )
    reduced = reduce_draws(records, Settings(flaky={"golden": "ignore"}))
    part = aggregate_cases(reduced)["golden"]
    assert (part.cases, part.passed, part.errors, part.draws) == (3, 1, 1, 3)
    assert (part.all_draws_passed, part.any_draw_passed) == (1, 2)  # the errored one: neither


def metric(score: float, passed: bool, threshold: float = 0.5) -> MetricEntry:
    return {"name": "m", "score": score, "threshold": threshold, "passed": passed, "details": {}}


def test_mean_averages_a_score_against_its_threshold() -> None:
    records = draws("passed", "failed", "passed", partition="distribution")
    for record, score in zip(records, (0.9, 0.2, 0.8), strict=True):
        record.metrics = [metric(score, score >= 0.5)]
    case = one_case(records)
    assert case.status == "passed"
    assert case.metrics[0]["score"] == pytest.approx(0.6333, abs=1e-3)


def test_mean_of_a_metric_whose_pass_is_not_its_score_takes_the_draws_verdicts() -> None:
    # Grounding with max_unsupported=1: faithfulness 0.8 passes a threshold of 1.0.
    records = draws("passed", "failed", "failed", partition="distribution")
    for record, (score, passed) in zip(
        records, ((0.8, True), (0.2, False), (0.2, False)), strict=True
    ):
        record.metrics = [metric(score, passed, threshold=1.0)]
    assert one_case(records).status == "failed"


def test_a_non_ascii_id_is_put_back_as_pytest_escapes_it() -> None:
    assert case_of("t.py::test_a[golden-caf\\xe9-r2]", "golden-café", 2) == (
        "t.py::test_a[golden-caf\\xe9]"
    )
    assert case_of("t.py::test_a[golden-café-r2]", "golden-café", 2) == "t.py::test_a[golden-café]"


def judged(nodeid: str, example: str, draw: int | None, scores: list[int | None]) -> Any:
    record = Record(example, "golden", nodeid, draw=draw)
    record.judge = [
        {  # type: ignore[list-item]
            "kind": "rubric",
            "mean": None,
            "scores": scores,
            "stable": True,
            "reasoning": "",
            "model": "j",
            "prompt_sha256": "p",
            "scale": [1, 5],
            "parser": "v1",
        }
    ]
    return record.to_json()


def test_a_draw_that_failed_before_the_judge_scores_the_minimum_against_a_run_drawn_once() -> None:
    base = [judged(f"t.py::test_a[e{i}]", f"e{i}", None, [4]) for i in range(8)]
    cand = []
    for i in range(8):
        crashed = Record(f"e{i}", "golden", f"t.py::test_a[e{i}-r1]", draw=1)
        crashed.fail("failed", "assertion", "the app raised")
        cand.append(crashed.to_json())
        cand += [judged(f"t.py::test_a[e{i}-r{n}]", f"e{i}", n, [4]) for n in (2, 3)]
    from pytest_llmeval.runs.compare import judged_tests

    found = samples(cand, "judge", judged_tests(base, cand))
    assert found["golden"]["e0"] == [1.0, 4.0, 4.0]
    (comparison,) = compare_runs(base, cand, RegressionSettings(gate=(("judge", None),)))
    assert comparison.verdict == "REGRESSION"


def test_a_panel_verdict_missing_a_judge_is_missing_not_a_lower_score() -> None:
    record = judged("t.py::test_a[e]", "e", None, [3, 3])
    record["judge"][0]["panel"] = [
        {"model": "a", "mean": None, "scores": [None]},
        {"model": "b", "mean": 3.0, "scores": [3]},
        {"model": "c", "mean": 3.0, "scores": [3]},
    ]
    assert samples([record], "judge")["golden"]["e"] == [None]


def test_mean_fails_an_example_whose_draws_passed_but_whose_mean_misses() -> None:
    # A test that records a metric it expected to miss, and passes.
    records = draws("passed", "passed", partition="distribution")
    for record, score in zip(records, (0.9, 0.0), strict=True):
        record.metrics = [metric(score, score >= 0.5)]
    case = one_case(records)
    assert (case.status, case.failure_reason) == ("failed", "the mean over 2 draws misses: m")
