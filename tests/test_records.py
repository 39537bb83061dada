"""Values a test puts in its record: JSON-serialisable, or a TypeError at the user's line;
a NaN or an infinity anywhere in one is null, so the report stays standard JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from pytest_llmeval.files import dumps
from pytest_llmeval.records import Record

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def record() -> Record:
    return Record(example_id="ex-1", partition="golden")


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        ([1.0, math.nan, "x"], [1.0, None, "x"]),
        ((math.inf, 2), [None, 2]),
        ({"a": {"b": [0.5, -math.inf]}, "c": True}, {"a": {"b": [0.5, None]}, "c": True}),
        (
            {math.nan: 1, math.inf: 2, -math.inf: 3, 1.5: 4},
            {"NaN": 1, "Infinity": 2, "-Infinity": 3, 1.5: 4},
        ),
    ],
)
def test_a_non_finite_number_anywhere_in_a_value_is_null(value: Any, stored: Any) -> None:
    rec = record()
    rec["value"] = value
    assert rec["value"] == stored
    dumps(rec.to_json())  # standard JSON: would raise naming the key path otherwise


def test_a_value_with_a_non_finite_number_is_not_modified_in_place() -> None:
    value = {"scores": [1.0, math.nan]}
    rec = record()
    rec["value"] = value
    assert rec["value"] == {"scores": [1.0, None]}
    assert math.isnan(value["scores"][1])  # the caller's object is the caller's


def test_a_finite_value_is_kept_as_it_is_without_a_copy() -> None:
    value = {"scores": [1.0, 2.5], "note": "fine", "n": 10**30}
    rec = record()
    rec["value"] = value
    assert rec["value"] is value


def test_a_non_str_output_with_a_non_finite_number_is_null_in_the_json() -> None:
    rec = record()
    rec.output = {"answer": "42", "confidence": math.nan, "logprobs": [-0.1, -math.inf]}
    assert rec.to_json()["output"] == {
        "answer": "42",
        "confidence": None,
        "logprobs": [-0.1, None],
    }
    rec.output = math.inf
    assert rec.to_json()["output"] is None
    rec.output = "a plain answer"
    assert rec.to_json()["output"] == "a plain answer"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (object(), "Object of type object is not JSON serializable"),
        ({"when": {1, 2}}, "Object of type set is not JSON serializable"),
        ([math.nan, object()], "Object of type object is not JSON serializable"),
    ],
)
def test_a_value_json_cannot_hold_is_still_a_type_error(value: Any, why: str) -> None:
    with pytest.raises(TypeError) as info:
        record()["value"] = value
    assert str(info.value) == (
        "llmeval record value 'value' must be JSON-serialisable "
        f"(str, number, bool, None, list, dict): {why}"
    )


def test_a_circular_value_is_a_type_error_too() -> None:
    loop: list[Any] = [math.nan]
    loop.append(loop)
    with pytest.raises(TypeError, match=r"must be JSON-serialisable .*Circular reference"):
        record()["value"] = loop


BODY = """
import math
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llmeval_record):
    llmeval_record["ratio"] = math.inf
    llmeval_record["nested"] = {"scores": [1.0, math.nan]}
    llmeval_record.output = {"answer": example.expected_output, "confidence": -math.inf}
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_report_holds_null_and_needs_no_repair(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    examples = [
        {"id": f"golden-{i}", "partition": "golden", "input": {"q": "q"}, "expected_output": "a"}
        for i in range(2)
    ]
    pytester.path.joinpath("data.jsonl").write_text(
        "".join(json.dumps(example) + "\n" for example in examples)
    )
    pytester.makepyfile(test_evals=BODY)
    result = pytester.runpytest("--llmeval-report", "report.json", *workers)
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*written as null*")  # nothing was left to repair

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the report")

    text = pytester.path.joinpath("report.json").read_text()
    report = json.loads(text, parse_constant=refuse)
    for rec in report["records"]:
        assert rec["extra"] == {"ratio": None, "nested": {"scores": [1.0, None]}}
        assert rec["output"] == {"answer": "a", "confidence": None}
