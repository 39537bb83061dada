"""The plugin end to end, through pytester: parametrization, markers, records, gates."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
{extra}
"""


def rows(**partitions: int) -> list[dict[str, Any]]:
    """``rows(golden=2, distribution=3)``: examples whose expected output is their id."""
    out = []
    for partition, count in partitions.items():
        for i in range(count):
            ex_id = f"{partition}-{i:02d}"
            out.append(
                {
                    "id": ex_id,
                    "partition": partition,
                    "input": {"q": ex_id},
                    "expected_output": ex_id,
                    "tags": [partition[:3], f"n{i}"],
                }
            )
    return out


def suite(
    pytester: pytest.Pytester, data: list[dict[str, Any]], body: str, *, ini: str = ""
) -> None:
    pytester.makeini(INI.format(extra=ini))
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    pytester.makepyfile(test_evals=body)


ANSWERS = """
import pytest
from pytest_llmeval import assert_exact_match, assert_token_f1

WRONG = set({wrong!r})

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    answer = "wrong answer" if example.id in WRONG else example.expected_output
    assert_exact_match(answer, example.expected_output)
"""


def answers(wrong: tuple[str, ...] = ()) -> str:
    return ANSWERS.format(wrong=list(wrong))


def report_of(pytester: pytest.Pytester, name: str = "report.json") -> dict[str, Any]:
    return json.loads(pytester.path.joinpath(name).read_text())  # type: ignore[no-any-return]


# --- one test per example -------------------------------------------------------------


def test_one_test_per_example_with_example_ids(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=2, distribution=1), answers())
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "test_evals.py::test_answer[[]golden-00[]]",
            "test_evals.py::test_answer[[]golden-01[]]",
            "test_evals.py::test_answer[[]distribution-00[]]",
        ]
    )


def test_partition_markers_select_under_strict_markers(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=2, regression=1, adversarial=1, distribution=3), answers())
    result = pytester.runpytest("--strict-markers", "-m", "golden", "-v")
    result.assert_outcomes(passed=2, deselected=5)
    result.stdout.fnmatch_lines(["*golden rule: PASS, all 2 golden examples passed*"])
    result = pytester.runpytest("--strict-markers", "-m", "not distribution and not golden")
    result.assert_outcomes(passed=2, deselected=5)


def test_tags_select_with_k_and_option(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=3, distribution=3), answers())
    pytester.runpytest("-k", "n1").assert_outcomes(passed=2, deselected=4)
    pytester.runpytest("--llmeval-tags", "dis,n0").assert_outcomes(passed=4, deselected=2)


def test_marker_filters_partition_and_tags(pytester: pytest.Pytester) -> None:
    body = """
import pytest

@pytest.mark.llmeval("data.jsonl", partition="golden")
def test_golden(example):
    assert example.partition == "golden"

@pytest.mark.llmeval(dataset="data.jsonl", partition=["golden", "distribution"], tags=["n0"])
def test_first(example):
    assert example.id.endswith("-00")
"""
    suite(pytester, rows(golden=2, regression=2, distribution=2), body)
    pytester.runpytest().assert_outcomes(passed=4)


def test_a_filter_that_selects_nothing_warns(pytester: pytest.Pytester) -> None:
    body = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl", tags=["nothing-has-this"])
def test_none(example):
    pass
"""
    suite(
        pytester,
        rows(golden=2),
        body,
        ini="filterwarnings = default::pytest_llmeval.errors.EmptySelectionWarning",
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "test_evals.py:3",
            "*EmptySelectionWarning: test_none: no example of * matches partition=None "
            "tags=[[]'nothing-has-this'[]]; the test will be skipped*",
        ]
    )


def test_async_tests_are_run_and_recorded(pytester: pytest.Pytester) -> None:
    body = """
import asyncio
import pytest
from pytest_llmeval import assert_exact_match

@pytest.mark.llmeval(dataset="data.jsonl")
async def test_answer(example):
    await asyncio.sleep(0)
    answer = "nope" if example.id == "golden-01" else example.expected_output
    assert_exact_match(answer, example.expected_output)
