"""The deterministic metrics and constraint checks, without pytest plumbing."""

from __future__ import annotations

import json
import math

import pydantic
import pytest

from pytest_llmeval.metrics import (
    Check,
    MetricResult,
    as_checks,
    exact_match,
    forbidden_terms,
    matches_regex,
    matches_schema,
    max_length,
    min_length,
    normalize_answer,
    required_phrases,
    run_checks,
    token_f1,
    valid_json,
)
from pytest_llmeval.records import Record
from pytest_llmeval.runs.summary import PartitionStats


def test_normalize_answer_follows_squad() -> None:
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"


def test_exact_match_normalized_and_raw() -> None:
    assert exact_match("The answer.", "answer") == 1.0
    assert exact_match("The answer.", "answer", normalize=False) == 0.0
    assert exact_match("answers", "answer") == 0.0


@pytest.mark.parametrize(
    ("output", "expected", "scores"),
    [
        ("the cat sat", "the cat sat", (1.0, 1.0, 1.0)),
        ("cat sat on mat", "cat sat", (0.5, 1.0, 2 / 3)),
        ("dog", "cat", (0.0, 0.0, 0.0)),
        ("", "", (1.0, 1.0, 1.0)),
        ("the", "cat", (0.0, 0.0, 0.0)),  # only an article: no tokens left
        ("cat cat cat", "cat", (1 / 3, 1.0, 0.5)),  # overlap counts multiplicity
    ],
)
def test_token_f1(output: str, expected: str, scores: tuple[float, float, float]) -> None:
    assert token_f1(output, expected) == pytest.approx(scores)


def test_length_checks_in_chars_and_words() -> None:
    assert max_length(5).run("12345").passed
    outcome = max_length(5).run("123456")
    assert not outcome.passed and outcome.detail == "6 chars (max 5)"
    assert min_length(3, unit="words").run("one two three").passed
    assert not min_length(3, unit="words").run("one two").passed
    with pytest.raises(ValueError, match="unit"):
        max_length(3, unit="tokens")


def test_forbidden_terms_whole_words_case_insensitive() -> None:
    check = forbidden_terms(["refund", "HelpHive"])
    assert check.run("No refunds here").passed  # whole words only
    outcome = check.run("Unlike helphive, we offer a REFUND.")
    assert not outcome.passed
    assert outcome.detail == "found 'refund', 'HelpHive'"


def test_required_phrases_lists_missing() -> None:
    outcome = required_phrases(["30 days", "annual plan"]).run("Within 30 DAYS of purchase.")
    assert not outcome.passed and outcome.detail == "missing 'annual plan'"


def test_regex_and_json_checks() -> None:
    assert matches_regex(r"\$\d+").run("costs $12").passed
    assert not matches_regex(r"\$\d+").run("costs twelve").passed
    assert valid_json().run('{"a": 1}').passed
    bad = valid_json().run("{'a': 1}")
    assert not bad.passed and "line 1" in bad.detail


def test_schema_check_with_pydantic_model() -> None:
    class Reply(pydantic.BaseModel):
        answer: str
        confidence: float

    check = matches_schema(Reply)
    assert check.run('{"answer": "yes", "confidence": 0.9}').passed
    outcome = check.run('{"answer": "yes"}')
    assert not outcome.passed and "confidence" in outcome.detail
    assert not check.run("not json").passed


def test_check_that_raises_is_a_failed_check_carrying_its_error() -> None:
    def explodes(output: str) -> bool:
        raise RuntimeError("boom")

    (outcome,) = run_checks("x", [explodes])
    assert outcome.name == "explodes" and not outcome.passed
    assert outcome.error == "RuntimeError: boom"


def test_check_return_forms() -> None:
    outcomes = run_checks(
        "hello",
        {"bool": lambda o: True, "pair": lambda o: (False, "why"), "wrong": lambda o: "yes"},
    )
    assert [(o.name, o.passed, o.detail) for o in outcomes] == [
        ("bool", True, ""),
        ("pair", False, "why"),
        ("wrong", False, ""),
    ]
    assert outcomes[2].error is not None and "expected bool" in outcomes[2].error


def test_as_checks_rejects_non_callables() -> None:
    assert as_checks([Check("n", bool)])[0].name == "n"
    with pytest.raises(TypeError, match="not a check"):
        as_checks([42])  # type: ignore[list-item]


def test_every_builtin_check_can_be_renamed() -> None:
    checks = [
        max_length(9, name="a"),
        min_length(1, name="b"),
        forbidden_terms(["x"], name="c"),
        required_phrases(["y"], name="d"),
        matches_regex("z", name="e"),
        valid_json(name="f"),
        matches_schema(int, name="g"),
    ]
    assert [o.name for o in run_checks("1", checks)] == list("abcdefg")


@pytest.mark.parametrize(
    ("score", "threshold"),
    [(math.nan, 0.85), (math.inf, 0.5), (0.9, math.nan), (-math.inf, -math.inf)],
)
def test_a_non_finite_score_or_threshold_is_null_in_json(score: float, threshold: float) -> None:
    data = MetricResult("similarity", score, threshold, False, {"embedder": "x"}).to_json()
    assert data["score"] == (score if math.isfinite(score) else None)
    assert data["threshold"] == (threshold if math.isfinite(threshold) else None)
    json.dumps(data, allow_nan=False)  # standard JSON


def test_finite_scores_and_a_missing_threshold_are_kept() -> None:
    data = MetricResult("constraints", 0.5, None, False).to_json()
    assert data == {
        "name": "constraints",
        "score": 0.5,
        "threshold": None,
        "passed": False,
        "details": {},
    }


def test_a_null_score_is_left_out_of_the_partition_mean() -> None:
    stats = PartitionStats("distribution")
    for score in (0.8, math.nan, 0.6):
        record = Record(example_id=f"ex-{score}", partition="distribution")
        record.metrics.append(MetricResult("similarity", score, 0.85, False).to_json())
        stats.add(record)
    assert stats.metric_scores == {"similarity": [0.8, 0.6]}
    assert stats.metric_mean("similarity") == pytest.approx(0.7)


@pytest.mark.parametrize("threshold", [math.nan, math.inf, -math.inf])
def test_a_non_finite_threshold_is_refused(threshold: float) -> None:
    from pytest_llmeval import assert_token_f1

    with pytest.raises(ValueError, match="a threshold is a finite number"):
        assert_token_f1("a b", "a b", threshold=threshold)
