"""Wall time per partition and time budgets: the pure check, then the plugin end to end
(serially and under xdist)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_llmeval.records import Record
from pytest_llmeval.runs.render import budget_lines, summary_lines
from pytest_llmeval.runs.report import build_report
from pytest_llmeval.runs.summary import aggregate, check_partitions, check_time_budgets
from pytest_llmeval.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def rec(example_id: str, partition: str, start: float | None, end: float | None) -> Record:
    return Record(
        example_id, partition, nodeid=f"t.py::t[{example_id}]", started_at=start, finished_at=end
    )


# --- the pure check -------------------------------------------------------------------


def test_wall_time_spans_first_start_to_last_end() -> None:
    stats = aggregate(
        [
            rec("g1", "golden", 100.0, 101.0),
            rec("g2", "golden", 100.5, 103.5),  # overlaps g1, as under xdist
            rec("d1", "distribution", None, None),
        ]
    )
    assert stats["golden"].wall_s == 3.5
    assert stats["golden"].to_json()["wall_s"] == 3.5
    assert stats["distribution"].wall_s is None


def test_budgets_over_within_and_unbudgeted() -> None:
    stats = aggregate(
        [
            rec("g1", "golden", 0.0, 312.4),
            rec("r1", "regression", 0.0, 0.85),
            rec("d1", "distribution", 0.0, 5000.0),  # no budget: never checked
        ]
    )
    budgets = {"golden": 300.0, "regression": 60.0, "adversarial": 1.0}
    verdicts = check_time_budgets(stats, budgets)
    assert [(v.partition, v.over, v.fails) for v in verdicts] == [
        ("golden", True, False),
        ("regression", False, False),
    ]
    assert budget_lines(verdicts) == [
        ("time budget: golden took 312.40s, over its budget of 300s", {"yellow": True})
    ]
    assert verdicts[0].to_json() == {
        "partition": "golden",
        "wall_s": 312.4,
        "budget_s": 300.0,
        "over": True,
        "strict": False,
    }
    strict = check_time_budgets(stats, budgets, strict=True)
    assert strict[0].fails and not strict[1].fails
    assert budget_lines(strict)[0] == (
        "time budget: golden took 312.40s, over its budget of 300s (strict: the session fails)",
        {"red": True, "bold": True},
    )


def test_budgets_all_met_is_one_line_and_none_is_nothing() -> None:
    stats = aggregate([rec("g1", "golden", 0.0, 12.3), rec("r1", "regression", 0.0, 0.85)])
    met = check_time_budgets(stats, {"golden": 300.0, "regression": 1200.0})
    assert budget_lines(met) == [
        (
            "time budgets: all partitions within budget (golden 12.30s of 300s, "
            "regression 850ms of 1200s)",
            {"green": True},
        )
    ]
    assert check_time_budgets(stats, {}) == [] and budget_lines([]) == []


def test_summary_and_report_carry_wall_time_and_budgets() -> None:
    records = [rec("g1", "golden", 0.0, 0.5)]
    stats = aggregate(records)
    verdicts = check_partitions(records, stats, Settings())
    budgets = check_time_budgets(stats, {"golden": 0.1}, strict=True)
    lines = [text for text, _ in summary_lines(records, stats, verdicts, budgets=budgets)]
    assert lines[0].endswith("wall") and lines[1].endswith("500ms")
    assert lines[lines.index("golden rule: PASS, all 1 golden examples passed") + 1] == (
        "time budget: golden took 500ms, over its budget of 0.1s (strict: the session fails)"
    )
    report = build_report(records, stats, verdicts, {}, budgets=budgets)
    assert report["passed"] is False  # a strict budget overrun fails the run
    assert report["time_budgets"] == [b.to_json() for b in budgets]
    assert build_report(records, stats, verdicts, {})["time_budgets"] == []


# --- the plugin -------------------------------------------------------------------------

SLEEPY = """
import time
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    if example.partition == "golden":
        time.sleep(0.1)
"""


def suite(pytester: pytest.Pytester, ini: str = "") -> None:
    pytester.makeini(f"[pytest]\nasyncio_default_fixture_loop_scope = function\n{ini}\n")
    data = [
        {"id": f"{p}-{i}", "partition": p, "input": {"q": "q"}, "expected_output": "a"}
        for p, n in (("golden", 3), ("distribution", 2))
        for i in range(n)
    ]
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    pytester.makepyfile(test_evals=SLEEPY)


def report_of(pytester: pytest.Pytester) -> dict[str, Any]:
    return json.loads(pytester.path.joinpath("report.json").read_text())  # type: ignore[no-any-return]


OVER = "time budget: golden took *, over its budget of 0.05s"


def test_the_table_shows_wall_time_and_no_budget_line_without_budgets(
    pytester: pytest.Pytester,
) -> None:
    suite(pytester)
    result = pytester.runpytest("--llmeval-report", "report.json")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["partition *cases *p95 latency *wall", "golden  * [0-9]*s"])
    assert "time budget" not in result.stdout.str()
    report = report_of(pytester)
    assert report["partitions"]["golden"]["wall_s"] >= 0.3
    assert report["time_budgets"] == []
    assert all(r["started_at"] <= r["finished_at"] for r in report["records"])


def test_an_overrun_warns_without_failing(pytester: pytest.Pytester) -> None:
    suite(pytester, "llmeval_time_budget = golden:0.05 distribution:60")
    result = pytester.runpytest("--llmeval-report", "report.json")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["golden rule: PASS, *", "distribution (soft): PASS, *", OVER], consecutive=True
    )
    budgets = {b["partition"]: b for b in report_of(pytester)["time_budgets"]}
    assert budgets["golden"]["over"] and budgets["golden"]["budget_s"] == 0.05
    assert budgets["golden"]["wall_s"] >= 0.3 and not budgets["distribution"]["over"]
    assert report_of(pytester)["passed"] is True


def test_strict_overrun_fails_the_session(pytester: pytest.Pytester) -> None:
    suite(pytester, "llmeval_time_budget = golden:0.05\nllmeval_time_budget_strict = yes")
    result = pytester.runpytest("--llmeval-report", "report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"{OVER} (strict: the session fails)"])
    assert report_of(pytester)["passed"] is False


def test_within_budget(pytester: pytest.Pytester) -> None:
    suite(pytester)
    result = pytester.runpytest(
        "--llmeval-time-budget", "golden:60", "--llmeval-time-budget-strict=yes"
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["time budgets: all partitions within budget (golden *s of 60s)"])


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("llmeval_time_budget = golden:abc", "'abc' is not a positive number of seconds"),
        ("llmeval_time_budget = golden:0", "'0' is not a positive number of seconds"),
        ("llmeval_time_budget = nosuch:3", "unknown partition 'nosuch'; valid: golden,"),
        ("llmeval_time_budget_strict = maybe", "'maybe' is not yes or no"),
    ],
)
def test_bad_budgets_are_usage_errors(pytester: pytest.Pytester, ini: str, message: str) -> None:
    suite(pytester, ini)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*llmeval_time_budget*{message}*"])


def test_xdist_gives_the_same_budget_verdict(pytester: pytest.Pytester) -> None:
    suite(pytester, "llmeval_time_budget = golden:0.05 distribution:60")
    serial = pytester.runpytest()
    parallel = pytester.runpytest("-n", "2", "--llmeval-report", "report.json")
    assert serial.ret == parallel.ret == pytest.ExitCode.OK
    for result in (serial, parallel):
        result.stdout.fnmatch_lines([OVER])
    assert report_of(pytester)["partitions"]["golden"]["wall_s"] >= 0.1