"""
    suite(pytester, rows(golden=2), body)
    result = pytester.runpytest("--llmeval-report", "report.json")
    result.assert_outcomes(passed=1, failed=1)
    records = {r["example_id"]: r for r in report_of(pytester)["records"]}
    assert records["golden-01"]["status"] == "failed"
    assert records["golden-01"]["failure_kind"] == "exact_match"
    assert records["golden-00"]["metrics"][0]["passed"] is True


def test_explicit_parametrize_form_is_an_eval_test(pytester: pytest.Pytester) -> None:
    body = """
import pathlib
import pytest
from pytest_llmeval import load_dataset, assert_exact_match

DATA = load_dataset(pathlib.Path(__file__).parent / "data.jsonl")

@pytest.mark.parametrize("example", DATA.params())
def test_answer(example, llmeval_record):
    llmeval_record["seen"] = example.id
    assert_exact_match(example.expected_output, example.expected_output)
"""
    suite(pytester, rows(golden=1, distribution=2), body)
    result = pytester.runpytest(
        "--strict-markers", "-m", "distribution", "--llmeval-report", "report.json"
    )
    result.assert_outcomes(passed=2, deselected=1)
    report = report_of(pytester)
    assert [r["extra"]["seen"] for r in report["records"]] == ["distribution-00", "distribution-01"]
    assert report["run"]["datasets"] == {"data": report["records"][0]["dataset_hash"]}


def test_relative_dataset_paths_fall_back_to_datasets_dir(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=1), answers(), ini="llmeval_datasets_dir = evals")
    data = pytester.path / "data.jsonl"
    pytester.mkdir("evals")
    data.rename(pytester.path / "evals" / "data.jsonl")
    pytester.runpytest().assert_outcomes(passed=1)


def test_broken_dataset_is_a_collection_error_naming_file_and_line(
    pytester: pytest.Pytester,
) -> None:
    suite(pytester, rows(golden=2), answers())
    path = pytester.path / "data.jsonl"
    path.write_text(path.read_text() + '{"id": "x", "partition": "gold", "input": {}}\n')
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            f"*llmeval dataset error: {path}:3, example 'x', field 'partition': "
            "unknown partition 'gold'*"
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


def test_missing_dataset_and_missing_argument_are_explained(pytester: pytest.Pytester) -> None:
    body = """
import pytest

@pytest.mark.llmeval(dataset="nowhere.jsonl")
def test_a(example):
    pass

@pytest.mark.llmeval(dataset="data.jsonl")
def test_b():
    pass
"""
    suite(pytester, rows(golden=1), body)
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*nowhere.jsonl: not found; looked in*",
        ]
    )
    pytester.makepyfile(
        test_evals=body.split('@pytest.mark.llmeval(dataset="data')[0].replace("nowhere", "data")
        + '@pytest.mark.llmeval(dataset="data.jsonl")\ndef test_b():\n    pass\n'
    )
    pytester.runpytest().stdout.fnmatch_lines(
        ["*test_b is marked llmeval but takes no 'example' argument*"]
    )


# --- records ---------------------------------------------------------------------------


def test_record_fixture_and_helpers_fill_the_report(pytester: pytest.Pytester) -> None:
    body = """
import pytest
from pytest_llmeval import assert_token_f1, assert_constraints, max_length

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llmeval_record):
    llmeval_record.model = "demo-model"
    llmeval_record.prompt_version = "v1"
    llmeval_record.latency_s = 0.25
    llmeval_record.add_usage(prompt_tokens=100, completion_tokens=20, cost_usd=0.001)
    llmeval_record["judge_note"] = {"ok": True}
    assert_token_f1(example.expected_output + " extra", example.expected_output, threshold=0.5)
    assert_constraints(example.expected_output, [max_length(100)])
