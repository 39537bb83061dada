"""The gate never lies: a crashed worker, an interrupted run, an exception raised by the
app, by the test or by a lost model call: the summary, the report and the exit status
always agree, and every selected example ends with a record."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.plugin.outcomes import raised_by_app

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def write_suite(pytester: pytest.Pytester, rows: dict[str, int], body: str, **files: str) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    lines = [
        json.dumps({"id": f"{p}-{i:02d}", "partition": p, "input": {}, "expected_output": None})
        for p, count in rows.items()
        for i in range(count)
    ]
    pytester.path.joinpath("data.jsonl").write_text("\n".join(lines) + "\n")
    for name, text in files.items():
        pytester.path.joinpath(f"{name}.py").write_text(text)
    pytester.makepyfile(test_evals=body)


def report(pytester: pytest.Pytester) -> dict[str, Any]:
    return json.loads(pytester.path.joinpath("report.json").read_text())  # type: ignore[no-any-return]


def verdict(result: pytest.RunResult) -> str:
    """The summary's last line, which names whatever fails the run."""
    return [line for line in result.outlines if line.startswith("llmeval: ")][-1]


def by_id(document: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {r["example_id"]: (r["status"], r["failure_kind"]) for r in document["records"]}


# --- a worker that dies -------------------------------------------------------------------

CRASH = """
import os
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    if example.id == "golden-01":
        os._exit(1)
"""


def test_a_crashed_worker_is_an_error_record_and_fails_the_golden_rule(
    pytester: pytest.Pytester,
) -> None:
    write_suite(pytester, {"golden": 3}, CRASH)
    result = pytester.runpytest("-n", "2", "--llmeval-report=report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*golden rule: FAIL, 1 of 3 golden examples did not pass: golden-01 (error)*",
            "*errors (not quality failures): worker crashed 1 (golden-01)*",
            "llmeval: FAIL (golden rule; 1 error)",
        ]
    )
    document = report(pytester)
    assert document["passed"] is False
    assert document["run"]["exit_status"] == 1
    assert by_id(document) == {
        "golden-00": ("passed", None),
        "golden-01": ("error", "worker crashed"),
        "golden-02": ("passed", None),
    }
    crashed = next(r for r in document["records"] if r["example_id"] == "golden-01")
    assert "crashed while running" in crashed["failure_reason"]


# --- runs that do not finish -----------------------------------------------------------------

INTERRUPT = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    if example.id == "{stop_at}":
        raise KeyboardInterrupt
"""


def test_an_interrupted_run_is_incomplete_and_never_passed(pytester: pytest.Pytester) -> None:
    body = INTERRUPT.format(stop_at="distribution-16")
    write_suite(pytester, {"golden": 5, "distribution": 55}, body)
    # In a process of its own: a KeyboardInterrupt ends the whole process, as Ctrl-C does.
    result = pytester.runpytest_subprocess("--llmeval-report=report.json")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    shown = re.search(r"after 21 of 60 tests\):\n\n```\n(.*?)```", readme, re.S)
    assert shown is not None
    result.stdout.fnmatch_lines(shown.group(1).splitlines(), consecutive=True)
    document = report(pytester)
    assert document["passed"] is False
    assert document["complete"] is False
    assert document["run"]["exit_status"] == 2
    assert [r["example_id"] for r in document["not_run"]] == [
        f"distribution-{i:02d}" for i in range(16, 55)
    ]
    assert len(document["records"]) == 60  # nothing selected goes missing


def test_a_run_stopped_by_maxfail_names_what_never_ran(pytester: pytest.Pytester) -> None:
    body = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    assert example.id != "golden-01"
"""
    write_suite(pytester, {"golden": 4}, body)
    result = pytester.runpytest("-x", "--llmeval-report=report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "run incomplete: the run stopped early (stopping after 1 failures); 2 of 4 "
            "selected eval tests never ran: golden-02, golden-03",
            "llmeval: FAIL (golden rule; run incomplete (2 not run))",
        ]
    )
    assert report(pytester)["complete"] is False


