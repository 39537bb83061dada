"""Regression against a baseline end to end: a run saved as the baseline, a candidate run
compared with it (serially and under xdist), the summary's section, the exit status, the
report, and ``llmeval compare`` on the two reports."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

# Imported before the in-process runs: pytester drops the modules a run imports, and
# numpy cannot be imported twice in one process.
import pytest_llmeval.stats.regression  # noqa: F401
from pytest_llmeval.cli import main
from pytest_llmeval.testing import FakeOpenAIServer

MINUS = "\N{MINUS SIGN}"
# 100 examples: a run equal to its baseline is then bounded within ±δ for both metrics.
IDS = [f"q-{i:02d}" for i in range(100)]
DROPPED = IDS[:30]  # the examples the worse candidate answers badly

SUITE = """
import os
import pytest

@pytest.mark.llmeval(dataset="questions.jsonl")
def test_answer(example, judge):
    judge.score(f"{example.id} {os.environ['VERSION']}", task="answer", criteria=["right"])
    assert example.id not in os.environ.get("FAILING", "").split(",")
"""

# version -> example id -> the scripted judge's score
SCORES: dict[str, Callable[[str], int]] = {
    "v1": lambda example: 4,
    "same": lambda example: 4,
    "worse": lambda example: 2 if example in DROPPED else 4,
}


def scripted_judge(request: dict[str, Any]) -> str:
    shown = re.search(r"<response>\n(\S+) (\S+)\n</response>", request["messages"][-1]["content"])
    assert shown
    example, version = shown.groups()
    return json.dumps({"reasoning": "scripted", "score": SCORES[version](example)})


Run = Callable[..., pytest.RunResult]


@pytest.fixture
def run(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> Run:
    """run(version, *args, failing=()): the suite with the judge scoring ``version``."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_openai.reply = scripted_judge
    # The soft gate is lowered so that the exit status is the regression's alone.
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {fake_openai.base_url}\nllmeval_judge_model = judge-x\n"
        "llmeval_min_pass_rate = distribution:0.5\n"
    )
    rows = [{"id": i, "partition": "distribution", "input": {"q": i}} for i in IDS]
    pytester.path.joinpath("questions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    pytester.makepyfile(test_questions=SUITE)

    def run(version: str, *args: str, failing: tuple[str, ...] = ()) -> pytest.RunResult:
        monkeypatch.setenv("VERSION", version)
        monkeypatch.setenv("FAILING", ",".join(failing))
        return pytester.runpytest(*args)

    # The baseline run is the same in every test (100 in-process tests): saved by the
    # first test of the process, then copied.
    path = pytester.path / "baseline.json"
    if SAVED_BASELINE:
        path.write_bytes(SAVED_BASELINE[0])
    else:
        baseline = run("v1", "--llmeval-save-baseline=baseline.json")
        assert baseline.ret == pytest.ExitCode.OK
        SAVED_BASELINE.append(path.read_bytes())
    return run


SAVED_BASELINE: list[bytes] = []  # the v1 run's baseline.json, once saved


def regression_lines(result: pytest.RunResult) -> list[str]:
    start = result.outlines.index("regression against the baseline baseline.json:")
    end = next(i for i, line in enumerate(result.outlines) if line.startswith("regression: "))
    return result.outlines[start : end + 1]


def test_a_worse_candidate_is_blocked_the_same_way_under_xdist(run: Run) -> None:
    failing = tuple(IDS[:20])
    serial = run("worse", "--llmeval-baseline=baseline.json", failing=failing)
    parallel = run("worse", "--llmeval-baseline=baseline.json", "-n", "2", failing=failing)
    assert serial.ret == parallel.ret == pytest.ExitCode.TESTS_FAILED
    lines = regression_lines(serial)
    assert lines == regression_lines(parallel)
    assert lines[1] == (
        "alpha 0.05 over 2 gated comparisons (Holm); CIs at 97.5%; δ pass_rate 0.05, judge 0.3"
    )
    rows = {tuple(line.split()[:2]): line.split() for line in lines[3:5]}
    # 20 of 100 examples now fail; 30 of 100 judge scores fell from 4 to 2
    assert rows["pass_rate", "distribution"][2:5] == ["1.000", "0.800", f"{MINUS}0.200"]
    assert rows["judge", "distribution"][2:5] == ["4.000", "3.400", f"{MINUS}0.600"]
    assert (
        rows["pass_rate", "distribution"][-1] == rows["judge", "distribution"][-1] == "REGRESSION"
    )
    assert lines[-1] == (
        "regression: BLOCK, pass_rate[distribution] REGRESSION, judge[distribution] REGRESSION"
    )
    assert any(
        line.startswith("  judge[distribution]: Candidate is worse by 0.60") and "Blocking." in line
        for line in lines
    )
    # Every test passed or failed as it should; only the regression fails the session.
    assert serial.parseoutcomes() == {"passed": 80, "softfailed": 20}


def test_the_same_answers_show_no_change(run: Run) -> None:
    result = run("same", "--llmeval-baseline=baseline.json", "--llmeval-report=report.json")
    assert result.ret == pytest.ExitCode.OK
    lines = regression_lines(result)
    assert [line.split()[-1] for line in lines[3:5]] == ["NO_CHANGE", "NO_CHANGE"]
    assert lines[-1] == "regression: PROCEED, no blocking verdict (2 comparisons)"


def test_the_report_carries_every_comparison(run: Run, pytester: pytest.Pytester) -> None:
    run("worse", "--llmeval-baseline=baseline.json", "--llmeval-report=report.json")
    report = json.loads(pytester.path.joinpath("report.json").read_text())
    assert report["passed"] is False and report["gates"][0]["passed"] is True
    regression = report["regression"]
    assert regression["blocks"] is True and regression["error"] is None
    assert regression["baseline"] == str(pytester.path / "baseline.json")
    judge = next(c for c in regression["comparisons"] if c["metric"] == "judge")
    assert judge["verdict"] == "REGRESSION" and judge["n"] == 100 and judge["m"] == 2
    assert judge["test"] == "paired_t" and judge["ci_high"] < 0
    assert judge["metadata"]["baseline"]["judge_model"] == ["judge-x"]


def test_a_changed_judge_prompt_is_refused(run: Run, pytester: pytest.Pytester) -> None:
    path = pytester.path / "baseline.json"
    document = json.loads(path.read_text())
    for record in document["records"]:
        for verdict in record["judge"]:
            verdict["prompt_sha256"] = "0" * 64
    path.write_text(json.dumps(document))
    result = run("same", "--llmeval-baseline=baseline.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    lines = regression_lines(result)
    assert lines[4].split()[-1] == "REFUSED"
    assert lines[-1] == "regression: BLOCK, judge[distribution] REFUSED (the judge prompt differs)"
    assert any("re-judge the stored baseline outputs with the current judge" in x for x in lines)


def test_a_baseline_of_other_examples_is_refused_serially_and_under_xdist(
    run: Run, pytester: pytest.Pytester
) -> None:
    path = pytester.path / "baseline.json"
    document = json.loads(path.read_text())
    for record in document["records"]:
        record["example_id"] = "old-" + record["example_id"]
        record["nodeid"] = record["nodeid"].replace("[q-", "[old-q-")
    path.write_text(json.dumps(document))
    serial = run("same", "--llmeval-baseline=baseline.json")
    parallel = run("same", "--llmeval-baseline=baseline.json", "-n", "2")
    assert serial.ret == parallel.ret == pytest.ExitCode.TESTS_FAILED
    lines = regression_lines(serial)
    assert lines == regression_lines(parallel)
    assert [line.split()[-1] for line in lines[3:5]] == ["REFUSED", "REFUSED"]
    reason = (
        "the baseline shares 0 of 100 gated examples of distribution with this run, fewer "
        "than half: they are not runs of the same dataset; save a new baseline"
    )
    # Without -v: the reason is on the default output, and in the decision line.
    assert lines[5:] == [
        f"  pass_rate[distribution]: Refused: {reason}. Blocking.",
        f"  judge[distribution]: Refused: {reason}. Blocking.",
        "regression: BLOCK, pass_rate[distribution] and judge[distribution] REFUSED (the "
        "baseline shares 0 of 100 gated examples of distribution with this run, fewer than "
        "half)",
    ]
    assert serial.parseoutcomes() == {"passed": 100}


def test_a_block_can_be_reported_without_failing_the_session(run: Run) -> None:
    result = run("worse", "--llmeval-baseline=baseline.json", "-o", "llmeval_regression_fails=no")
    assert result.ret == pytest.ExitCode.OK
    assert regression_lines(result)[-1] == (
        "regression: would BLOCK (judge[distribution] REGRESSION); llmeval_regression_fails = no"
    )


def test_only_the_examples_this_run_selected_are_compared(run: Run) -> None:
    result = run("worse", "--llmeval-baseline=baseline.json", "-k", "q-0")
    lines = regression_lines(result)
    assert "compared on the 10 examples both runs evaluated" not in "\n".join(lines)
    result = run("worse", "--llmeval-baseline=baseline.json", "-k", "q-0", "-v")
    assert any(
        "compared on the 10 examples both runs evaluated: 90 only in the baseline, 0 only in "
        "this run" in line
        for line in regression_lines(result)
    )


def test_a_bad_baseline_stops_the_run(run: Run, pytester: pytest.Pytester) -> None:
    result = run("v1", "--llmeval-baseline=missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: llmeval_baseline: cannot read */missing.json: *"])
    pytester.path.joinpath("other.json").write_text('{"records": []}')
    result = run("v1", "--llmeval-baseline=other.json")
    result.stderr.fnmatch_lines(
        ["ERROR: llmeval_baseline: */other.json is not a pytest-llmeval report*"]
    )
    document = json.loads(pytester.path.joinpath("baseline.json").read_text())
    document["records"].append(document["records"][7])
    pytester.path.joinpath("twice.json").write_text(json.dumps(document))
    result = run("v1", "--llmeval-baseline=twice.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: llmeval_baseline: */twice.json: duplicate example id 'q-07': two records "
            "of the test test_questions.py::test_answer[[]q-07[]]; *"
        ]
    )