"""
    suite(pytester, rows(golden=2), body)
    result = pytester.runpytest("--llmeval-report", "report.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*tokens: 240 (200 prompt, 40 completion), cost $0.0020*"])
    record = report_of(pytester)["records"][0]
    assert record["model"] == "demo-model" and record["prompt_version"] == "v1"
    assert record["output"] == "golden-00 extra"  # the first helper saw the output
    assert [m["name"] for m in record["metrics"]] == ["token_f1", "constraints"]
    assert record["metrics"][0]["threshold"] == 0.5
    assert record["tokens"] == {"prompt": 100, "completion": 20}
    assert record["extra"] == {"judge_note": {"ok": True}}
    assert record["status"] == "passed" and record["latency_s"] == 0.25
    assert record["duration_s"] >= 0


def test_record_rejects_values_that_cannot_travel(pytester: pytest.Pytester) -> None:
    body = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llmeval_record):
    llmeval_record["when"] = object()

def test_plain(llmeval_record):
    pass
"""
    suite(pytester, rows(golden=1), body)
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)  # a broken test, not a quality failure
    result.stdout.fnmatch_lines(["*llmeval record value 'when' must be JSON-serialisable*"])
    result.stdout.fnmatch_lines(["*llmeval_record is only available in eval tests*"])
    result.stdout.no_fnmatch_line("*records.py*")


def test_failure_message_shows_score_threshold_and_outputs(pytester: pytest.Pytester) -> None:
    body = """
import pytest
from pytest_llmeval import assert_token_f1, assert_constraints, forbidden_terms

@pytest.mark.llmeval(dataset="data.jsonl")
def test_f1(example):
    assert_token_f1("completely different words", "the refund window is thirty days")

@pytest.mark.llmeval(dataset="data.jsonl")
def test_constraints(example):
    def polite(output):
        raise ValueError("classifier down")
    assert_constraints("Buy HelpHive instead", [forbidden_terms(["HelpHive"]), polite])
"""
    suite(pytester, rows(golden=1), body, ini="llmeval_thresholds = token_f1.golden:0.9")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*token_f1 0.000 < threshold 0.900 (golden)",
            "*precision 0.000, recall 0.000",
            "*output:   'completely different words'",
            "*expected: 'the refund window is thirty days'",
            "*constraints: 2 of 2 checks failed (golden)",
            "*FAIL forbidden_terms: found 'HelpHive'",
            "*FAIL polite: raised ValueError: classifier down",
            "*golden rule: FAIL, 1 of 1 golden examples did not pass (2 tests): golden-00",
            "*constraints:forbidden_terms,polite (1): test_constraints[[]golden-00[]]*",
            "*token_f1 (1): test_f1[[]golden-00[]]*",
        ]
    )
    result.stdout.fnmatch_lines(["test_evals.py:6: LLMEvalAssertionError"])  # the user's line


# --- gates -------------------------------------------------------------------------------


def test_golden_failure_exits_nonzero_and_names_the_example(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=5), answers(wrong=("golden-03",)))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*golden rule: FAIL, 1 of 5 golden examples did not pass: golden-03*"]
    )


def test_golden_skip_or_error_is_not_a_pass(pytester: pytest.Pytester) -> None:
    body = """
import pytest

@pytest.fixture
def broken(example):
    if example.id == "golden-01":
        raise RuntimeError("fixture broke")

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, broken):
    if example.id == "golden-02":
        pytest.skip("no answer logged")
"""
    suite(pytester, rows(golden=3, distribution=1), body)
    result = pytester.runpytest("-m", "golden", "--llmeval-report", "report.json")
    result.assert_outcomes(passed=1, skipped=1, errors=1, deselected=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*golden rule: FAIL, 2 of 3 golden examples did not pass: "
            "golden-01 (error), golden-02 (skipped)*"
        ]
    )
    statuses = {
        r["example_id"]: (r["status"], r["failure_kind"]) for r in report_of(pytester)["records"]
    }
    assert statuses["golden-01"] == ("error", "setup error: RuntimeError")
    assert statuses["golden-02"] == ("skipped", None)

    # Only the skip: pytest alone would exit 0, the golden rule makes it 1.
    pytester.makepyfile(test_evals=body.replace('raise RuntimeError("fixture broke")', "pass"))
    result = pytester.runpytest("-m", "golden")
    result.assert_outcomes(passed=2, skipped=1, deselected=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_soft_partition_above_minimum_passes_and_lists_failures(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=2, distribution=10), answers(wrong=("distribution-04",)))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*11 passed, 1 softfailed*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*distribution (soft): PASS, pass rate 90.0% (9/10 examples) >= minimum 85.0%",
            "*soft failures (1):",
            "*distribution-04: exact_match failed (normalized)",
        ]
    )