def test_a_complete_run_says_so(pytester: pytest.Pytester) -> None:
    write_suite(pytester, {"golden": 2}, INTERRUPT.format(stop_at="none"))
    result = pytester.runpytest("--llmeval-report=report.json")
    assert result.ret == pytest.ExitCode.OK
    assert verdict(result) == "llmeval: PASS"
    document = report(pytester)
    assert (document["passed"], document["complete"], document["not_run"]) == (True, True, [])


# --- one rule for exceptions, whatever the style ---------------------------------------------

APP = """
def answer(example_id):
    if example_id == "distribution-03":
        raise RuntimeError("the app crashed")
    return "ok"
"""

PLAIN_BODY = """
import pytest
import app

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    assert app.answer(example.id) == "ok"
"""

BATCHED = """
import pytest
import app
from pytest_llmeval import batched

@batched
async def answer(example):
    return app.answer(example.id)

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer):
    assert answer == "ok"
"""

PLAIN_FIXTURE = """
import pytest
import app

@pytest.fixture
def answer(example):
    return app.answer(example.id)

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer):
    assert answer == "ok"
"""


@pytest.mark.parametrize("style", ["body", "batched", "fixture"])
def test_an_app_exception_is_the_app_failing_in_every_style(
    pytester: pytest.Pytester, style: str
) -> None:
    body = {"body": PLAIN_BODY, "batched": BATCHED, "fixture": PLAIN_FIXTURE}[style]
    write_suite(pytester, {"golden": 1, "distribution": 20}, body, app=APP)
    result = pytester.runpytest("--llmeval-report=report.json")
    # A soft partition's failure: shown, recorded, within the minimum pass rate.
    assert result.ret == pytest.ExitCode.OK
    assert result.parseoutcomes() == {"passed": 20, "softfailed": 1}
    result.stdout.fnmatch_lines(
        ["*distribution (soft): PASS, pass rate 95.0% (19/20 examples) >= minimum 85.0%"]
    )
    assert by_id(report(pytester))["distribution-03"] == ("failed", "app error: RuntimeError")

    # The same exception on a golden example fails the golden rule, named as such.
    pytester.path.joinpath("app.py").write_text(APP.replace("distribution-03", "golden-00"))
    result = pytester.runpytest("--llmeval-report=report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert verdict(result) == "llmeval: FAIL (golden rule)"
    assert by_id(report(pytester))["golden-00"] == ("failed", "app error: RuntimeError")


BROKEN = """
import pytest
from pytest_llmeval import assert_exact_match

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    if example.id == "distribution-03":
        assert_exact_match("a", "a", backend="x")
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]])
def test_a_broken_test_never_hides_as_a_soft_failure(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    write_suite(pytester, {"distribution": 20}, BROKEN)
    result = pytester.runpytest("--llmeval-report=report.json", *xdist)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=19, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*errors (not quality failures): test error: TypeError 1 (distribution-03)",
            "llmeval: FAIL (1 error)",
        ]
    )
    document = report(pytester)
    assert by_id(document)["distribution-03"] == ("error", "test error: TypeError")
    assert document["passed"] is False


def test_a_setup_error_in_a_soft_partition_is_named_in_the_summary(
    pytester: pytest.Pytester,
) -> None:
    body = """
import pytest

@pytest.fixture
def store(example):
    if example.id == "distribution-02":
        raise ConnectionError("the vector store is down")

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, store):
    pass
"""
    write_suite(pytester, {"distribution": 20}, body)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*distribution (soft): PASS, pass rate 95.0%*",
            "*errors (not quality failures): setup error: ConnectionError 1 (distribution-02)",
            "llmeval: FAIL (1 error)",
        ]
    )


def test_other_failing_tests_are_named_in_the_last_line(pytester: pytest.Pytester) -> None:
    body = INTERRUPT.format(stop_at="none") + "\n\ndef test_unit():\n    assert False\n"
    write_suite(pytester, {"golden": 1}, body)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert verdict(result) == "llmeval: FAIL (1 other test failed)"


def test_where_an_exception_was_raised_decides_who_raised_it(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("shop.py").write_text("def buy():\n    raise ValueError('no stock')\n")
    pytester.path.joinpath("test_shop.py").write_text("def check():\n    int('x')\n")
    pytester.syspathinsert()
    import shop  # type: ignore[import-not-found]
    import test_shop  # type: ignore[import-not-found]

    patterns = ("test_*.py", "conftest.py")
    for call, by_app in ((shop.buy, True), (test_shop.check, False)):
        with pytest.raises(ValueError) as info:
            call()
        assert raised_by_app(info.value, patterns) is by_app
    # A library's frames do not count: json raising for the test is the test's.
    with pytest.raises(ValueError) as info:
        json.loads("{")
    assert raised_by_app(info.value, patterns) is False


# --- where the time went -------------------------------------------------------------------

SLOW_JUDGE = """
import pytest
from pytest_llmeval import batched

