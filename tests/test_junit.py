"""JUnit XML that carries the eval (plugin/junit.py): the verdicts as test-suite
properties, each failure's and soft failure's scores against thresholds in its message,
per-testcase properties when asked (xunit1); valid against the JUnit schema pytest's own
tests use (tests/data/junit-10.xsd), serially and under xdist, and for the example suite."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).parent / "data" / "junit-10.xsd"

SUITE = """
import pytest
from pytest_llmeval import assert_token_f1

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llmeval_record):
    llmeval_record.cost_usd = 0.0015
    answer = "no idea" if example.id.endswith("3") else example.expected_output
    assert_token_f1(answer, example.expected_output, threshold=0.7)

def test_plain():
    assert 1 + 1 == 3, "not an eval test"
"""

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
{extra}
"""


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(SCHEMA))


def make_suite(pytester: pytest.Pytester, ini: str = "") -> None:
    rows = [
        {"id": f"{p}-{i}", "partition": p, "input": {"q": i}, "expected_output": f"answer {p} {i}"}
        for p in ("golden", "distribution")
        for i in range(4)
    ]
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytester.makeini(INI.format(extra=ini))
    pytester.makepyfile(test_evals=SUITE)


def parse(path: Path) -> tuple[dict[str, str], dict[str, ET.Element]]:
    """The suite's properties and each testcase by its name."""
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name", ""): p.get("value", "") for p in suite.findall("properties/property")}
    return props, {tc.get("name", ""): tc for tc in suite.iter("testcase")}


WORKERS = pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])


@WORKERS
def test_the_suite_carries_the_verdicts_and_each_failure_its_scores(
    pytester: pytest.Pytester, schema: xmlschema.XMLSchema, workers: list[str]
) -> None:
    make_suite(pytester)
    result = pytester.runpytest("--junitxml=out/junit.xml", *workers)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    xml = pytester.path / "out" / "junit.xml"
    schema.validate(str(xml))  # pytest's default family, xunit2
    props, cases = parse(xml)
    assert props == {
        "llmeval": "FAIL (golden rule; distribution (soft); 1 other test failed)",
        "llmeval.gate.golden": ("golden rule: FAIL, 1 of 4 golden examples did not pass: golden-3"),
        "llmeval.gate.distribution": (
            "distribution (soft): FAIL, pass rate 75.0% (3/4 examples) < minimum 85.0%, "
            "short by 10.0 points (1 more passing example needed)"
        ),
        "llmeval.pass_rate.golden": "0.75",
        "llmeval.pass_rate.distribution": "0.75",
    }
    failure = cases["test_answer[golden-3]"].find("failure")
    assert failure is not None
    # First in the message, which CI test tabs show, and at the end of the text.
    assert failure.get("message", "").startswith(
        "llmeval: token_f1 0.00 < 0.70\npytest_llmeval.errors.LLMEvalAssertionError: token_f1"
    )
    assert re.search(r"\n-+ llmeval -+\nllmeval: token_f1 0.00 < 0.70\n*$", failure.text or "")
    skipped = cases["test_answer[distribution-3]"].find("skipped")
    assert skipped is not None and skipped.get("type") == "pytest.xfail"
    assert skipped.get("message") == (
        "soft failure (distribution): token_f1; llmeval: token_f1 0.00 < 0.70"
    )
    # A test that is not an eval test is left as pytest writes it.
    if not workers:  # the terminal's short summary says it too
        result.stdout.fnmatch_lines(
            ["FAILED test_evals.py::test_answer[[]golden-3[]] - llmeval: token_f1 0.00 < 0.70"]
        )
    plain = cases["test_plain"].find("failure")
    assert plain is not None and "llmeval" not in plain.get("message", "")
    # No testcase properties unless asked.
    assert not any(tc.find("properties") is not None for tc in cases.values())
    assert not [line for line in result.outlines if "WARNING" in line or "warning" in line]


def test_without_junitxml_no_report_is_touched(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = pytester.runpytest("-rfx")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert not [line for line in result.outlines if "llmeval: token_f1" in line]
    result.stdout.fnmatch_lines(
        ["FAILED test_evals.py::test_answer[[]golden-3[]] - pytest_llmeval.errors.LLMEval*"]
    )


@WORKERS
def test_testcase_properties_when_asked(pytester: pytest.Pytester, workers: list[str]) -> None:
    make_suite(pytester, "llmeval_junit_properties = yes\njunit_family = xunit1")
    result = pytester.runpytest("--junitxml=junit.xml", *workers)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    _, cases = parse(pytester.path / "junit.xml")
    props = {
        name: [(p.get("name"), p.get("value")) for p in tc.findall("properties/property")]
        for name, tc in cases.items()
    }
    assert props["test_answer[golden-3]"] == [
        ("llmeval.example_id", "golden-3"),
        ("llmeval.partition", "golden"),
        ("llmeval.status", "failed"),
        ("llmeval.token_f1.score", "0"),
        ("llmeval.token_f1.threshold", "0.7"),
        ("llmeval.cost_usd", "0.0015"),
    ]
    assert props["test_answer[distribution-3]"][2] == ("llmeval.status", "failed (soft)")
    assert props["test_answer[golden-0]"][2:4] == [
        ("llmeval.status", "passed"),
        ("llmeval.token_f1.score", "1"),
    ]
    assert props["test_plain"] == []
    assert not [line for line in result.outlines if "junit_properties" in line]


def test_testcase_properties_under_xunit2_are_warned_about_and_invalid(
    pytester: pytest.Pytester, schema: xmlschema.XMLSchema
) -> None:
    make_suite(pytester, "llmeval_junit_properties = yes")
    result = pytester.runpytest("--junitxml=junit.xml")
    result.stdout.fnmatch_lines(
        [
            "*LLMEvalWarning: llmeval_junit_properties: testcase properties are not valid in "
            "junit_family 'xunit2'*use junit_family = xunit1*"
        ]
    )
    _, cases = parse(pytester.path / "junit.xml")
    assert cases["test_answer[golden-0]"].find("properties") is not None
    # Why they are asked for, and xunit1 is said: the schema has no testcase properties.
    assert not schema.is_valid(str(pytester.path / "junit.xml"))
    # A suite that makes warnings errors stops there, as it would for record_property.
    make_suite(pytester, "llmeval_junit_properties = yes\nfilterwarnings = error")
    result = pytester.runpytest("--junitxml=junit.xml")
    assert result.ret not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert "LLMEvalWarning: llmeval_junit_properties" in result.stderr.str() + result.stdout.str()


def test_a_session_without_eval_tests_gets_no_properties(
    pytester: pytest.Pytester, schema: xmlschema.XMLSchema
) -> None:
    pytester.makeini(INI.format(extra=""))
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    assert pytester.runpytest("--junitxml=junit.xml").ret == pytest.ExitCode.OK
    schema.validate(str(pytester.path / "junit.xml"))
    assert parse(pytester.path / "junit.xml")[0] == {}
