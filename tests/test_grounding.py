"""The deterministic grounding pre-check and assert_grounded."""

from __future__ import annotations

import pytest

from pytest_llmeval import LLMEvalAssertionError, assert_grounded
from pytest_llmeval.grounding import SUPPORTED, UNSUPPORTED, Claim, facts, faithfulness, precheck

CONTEXT = """Team costs $29 per agent per month, or $23.20 billed annually (20% off).
Annual plans get a full refund within 30 days. Data is kept for 60 days after cancelling.
The 2FA reset link expires on 2025-01-31. Business adds SmartRoute and SSO. Up to 25 agents."""

FAITHFUL = (
    "Team is $29 per agent per month ($23.20 billed annually, 20% off); refunds within 30 days."
)
WRONG_PRICE = "Team is $27 per agent per month, or $21.60 billed annually (25% off)."
FABRICATED = "Business adds AutoPilot, which closes 80% of tickets before March 3, 2025."


def labels(answer: str) -> list[tuple[str, str, str]]:
    return [(c.kind, c.text, c.label) for c in precheck(answer, CONTEXT)]


def test_faithful_answer_is_fully_supported() -> None:
    assert {label for _, _, label in labels(FAITHFUL)} == {SUPPORTED}


def test_subtly_wrong_price_and_percentage_are_caught() -> None:
    assert labels(WRONG_PRICE) == [
        ("price", "$27", UNSUPPORTED),
        ("price", "$21.60", UNSUPPORTED),
        ("percentage", "25%", UNSUPPORTED),  # 25 is in the context, but not as a percentage
    ]


def test_fabricated_feature_and_figures_are_caught() -> None:
    assert labels(FABRICATED) == [
        ("name", "AutoPilot", UNSUPPORTED),
        ("percentage", "80%", UNSUPPORTED),
        ("date", "March 3, 2025", UNSUPPORTED),
    ]


def test_known_names_dates_and_plain_numbers() -> None:
    answer = "SmartRoute is on Business; the link expires 2025-01-31; up to 25 agents."
    assert {label for _, _, label in labels(answer)} == {SUPPORTED}
    named = precheck("Try HelpHive for that.", CONTEXT, names=["HelpHive"])
    assert [(c.text, c.label) for c in named] == [("HelpHive", UNSUPPORTED)]


def test_facts_take_the_most_specific_kind_once() -> None:
    assert facts("It is $1,200.50 or 15% or 12 dollars on Jan 5") == [
        ("price", "$1,200.50"),
        ("percentage", "15%"),
        ("price", "12 dollars"),
        ("date", "Jan 5"),
    ]


def test_faithfulness_score() -> None:
    assert faithfulness([]) == 1.0
    assert faithfulness([Claim("a", SUPPORTED), Claim("b", UNSUPPORTED)]) == 0.5


def test_assert_grounded_names_the_offending_claims() -> None:
    assert assert_grounded(FAITHFUL, CONTEXT).passed
    with pytest.raises(LLMEvalAssertionError) as info:
        assert_grounded(FABRICATED, CONTEXT)
    message = str(info.value)
    assert "grounding: 3 unsupported claim(s) of 3 checked" in message
    assert "UNSUPPORTED name 'AutoPilot': not in the context" in message
    assert assert_grounded(WRONG_PRICE, CONTEXT, max_unsupported=3).score == 0.0