def test_soft_partition_below_minimum_fails_and_says_by_how_much(pytester: pytest.Pytester) -> None:
    wrong = ("distribution-01", "distribution-02", "distribution-03")
    suite(
        pytester,
        rows(golden=1, distribution=10),
        answers(wrong=wrong),
        ini="llmeval_min_pass_rate = distribution:0.8",
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*distribution (soft): FAIL, pass rate 70.0% (7/10 examples) < minimum 80.0%, "
            "short by 10.0 points (1 more passing example needed)*",
        ]
    )


def test_hard_and_soft_are_configurable(pytester: pytest.Pytester) -> None:
    suite(
        pytester,
        rows(golden=1, regression=2, adversarial=2),
        answers(wrong=("regression-01", "adversarial-00")),
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*regression (hard): FAIL, 1 of 2 examples did not pass: regression-01*",
            "*adversarial (soft): FAIL, pass rate 50.0% (1/2 examples) < minimum 90.0%*",
        ]
    )
    result = pytester.runpytest(
        "--llmeval-hard-partitions",
        "golden adversarial",
        "--llmeval-min-pass-rate",
        "regression:50%",
    )
    assert result.parseoutcomes() == {"passed": 3, "failed": 1, "softfailed": 1}
    result.stdout.fnmatch_lines(
        [
            "*regression (soft): PASS, pass rate 50.0% (1/2 examples) >= minimum 50.0%*",
            "*adversarial (hard): FAIL, 1 of 2 examples did not pass: adversarial-00*",
        ]
    )


def test_soft_failures_do_not_count_toward_maxfail(pytester: pytest.Pytester) -> None:
    suite(
        pytester,
        rows(distribution=10),
        answers(wrong=("distribution-00", "distribution-01")),
        ini="llmeval_min_pass_rate = distribution:0.5",
    )
    result = pytester.runpytest("-x")
    assert result.ret == pytest.ExitCode.OK
    assert result.parseoutcomes() == {"passed": 8, "softfailed": 2}