@batched
async def answer(example, llm, judge_client):
    reply = await llm.aio.complete(example.id)
    await judge_client.aio.complete(f"grade {example.id}: {reply}")
    return reply

@pytest.mark.llmeval(dataset="data.jsonl")
def test_batched(example, answer):
    pass

@pytest.mark.llmeval(dataset="data.jsonl")
def test_plain(example, llm, judge_client):
    judge_client.complete(f"grade {example.id}: {llm.complete(example.id)}")
"""


def test_the_slowest_examples_count_the_judges_time(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_llmeval.testing import FakeOpenAIServer

    slow = 1.0  # the judge's time on golden-01; every other call takes milliseconds

    def reply(request: dict[str, Any]) -> str:
        if request["model"] == "judge" and "golden-01" in str(request["messages"]):
            time.sleep(slow)
        return "ok"

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAIServer(reply) as server:
        # openai imported at collection, so that no test's time includes the import
        write_suite(pytester, {"golden": 3}, SLOW_JUDGE, conftest="import openai\n")
        result = pytester.runpytest(
            f"--llmeval-base-url={server.base_url}",
            "--llmeval-model=app",
            "--llmeval-judge-model=judge",
            "--llmeval-cache=off",
            "--llmeval-report=report.json",
        )
    assert result.ret == pytest.ExitCode.OK
    slowest = result.outlines[result.outlines.index("slowest examples:") + 1 :][:3]
    assert {"test_batched[golden-01]", "test_plain[golden-01]"} <= {
        line.split()[1] for line in slowest
    }
    elapsed = {r["nodeid"].split("::")[1]: r["elapsed_s"] for r in report(pytester)["records"]}
    assert elapsed["test_plain[golden-01]"] >= slow
    assert elapsed["test_batched[golden-01]"] >= slow
    # The window was computed in golden-00's setup: its own share, not the window's, which
    # holds golden-01's judge call (its share may hold the loop's and client's start-up,
    # a few hundred milliseconds on a loaded machine).
    assert elapsed["test_batched[golden-00]"] < slow


def test_a_nonfinite_value_never_costs_the_report(pytester: pytest.Pytester) -> None:
    body = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llmeval_record):
    llmeval_record.cost_usd = float("nan")  # set directly, past every check
"""
    write_suite(pytester, {"golden": 1}, body)
    result = pytester.runpytest("--llmeval-report=report.json")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["report: *records[[]0[]].cost_usd is nan*; written as null"])
    assert report(pytester)["records"][0]["cost_usd"] is None


def test_collect_only_runs_nothing_and_misses_nothing(pytester: pytest.Pytester) -> None:
    write_suite(pytester, {"golden": 2}, INTERRUPT.format(stop_at="none"))
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    assert not any(line.startswith("llmeval") for line in result.outlines)


def test_pytest_fail_in_a_test_is_the_tests_verdict_not_an_error(
    pytester: pytest.Pytester,
) -> None:
    body = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    if example.id == "distribution-03":
        pytest.fail("the answer is not JSON")
"""
    write_suite(pytester, {"distribution": 20}, body)
    result = pytester.runpytest("--llmeval-report=report.json")
    assert result.ret == pytest.ExitCode.OK
    assert verdict(result) == "llmeval: PASS"
    assert by_id(report(pytester))["distribution-03"] == ("failed", "pytest.fail")
