"""Retrieval metrics against hand computations on a fixed ranking, and assert_retrieval."""

from __future__ import annotations

import math

import pytest

from pytest_llmeval import LLMEvalAssertionError, Record, assert_retrieval, current_record
from pytest_llmeval.records import bind
from pytest_llmeval.retrieval import score_ranking

RANKING = ["d3", "d1", "d7", "d2", "d9", "d4"]
GRADED = {"d1": 3, "d2": 2, "d4": 1, "d8": 0}  # d8: judged, not relevant


def test_graded_metrics_at_5_match_the_hand_computation() -> None:
    scores = score_ranking(RANKING, GRADED, k=5)
    # Top 5: d3 d1 d7 d2 d9. Relevant: d1 (3), d2 (2), d4 (1; at rank 6, outside).
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.precision == pytest.approx(2 / 5)
    assert scores.mrr == pytest.approx(1 / 2)  # first relevant at rank 2
    dcg = 3 / math.log2(3) + 2 / math.log2(5)  # d1 at rank 2, d2 at rank 4
    ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)  # 3, 2, 1 at ranks 1-3
    assert scores.ndcg == pytest.approx(dcg / ideal)
    assert scores.ndcg == pytest.approx(0.578375, abs=1e-6)
    assert scores.found == ("d1", "d2")
    assert scores.missed == ("d4",)


def test_a_smaller_k_and_a_longer_one() -> None:
    at_2 = score_ranking(RANKING, GRADED, k=2)
    assert (at_2.recall, at_2.precision, at_2.mrr) == pytest.approx((1 / 3, 1 / 2, 1 / 2))
    assert at_2.ndcg == pytest.approx((3 / math.log2(3)) / (3 + 2 / math.log2(3)))
    at_1 = score_ranking(RANKING, GRADED, k=1)
    assert (at_1.recall, at_1.precision, at_1.mrr, at_1.ndcg) == (0, 0, 0, 0)
    at_10 = score_ranking(RANKING, GRADED, k=10)  # fewer results than k count as misses
    assert (at_10.recall, at_10.precision) == pytest.approx((1.0, 3 / 10))
    dcg = 3 / math.log2(3) + 2 / math.log2(5) + 1 / math.log2(7)
    assert at_10.ndcg == pytest.approx(dcg / (3 + 2 / math.log2(3) + 1 / 2))


def test_ids_without_grades_are_relevant_alike_and_repeats_count_once() -> None:
    # The repeated "a" takes rank 2: "b" is at rank 3, "c" outside the top 3.
    scores = score_ranking(["a", "a", "b", "c"], ["b", "c"], k=3)
    assert (scores.recall, scores.precision, scores.mrr) == pytest.approx((1 / 2, 1 / 3, 1 / 3))
    assert scores.ndcg == pytest.approx((1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert score_ranking(["b", "b"], ["b", "c"], k=2).precision == 1 / 2  # b counts once
    assert score_ranking(["a", "a", "b"], ["b"], k=2).recall == 0.0


@pytest.mark.parametrize(
    ("relevant", "k", "message"),
    [
        ([], 5, "at least one relevant"),
        ({"a": 0}, 5, "at least one relevant"),
        (["a"], 0, "k must"),
    ],
)
def test_what_cannot_be_scored_is_refused(relevant: object, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score_ranking(["a"], relevant, k=k)  # type: ignore[arg-type]


def test_assert_retrieval_records_all_four_and_gates_recall_by_partition() -> None:
    record = Record(example_id="q", partition="golden")
    previous = bind(record)
    try:
        with pytest.raises(LLMEvalAssertionError) as info:
            assert_retrieval([{"id": "d3", "score": 0.9}, ("d1", 0.8), "d7"], ["d1", "d2"], k=3)
        assert current_record() is record
    finally:
        bind(previous)
    message = str(info.value)
    assert message.splitlines()[0] == "retrieval: recall@3 0.500 < 1.000 (golden)"
    assert "missed: ['d2']" in message
    assert [(m["name"], m["threshold"], m["passed"]) for m in record.metrics] == [
        ("retrieval_recall", 1.0, False),
        ("retrieval_precision", None, True),
        ("retrieval_mrr", None, True),
        ("retrieval_ndcg", None, True),
    ]
    # Outside golden the default is 0.8; a minimum given for another metric gates it too.
    scores = assert_retrieval(["d1", "d2", "d3"], ["d1", "d2"], k=3, min_mrr=1.0)
    assert scores.recall == 1.0
    with pytest.raises(LLMEvalAssertionError, match=r"mrr@3 0\.500 < 0\.900"):
        assert_retrieval(["d3", "d1", "d2"], ["d1", "d2"], k=3, min_mrr=0.9)
