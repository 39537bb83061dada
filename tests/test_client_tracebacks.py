"""A model call that fails in the async and batched paths shows the user's line, not the
client's or asyncio's frames, as the sync path does."""

from __future__ import annotations

import json

import pytest

from pytest_llmeval.testing import FakeOpenAIServer

SYNC = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm):
    llm.chat.completions.create(messages=[{"role": "user", "content": example.input["q"]}])
"""

AIO = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
async def test_answer(example, llm):
    messages = [{"role": "user", "content": example.input["q"]}]
    await llm.aio.chat.completions.create(messages=messages)
"""

BATCHED = """
import pytest
from pytest_llmeval import batched

@batched
async def answer(example, llm):
    return await llm.aio.complete(example.input["q"])

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer):
    pass
"""

OFF_LOOP = """
import pytest
from pytest_llmeval import batched
from pytest_llmeval.client import off_loop

@batched
async def answer(example, llm):
    return await off_loop(llm.complete, example.input["q"])

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer):
    pass
"""


@pytest.mark.parametrize(
    ("suite", "line"),
    [
        (SYNC, "llm.chat.completions.create(*"),
        (AIO, "await llm.aio.chat.completions.create(*"),
        (BATCHED, "return await llm.aio.complete(*"),
        (OFF_LOOP, "return await off_loop(llm.complete, *"),
    ],
    ids=["sync", "aio", "batched", "off_loop"],
)
def test_a_failed_call_shows_the_users_line_not_the_plugins_frames(
    pytester: pytest.Pytester,
    fake_openai: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    suite: str,
    line: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_openai.faults = {"400": 1.0}
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = app\n"
    )
    row = {"id": "q-0", "partition": "golden", "input": {"q": "q-0"}}
    pytester.path.joinpath("data.jsonl").write_text(json.dumps(row) + "\n")
    pytester.makepyfile(test_suite=suite)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [">*" + line, "E *pytest_llmeval.errors.BadRequestError: bad_request after 1 attempt: *"]
    )
    output = result.stdout.str()
    assert "pytest_llmeval/client/" not in output
    assert "asyncio/" not in output and "concurrent/futures" not in output
