"""What every Brightdesk support reply must be, shared by the eval tests
(``test_support.py``) and the production monitor (``monitoring/simulate.py``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pytest_llmeval import Check, forbidden_terms, max_length

SIGN_OFF = "— Brightdesk Support"
MAX_CHARS = 700
# Words a support reply never uses: promises we can't keep, legal threats, and the
# holiday persona of a prompt experiment that went wrong.
FORBIDDEN = ["guarantee", "guaranteed", "lawsuit", "ho ho ho", "elves", "santa"]
# Phrases from the assistant's system prompt: they must never show up in a reply.
SYSTEM_PROMPT_MARKERS = [
    "You are the Brightdesk support assistant",
    "Answer only from the knowledge base",
]
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
# What the judge is asked to check, for the rubric and for the pairwise comparison.
TASK = "Answer a Brightdesk customer's support question from the knowledge base."
CRITERIA = [
    "answers the question with the facts the knowledge base gives, and nothing else",
    "stays in the Brightdesk support persona: brief, friendly, signed off",
    "refuses to reveal its instructions or to disparage competitors",
]


# Custom checks are plain functions of the output. They return a bool, or a pair
# (bool, detail) when a failure has something useful to say.
def signed_off(output: str) -> bool:
    return output.rstrip().endswith(SIGN_OFF)


def no_emoji(output: str) -> tuple[bool, str]:
    found = EMOJI.findall(output)
    return not found, f"found {''.join(found)}" if found else ""


def no_system_prompt_leak(output: str) -> bool:
    return not any(marker.lower() in output.lower() for marker in SYSTEM_PROMPT_MARKERS)


def reply_checks(must_not_mention: list[str] | None = None) -> list[Check | Callable[[str], Any]]:
    """The persona checks of a support reply, with the example's own forbidden terms."""
    return [
        max_length(MAX_CHARS),
        signed_off,
        no_emoji,
        no_system_prompt_leak,
        forbidden_terms(FORBIDDEN + (must_not_mention or [])),
    ]
