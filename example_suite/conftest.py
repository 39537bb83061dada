"""Fixtures of the example suite: which prompt version to evaluate, its logged answers,
and the knowledge base the answers must stick to.

There is no model call yet: each prompt version's answers were logged to
``answers/<version>.jsonl``, and the ``answer`` fixture plays them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_llmeval import Example, Record

HERE = Path(__file__).parent
ANSWERS_DIR = HERE / "answers"
PROMPT_VERSIONS = ("v1", "v2")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--prompt-version",
        choices=PROMPT_VERSIONS,
        default="v1",
        help="which prompt version's logged answers to evaluate (default: v1)",
    )


@pytest.fixture(scope="session")
def prompt_version(request: pytest.FixtureRequest) -> str:
    """The prompt version under test, from ``--prompt-version``."""
    return str(request.config.getoption("prompt_version"))


@pytest.fixture(scope="session")
def answers_file(prompt_version: str) -> Path:
    """The file of logged answers for the prompt version under test."""
    return ANSWERS_DIR / f"{prompt_version}.jsonl"


@pytest.fixture(scope="session")
def logged_answers(answers_file: Path) -> dict[str, dict[str, Any]]:
    """Every logged answer of the prompt version, by example id (read once per session)."""
    answers: dict[str, dict[str, Any]] = {}
    lines = answers_file.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{answers_file}:{lineno}: invalid JSON: {exc.msg}", pytrace=False)
        if entry["id"] in answers:
            pytest.fail(f"{answers_file}:{lineno}: duplicate id {entry['id']!r}", pytrace=False)
        answers[entry["id"]] = entry
    return answers


@pytest.fixture(scope="session")
def knowledge_base() -> str:
    """The text of the knowledge base that answers are grounded in."""
    return (HERE / "knowledge_base.md").read_text(encoding="utf-8")


# Several tests evaluate the same answer, but it was produced (and paid for) once: its
# tokens are counted on one test only, the one that runs for every example.
USAGE_COUNTED_ON = "test_support_reply_constraints"


@pytest.fixture
def answer(
    request: pytest.FixtureRequest,
    example: Example,
    llmeval_record: Record,
    logged_answers: dict[str, dict[str, Any]],
    answers_file: Path,
    prompt_version: str,
) -> str:
    """The assistant's answer to ``example``, with model, latency and tokens recorded.

    Later this fixture will call the app (through a replay cache) instead of looking the
    answer up in a file; the tests that use it will not change.
    """
    logged = logged_answers.get(example.id)
    if logged is None:
        pytest.fail(
            f"no logged answer for example {example.id!r} in {answers_file}: add a line for it",
            pytrace=False,
        )
    llmeval_record.model = logged["model"]
    llmeval_record.prompt_version = prompt_version
    llmeval_record.latency_s = logged["latency_ms"] / 1000
    if request.node.originalname == USAGE_COUNTED_ON:
        llmeval_record.add_usage(
            prompt_tokens=logged["prompt_tokens"], completion_tokens=logged["completion_tokens"]
        )
    llmeval_record.output = logged["output"]
    return str(logged["output"])
