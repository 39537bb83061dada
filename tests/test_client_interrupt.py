"""Ctrl-C while a model request is in flight ends the run in seconds, whichever path made
the request: the test's own thread, a client pool thread (the judge's samples, ``aio``),
or a waiting thread (``off_loop``, as batched fixtures use). The server holds the request
for 30 s; before, the interpreter joined the pools' threads at exit and waited for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_llmeval.testing import FakeOpenAIServer

HELD = 30.0  # how long the server holds the request: far beyond "a few seconds"
ENDS_WITHIN = 10.0  # from SIGINT to exit (2 to 6 s measured on a loaded two-core machine)

SYNC = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm):
    llm.complete(example.input["q"])
"""

JUDGE = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, judge):
    judge.score("an answer", task="answer " + example.input["q"], criteria=["is right"])
"""

ASYNC = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
async def test_answer(example, llm):
    await llm.aio.complete(example.input["q"])
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


def start_run(folder: Path) -> subprocess.Popen[bytes]:
    """pytest on ``folder`` in a process of its own (a Ctrl-C is sent to it alone), its
    report in r.json, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--llmeval-report=r.json"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def ctrl_c(process: subprocess.Popen[bytes]) -> tuple[float, str]:
    """Send the run a Ctrl-C: (the seconds it took to end, its output)."""
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    output, _ = process.communicate(timeout=HELD + 30)
    return time.monotonic() - interrupted, output.decode()


@pytest.mark.parametrize(
    "suite",
    [SYNC, JUDGE, ASYNC, OFF_LOOP],
    ids=["sync", "judge-pool", "aio", "off_loop"],
)
def test_ctrl_c_with_a_request_in_flight_ends_the_run_in_seconds(
    pytester: pytest.Pytester,
    fake_openai: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    suite: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_openai.hang = HELD
    fake_openai.fault_sequence = ["timeout"]  # the first request is held, then a 504
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = app\n"
        "llmeval_judge_model = judge\nllmeval_timeout = 60\n"
    )
    rows = [{"id": f"q-{i}", "partition": "golden", "input": {"q": f"q-{i}"}} for i in range(3)]
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytester.makepyfile(test_suite=suite)
    with start_run(pytester.path) as process:
        try:
            deadline = time.monotonic() + 60
            while fake_openai.in_flight == 0:  # wait until the request is held
                assert process.poll() is None, process.communicate()[0].decode()
                assert time.monotonic() < deadline, "no request reached the server"
                time.sleep(0.05)
            time.sleep(0.2)  # the test is now blocked on it
            sent = fake_openai.total_requests
            took, text = ctrl_c(process)
        finally:
            if process.poll() is None:
                process.kill()
    print(f"ended {took:.2f}s after Ctrl-C")  # shown with -s
    assert took < ENDS_WITHIN, f"the run took {took:.1f}s to end after Ctrl-C:\n{text}"
    assert "KeyboardInterrupt" in text
    assert pytester.path.joinpath("r.json").exists()  # the report is still written
    assert fake_openai.total_requests == sent  # nothing was sent after the interrupt