def test_report_is_written_even_when_the_session_stops_early(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=4), answers(wrong=("golden-01",)))
    result = pytester.runpytest("-x", "--llmeval-report", "out/report.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    report = report_of(pytester, "out/report.json")
    # Every selected example has a record; those the run never got to say so.
    assert [(r["example_id"], r["status"]) for r in report["records"]] == [
        ("golden-00", "passed"),
        ("golden-01", "failed"),
        ("golden-02", "skipped"),
        ("golden-03", "skipped"),
    ]
    assert report["passed"] is False and report["run"]["exit_status"] == 1
    assert report["complete"] is False
    assert report["partitions"]["golden"]["failed"] == 1
    assert report["gates"][0]["not_passed"] == [
        {"id": "golden-01", "status": "failed"},
        {"id": "golden-02", "status": "not run"},
        {"id": "golden-03", "status": "not run"},
    ]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--llmeval-min-pass-rate", "distribution:1.5", "'1.5' is not a rate between 0 and 1"),
        ("--llmeval-min-pass-rate", "gold:0.5", "unknown partition 'gold'; valid: golden,"),
        ("--llmeval-min-pass-rate", "golden:0.5", "'golden' is a hard partition"),
        ("--llmeval-min-pass-rate", "distribution", "'distribution' is not of the form key:value"),
        ("--llmeval-hard-partitions", "regression", "must include 'golden'"),
        ("--llmeval-hard-partitions", "golden nope", "unknown partition 'nope'"),
        ("--llmeval-thresholds", "token_f1:high", "'high' is not a number"),
        ("--llmeval-gate", "bleu", "unknown metric 'bleu'; valid: judge, pass_rate"),
        ("--llmeval-gate", "judge.gold", "unknown partition 'gold'"),
        ("--llmeval-delta", "bleu:0.1", "unknown metric 'bleu'; valid: judge, pass_rate"),
        ("--llmeval-alpha", "1.5", "1.5 is not between 0 and 1"),
        ("--llmeval-strict", "maybe", "'maybe' is not yes or no"),
    ],
)
def test_bad_settings_are_usage_errors(
    pytester: pytest.Pytester, option: str, value: str, message: str
) -> None:
    suite(pytester, rows(golden=1), answers())
    result = pytester.runpytest(option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_header_shows_effective_settings(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=1), answers(), ini="llmeval_min_pass_rate = distribution:0.7")
    pytester.runpytest().stdout.fnmatch_lines(
        [
            "llmeval: hard: golden regression, soft: adversarial>=90% distribution>=70%, "
            "cache: use (*)"
        ]
    )


# --- xdist ------------------------------------------------------------------------------


def summary_without_timing(output: list[str]) -> list[str]:
    """The llmeval summary up to the verdicts, timing columns (latency, wall) dropped."""
    start = next(i for i, line in enumerate(output) if "llmeval summary" in line)
    lines = []
    for line in output[start + 1 :]:
        if line.startswith(("slowest", "failures by", "=")):
            break
        cells = re.split(r" {2,}", line.strip())
        if len(cells) > 3:  # a row of the table
            lines.append("  ".join(cells[:-3]))
        elif line.strip():
            lines.append(line)
    return lines


MIXED = """
import pytest
from pytest_llmeval import assert_exact_match, assert_token_f1

WRONG = {wrong!r}

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    n = int(example.id.rsplit("-", 1)[1])
    soft = example.partition in ("adversarial", "distribution")
    wrong = (soft and n % 4 == 3) or example.id in WRONG
    assert_token_f1("something else" if wrong else example.expected_output,
                    example.expected_output, threshold=0.5)

@pytest.mark.llmeval(dataset="data.jsonl", partition=["golden", "regression"])
def test_exact(example):
    if example.id == "regression-01":
        pytest.skip("no reference yet")
    assert_exact_match(example.expected_output, example.expected_output)
"""


@pytest.mark.parametrize("wrong_golden", [False, True])
def test_serial_and_xdist_give_the_same_summary_and_exit_status(
    pytester: pytest.Pytester, wrong_golden: bool
) -> None:
    body = MIXED.format(wrong={"golden-01"} if wrong_golden else set())
    suite(
        pytester,
        rows(golden=3, regression=2, adversarial=4, distribution=12),
        body,
        ini="llmeval_min_pass_rate = adversarial:0.7 distribution:0.7",
    )
    serial = pytester.runpytest("--llmeval-report", "serial.json")
    parallel = pytester.runpytest("-n", "2", "--llmeval-report", "parallel.json")
    assert (
        serial.ret
        == parallel.ret
        == (pytest.ExitCode.TESTS_FAILED if wrong_golden else pytest.ExitCode.OK)
    )
    assert summary_without_timing(serial.outlines) == summary_without_timing(parallel.outlines)
    assert any("golden rule" in line for line in summary_without_timing(serial.outlines))
    one, two = report_of(pytester, "serial.json"), report_of(pytester, "parallel.json")
    strip = ("duration_s", "elapsed_s", "latency_s", "started_at", "finished_at")
    assert [{k: v for k, v in r.items() if k not in strip} for r in one["records"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in two["records"]
    ]
    assert one["gates"] == two["gates"]
    assert len(one["records"]) == 21 + 5
