"""Assertion helpers outside a pytest eval test, and threshold resolution."""

from __future__ import annotations

import pytest

from pytest_llmeval import LLMEvalAssertionError, assert_exact_match, assert_token_f1, thresholds
from pytest_llmeval.context import RunContext, activate, deactivate
from pytest_llmeval.records import Record, bind


def test_helpers_work_without_a_record() -> None:
    result = assert_token_f1("the cat sat", "cat sat")
    assert result.passed and result.threshold == 0.8
    with pytest.raises(LLMEvalAssertionError) as info:
        assert_exact_match("dog", "cat")
    assert info.value.result.score == 0.0 and info.value.kind == "exact_match"


def test_reference_free_examples_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="needs a reference answer"):
        assert_token_f1("x", None)


def test_threshold_resolution_order() -> None:
    token = activate(RunContext(thresholds={"token_f1": 0.7, "judge.golden": 4.5}))
    try:
        assert thresholds.resolve("token_f1", "golden") == 0.7
        assert thresholds.resolve("token_f1", "golden", 0.2) == 0.2
        assert thresholds.resolve("judge", "golden") == 4.5
        assert thresholds.resolve("judge", "distribution") == 3.0
        assert thresholds.resolve("similarity", "golden") == 0.88
        assert thresholds.resolve("similarity", None) == 0.85
        with pytest.raises(KeyError, match="pass threshold="):
            thresholds.resolve("bleu", None)
    finally:
        deactivate(token)


def test_partition_of_the_bound_record_picks_the_threshold() -> None:
    token = activate(RunContext(thresholds={"token_f1.golden": 0.95}))
    previous = bind(Record(example_id="x", partition="golden"))
    try:
        with pytest.raises(LLMEvalAssertionError, match=r"threshold 0\.950 \(golden\)"):
            assert_token_f1("b c d e f g h i j k", "b c d e f g h i j")
    finally:
        bind(previous)
        deactivate(token)
