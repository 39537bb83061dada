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

The rubric verdicts are a judge panel's: two judge models (both answered by the demo
server's scripted judge, ``demo_judge.py``) score each response, and the verdict is the
mean of their means. The summary adds the panel's lines: each judge's mean, and how well
the two agree (Krippendorff's alpha). The rest of the suite keeps its one judge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from pytest_llmeval import (
    Example,
    Judge,
    LLMEvalAssertionError,
    assert_grounded,
    assert_similar,
)
from pytest_llmeval.grounding import UNSUPPORTED

if TYPE_CHECKING:
    from pytest_llmeval.client import LLMClient

# The panel: the suite's judge (llmeval_judge_model) and a second one. For the whole run,
# ``llmeval_judge_models = judge-demo-1,judge-demo-2`` would do it; here it is this file's.
PANEL = ("judge-demo-1", "judge-demo-2")
# Drawn once, whatever llmeval_repeat says: the responses are fixed, and a judge's
# verdicts are keyed by what they judge, so a second draw could only repeat the first.
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


@pytest.fixture(scope="session")
def panel(judge_client: LLMClient, judge: Judge) -> Judge:
    """Two judges on the one judge client (its cache, retries and bounds), each asked as
    the suite's judge is (its samples, temperature and token bound)."""
    return Judge(
        judge_client,
        models=PANEL,
        n_samples=judge.n_samples,
        temperature=judge.temperature,
        max_tokens=judge.max_tokens,
    )


@pytest.mark.llmeval(dataset=CALIBRATION, repeat=1)
def test_judge_within_a_point_of_people(example: Example, panel: Judge) -> None:
    """The panel's verdict (the mean of the two judges') within a point of the person's."""
    result = panel.score(
        example.metadata["response"], task=TASK, criteria=CRITERIA, input=example.input
    )
    assert example.human_score is not None
    assert abs(result.mean - example.human_score) <= 1, (
        f"the judge gave {result.mean:.1f}, people {example.human_score:.0f}"
    )


@pytest.mark.llmeval(dataset=CALIBRATION, repeat=1)
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


@pytest.mark.llmeval(dataset=CALIBRATION, repeat=1)
def test_similarity_separates_what_people_separate(example: Example) -> None:
    agrees(
        example.human_labels["acceptable"],
        lambda: assert_similar(
            example.metadata["response"], example.expected_output, threshold=0.70
        ),
    )