def test_a_flag_path_is_relative_to_the_current_directory_an_ini_path_to_the_rootdir(
    run: Run, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(pytester.mkdir("sub"))
    result = run("same", "..", "-o", "llmeval_baseline=baseline.json")
    assert result.ret == pytest.ExitCode.OK
    assert "regression: PROCEED, no blocking verdict (2 comparisons)" in result.outlines
    result = run("same", "..", "--llmeval-baseline=baseline.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot read */sub/baseline.json*"])
    assert run("same", "..", "--llmeval-baseline=../baseline.json").ret == pytest.ExitCode.OK


def test_llmeval_compare_prints_the_table_and_exits_by_verdict(
    run: Run, pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    run("worse", "--llmeval-report=worse.json")
    run("same", "--llmeval-report=same.json")
    capsys.readouterr()  # the runs' own output
    base, worse, same = (str(pytester.path / f"{n}.json") for n in ("baseline", "worse", "same"))
    assert main(["compare", base, worse]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{worse} against the baseline {base}:"
    assert out[-1] == "regression: BLOCK, judge[distribution] REGRESSION"
    assert main(["compare", base, same]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("regression: PROCEED")
    assert main(["compare", base, worse, "--json", "--gate", "judge", "--delta", "judge:1"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["blocks"] is False
    # Δ = -0.6 is significant but inside δ = 1: real, too small to matter
    assert [c["verdict"] for c in document["comparisons"]] == ["SIGNIFICANT_BUT_TRIVIAL"]
    assert main(["compare", base, str(pytester.path / "nope.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["compare", base, worse, "--gate", "bleu"]) == 2
    assert "unknown metric 'bleu'" in capsys.readouterr().err
    assert main(["compare", base, worse, "--alpha", "2"]) == 2


def test_examples_of_one_cluster_are_compared_as_clusters(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset's ``cluster`` reaches the record and the statistics: 12 examples from 4
    documents are 4 independent units, not 12 (STATISTICS.md, clustered examples)."""
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "llmeval_gate = pass_rate\nllmeval_min_pass_rate = distribution:0.5\n"
    )
    rows = [
        {"id": f"q-{i:02d}", "partition": "distribution", "input": {}, "cluster": f"doc-{i % 4}"}
        for i in range(12)
    ]
    pytester.path.joinpath("questions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    pytester.makepyfile(
        test_questions="""
import os
import pytest

@pytest.mark.llmeval(dataset="questions.jsonl")
def test_answer(example):
    assert example.id not in os.environ.get("FAILING", "").split(",")
"""
    )
    assert pytester.runpytest("--llmeval-save-baseline=baseline.json").ret == 0
    monkeypatch.setenv("FAILING", "q-00,q-04")  # two examples of doc-0
    pytester.runpytest("--llmeval-baseline=baseline.json", "--llmeval-report=run.json")
    report = json.loads(pytester.path.joinpath("run.json").read_text())
    assert {r["cluster"] for r in report["records"]} == {"doc-0", "doc-1", "doc-2", "doc-3"}
    [comparison] = report["regression"]["comparisons"]
    assert comparison["n"] == 12 and comparison["clusters"] == 4
    assert comparison["test"] == "cluster_sign_flip"


def test_a_baseline_record_of_another_shape_is_an_error_not_a_crash(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.path.joinpath("data.jsonl").write_text(
        '{"id": "g1", "partition": "golden", "input": {}}\n'
    )
    pytester.makepyfile(
        test_s="import pytest\n@pytest.mark.llmeval(dataset='data.jsonl')\n"
        "def test_a(example):\n    pass\n"
    )
    pytester.runpytest("--llmeval-save-baseline=b.json").assert_outcomes(passed=1)
    report = json.loads(pytester.path.joinpath("b.json").read_text())
    report["records"][0]["metrics"] = [{"score": 1.0}]  # no name
    pytester.path.joinpath("b.json").write_text(json.dumps(report))
    result = pytester.runpytest("--llmeval-baseline=b.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # found at start-up, by the power plan
    result.stderr.fnmatch_lines(["*llmeval_baseline: *b.json: a record lacks or mistypes a field*"])
