"""Fixtures of the example suite: the prompt version under test, the support assistant
(the app under test) wired to the plugin's ``llm`` client, its replies to each example
(a question, or the customer's turns of a conversation), and the knowledge base.

The suite runs offline: ``pytest.ini`` sets ``llmeval_cache = replay``, so every model
call is answered from ``llmeval-cache/`` (recorded from the scripted demo server, see
``demo_server.py``) and a call that is not there is an error, never a paid request.
With an API key, ``--llmeval-cache=refresh`` runs it against a real model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from app import KNOWLEDGE_BASE, PROMPTS, SupportAssistant

from pytest_llmeval import batched

if TYPE_CHECKING:
    from pytest_llmeval import Example, Record
    from pytest_llmeval.client import LLMClient


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--prompt-version",
        choices=sorted(PROMPTS),
        default="v1",
        help="which prompt version of the support assistant to evaluate (default: v1)",
    )


@pytest.fixture(scope="session")
def prompt_version(request: pytest.FixtureRequest) -> str:
    """The prompt version under test, from ``--prompt-version``."""
    return str(request.config.getoption("prompt_version"))


@pytest.fixture(scope="session")
def assistant(llm: LLMClient, prompt_version: str) -> SupportAssistant:
    """The app under test, calling the model through the plugin's ``llm`` client."""
    return SupportAssistant(llm, prompt_version, async_client=llm.aio)


@pytest.fixture(scope="session")
def other_assistant(llm: LLMClient, prompt_version: str) -> SupportAssistant:
    """The assistant with the other prompt version, for pairwise comparisons."""
    others = sorted(set(PROMPTS) - {prompt_version})
    return SupportAssistant(llm, others[0], async_client=llm.aio)


def customer_turns_of(example: Example) -> list[str]:
    """What the customer says: the user turns of a conversation (``input.messages``), or
    the one question."""
    return example.user_turns or [example.input["question"]]


@pytest.fixture
def customer_turns(example: Example) -> list[str]:
    """The customer's turns of this test's example."""
    return customer_turns_of(example)


# Batched fixtures: the first test that needs one computes it for every example of the
# run at once (up to llmeval_concurrency at a time); each test then just checks.


@dataclass(frozen=True)
class Conversation:
    """What the assistant said to one example, and what its tools returned on the way."""

    replies: list[str]  # its reply to each of the customer's turns
    tool_results: list[Any]  # in the order the tools ran


@batched
async def conversation(
    example: Example, assistant: SupportAssistant, llmeval_record: Record
) -> Conversation:
    """The assistant's replies to the customer's turns. The ``llm`` client records each
    model call as a step of the test's trajectory (with the tool calls the model asked
    for), its tokens, cost, latency and cache use; the retriever and the tools record
    their own steps; the prompt version is recorded here. The tools' results are taken
    from the steps this call added: the judge is shown them."""
    llmeval_record.prompt_version = assistant.prompt_version
    start = len(llmeval_record.steps)
    said = await assistant.aconverse(customer_turns_of(example))
    llmeval_record.output = said[-1]
    ran = llmeval_record.steps[start:]
    results = [s["result"] for s in ran if s["kind"] == "tool" and "result" in s]
    return Conversation(said, results)


@batched
async def answer(example: Example, conversation: Conversation) -> str:
    """The assistant's answer to ``example``: its reply to the customer's last turn."""
    return conversation.replies[-1]


@batched
async def other_answer(example: Example, other_assistant: SupportAssistant) -> str:
    """The other prompt version's answer to ``example``."""
    return (await other_assistant.aconverse(customer_turns_of(example)))[-1]


@pytest.fixture(scope="session")
def knowledge_base() -> str:
    """The text of the knowledge base that answers are grounded in."""
    return KNOWLEDGE_BASE
