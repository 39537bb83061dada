"""The record's TypedDicts are its wire format: a real run's report has exactly their keys,
so renaming a key where it is written (a ``to_json``) or declared fails here, and mypy
catches the readers."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest

# Imported before the in-process run: pytester drops the modules a run imports, and
# numpy (which calibration imports) cannot be imported twice in one process.
from pytest_llmeval.calibration import CalibrationJSON, JudgeAgreementJSON
from pytest_llmeval.records import (
    CheckEntry,
    ClaimEntry,
    HumanLabels,
    JudgedGroundingVerdict,
    MetricEntry,
    ModelUsage,
    PairwiseVerdict,
    Record,
    RecordJSON,
    RubricVerdict,
    Tokens,
)
from pytest_llmeval.runs.report import ReportJSON
from pytest_llmeval.runs.summary import PartitionJSON, PartitionVerdictJSON
from pytest_llmeval.testing import FakeOpenAIServer

ANSWER = "The Team plan costs $29."

SUITE = """
import pytest
from pytest_llmeval import (
    assert_constraints, assert_exact_match, assert_grounded, assert_judge, assert_preferred,
    max_length,
)

@pytest.mark.llmeval(dataset="data.jsonl")
def test_everything(example, llm, judge, llmeval_record):
    answer = llm.complete(example.input["question"])
    assert_exact_match(answer, example.expected_output)
    assert_constraints(answer, [max_length(100)])
    assert_judge(judge, answer, task="t", criteria=["c"])
    assert_preferred(judge, answer, "No idea.", task="t", criteria=["c"])
    assert_grounded(answer, "The Team plan costs $29 per month.", judge=judge)
    llmeval_record["note"] = "mine"
"""


def scripted(request: dict[str, Any]) -> str:
    """The app's answer, and a verdict for each kind of judge prompt."""
    system = request["messages"][0]["content"]
    if "comparing two responses" in system:
        return json.dumps({"reasoning": "A quotes the price", "winner": "A"})
    if "check an answer against a context" in system:
        claim = {"claim": ANSWER, "label": "SUPPORTED", "evidence": "costs $29"}
        return json.dumps({"claims": [claim]})
    if "impartial evaluator" in system:
        return json.dumps({"reasoning": "right price", "score": 5})
    return ANSWER


def keys(cls: Any) -> set[str]:
    return set(cls.__required_keys__ | cls.__optional_keys__)


def test_record_json_has_one_key_per_field_of_record() -> None:
    assert RecordJSON.__required_keys__ == {f.name for f in fields(Record)}
    assert set(Record("a", "golden").to_json()) == RecordJSON.__required_keys__


def test_a_real_runs_report_has_exactly_the_keys_of_the_typed_dicts(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_openai.reply = scripted
    row = {
        "id": "golden-1",
        "partition": "golden",
        "input": {"question": "What does Team cost?"},
        "expected_output": ANSWER,
        "human_score": 5,
        "human_labels": {"acceptable": True},
    }
    pytester.path.joinpath("data.jsonl").write_text(json.dumps(row) + "\n")
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nllmeval_cache = off\n"
        f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = app-1\n"
        "llmeval_judge_model = judge-1\nllmeval_report = report.json\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)
    report = json.loads(pytester.path.joinpath("report.json").read_text())
    assert set(report) == ReportJSON.__required_keys__
    assert all(set(p) == PartitionJSON.__required_keys__ for p in report["partitions"].values())
    assert all(set(g) == PartitionVerdictJSON.__required_keys__ for g in report["gates"])
    assert set(report["calibration"]) <= keys(CalibrationJSON)
    assert set(report["calibration"]["judge"]) == JudgeAgreementJSON.__required_keys__

    (record,) = report["records"]
    assert set(record) == RecordJSON.__required_keys__
    assert set(record["human"]) == HumanLabels.__required_keys__
    assert set(record["tokens"]) == keys(Tokens)
    assert set(record["usage"]) == {"app-1", "judge-1"}
    assert all(set(u) == ModelUsage.__required_keys__ for u in record["usage"].values())

    metrics = {m["name"]: m for m in record["metrics"]}
    assert set(metrics) == {"exact_match", "constraints", "judge", "preference", "grounding"}
    assert all(set(m) == MetricEntry.__required_keys__ for m in metrics.values())
    (check,) = metrics["constraints"]["details"]["checks"]
    assert CheckEntry.__required_keys__ <= set(check) <= keys(CheckEntry)
    (claim,) = metrics["grounding"]["details"]["claims"]
    assert set(claim) == ClaimEntry.__required_keys__

    verdicts = {v["kind"]: v for v in record["judge"]}
    assert set(verdicts["rubric"]) == RubricVerdict.__required_keys__
    assert set(verdicts["pairwise"]) == PairwiseVerdict.__required_keys__
    assert set(verdicts["grounding"]) == JudgedGroundingVerdict.__required_keys__
    (claim,) = verdicts["grounding"]["claims"]
    assert set(claim) == ClaimEntry.__required_keys__
