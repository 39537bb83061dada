"""The metrics, checked against people: a small human-labelled calibration set.

Each example of ``calibration.jsonl`` carries a fixed response (in ``metadata``) that a
person labelled: a 1-5 score (``human_score``), whether it is acceptable against the
reference, and the label of each checkable claim (``human_labels``). Each test asks
whether a metric reaches the person's verdict, and the summary's calibration section
(or ``llmeval calibrate REPORT.json``) shows the agreement over the whole set: Spearman,
weighted kappa and error for the judge, the similarity threshold that best separates
good from bad, and the grounding check's precision and recall.

The set includes the three answers of the grounding example: a faithful one, one with a
subtly wrong price, and one with a fabricated feature.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_llmeval import (
    Example,
    Judge,
    LLMEvalAssertionError,
    assert_grounded,
    assert_similar,
)
from pytest_llmeval.grounding import UNSUPPORTED

CALIBRATION = "calibration.jsonl"
TASK = "Answer a Brightdesk customer's support question from the knowledge base."
CRITERIA = [
    "answers the question with the facts the knowledge base gives, and nothing else",
    "stays in the Brightdesk support persona: brief, friendly, signed off",
]


def agrees(acceptable: bool, check: Callable[[], object]) -> None:
    """The check passes on what people accept and fails on what they reject."""
    __tracebackhide__ = True
    try:
        check()
    except LLMEvalAssertionError:
        if acceptable:
            raise
        return
    assert acceptable, "the check passed a response that people rejected"


@pytest.mark.llmeval(dataset=CALIBRATION)
def test_judge_within_a_point_of_people(example: Example, judge: Judge) -> None:
    result = judge.score(
        example.metadata["response"], task=TASK, criteria=CRITERIA, input=example.input
    )
    assert example.human_score is not None
    assert abs(result.mean - example.human_score) <= 1, (
        f"the judge gave {result.mean:.1f}, people {example.human_score:.0f}"
    )


@pytest.mark.llmeval(dataset=CALIBRATION)
def test_grounding_flags_what_people_flag(
    example: Example, judge: Judge, knowledge_base: str
) -> None:
    """The judge's claim check, merged with the deterministic pre-check, fails exactly
    the responses with a claim that people labelled unsupported, and names each one."""
    result = judge.check_grounding(
        example.metadata["response"], knowledge_base, question=example.input["question"]
    )
    labelled = example.human_labels.get("claims", {})
    flagged = [claim for claim, label in labelled.items() if label == UNSUPPORTED]
    agrees(not flagged, lambda: assert_grounded(result))
    named = " | ".join(claim.text for claim in result.unsupported).lower()
    missed = [claim for claim in flagged if claim.lower() not in named]
    assert not missed, f"the grounding check did not flag {missed}"


@pytest.mark.llmeval(dataset=CALIBRATION)
def test_similarity_separates_what_people_separate(example: Example) -> None:
    agrees(
        example.human_labels["acceptable"],
        lambda: assert_similar(
            example.metadata["response"], example.expected_output, threshold=0.70
        ),
    )
