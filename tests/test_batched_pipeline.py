"""Batched fixtures in a pipeline: the next examples are in flight while the tests of the
current ones run, an example's chained fixtures (answer, then its score) flow through
without waiting for the rest of the window, and -x, errors and Ctrl-C still hold.

Proofs are orders and counts from the server's log of the replies it produced (the
moment before each was sent) and the inner tests' own log of when they ran, never
absolute durations."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_batched import Make, records
from test_client_interrupt import ENDS_WITHIN, HELD, ctrl_c, start_run

from pytest_llmeval.testing import FakeOpenAIServer

SERIAL_AND_XDIST = pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["serial", "xdist"])


@dataclass(frozen=True)
class Served:
    when: float  # time.monotonic() as the server produced the reply
    model: str
    example: str
    worker: str  # the xdist worker that asked ("main" when serial)


@pytest.fixture
def served(fake_openai: FakeOpenAIServer) -> list[Served]:
    """The server's log of its replies; prompts are ``<example id>@<worker>[ ...]``."""
    log: list[Served] = []

    def reply(request: dict[str, Any]) -> str:
        content = str(request["messages"][-1]["content"])
        example, _, worker = content.split()[-1].partition("@")
        log.append(Served(time.monotonic(), request["model"], example, worker))
        return f"echo: {content}"

    fake_openai.reply = reply
    return log


@pytest.fixture
def suite(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> Make:
    """suite(count, conftest, tests, ini=...): an eval suite of ``count`` examples."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def make(count: int, conftest: str, tests: str, ini: str = "") -> Path:
        pytester.makeini(
            "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
            f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = app\n"
            "llmeval_judge_model = judge\nllmeval_min_pass_rate = distribution:0\n"
            "llmeval_retry_base_delay = 0.01\nllmeval_cache = off\n" + ini
        )
        rows = [
            {"id": f"q-{i:03d}", "partition": "distribution", "input": {"q": f"q-{i:03d}"}}
            for i in range(count)
        ]
        pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        pytester.makeconftest(conftest)
        pytester.makepyfile(test_suite=tests)
        return pytester.path

    return make


WORKER = """
import pytest
from pytest_llmeval import batched

@pytest.fixture(scope="session")
def worker(request):
    return getattr(request.config, "workerinput", {}).get("workerid", "main")
"""

ANSWER = (
    WORKER
    + """
@batched(concurrency=2)
async def answer(example, llm, worker):
    if example.id == "{broken}":
        raise RuntimeError("the app crashed on " + example.id)
    return await llm.aio.complete(example.id + "@" + worker)
"""
)

SLOW_TESTS = """
import time
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer, worker, request):
    start = time.monotonic()
    time.sleep(0.05)  # the test's own work, in the main thread
    with open(request.config.rootpath / "ran.txt", "a") as out:
        out.write(f"{worker} {example.id} {start} {time.monotonic()}\\n")
"""


@SERIAL_AND_XDIST
def test_the_next_examples_are_in_flight_while_the_tests_run(
    suite: Make,
    pytester: pytest.Pytester,
    fake_openai: FakeOpenAIServer,
    served: list[Served],
    args: tuple[str, ...],
) -> None:
    """Before, a window was computed whole in the setup of its first test and the next
    one only in the setup of its own first test: no reply ever came while a test ran."""
    fake_openai.latency = 0.05
    suite(24, ANSWER.replace("{broken}", ""), SLOW_TESTS)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=24)
    ran: dict[str, list[tuple[str, float, float]]] = {}
    for line in pytester.path.joinpath("ran.txt").read_text().splitlines():
        worker, example, start, end = line.split()
        ran.setdefault(worker, []).append((example, float(start), float(end)))
    assert len(served) == 24 and sum(map(len, ran.values())) == 24
    for worker, tests in ran.items():
        replies = [s.when for s in served if s.worker == worker]
        during = [t for t in replies if any(start < t < end for _, start, end in tests)]
        assert during, f"no reply came while a test of {worker} ran"
    if not args:
        # A window is 4 x 2: requests of the second start before the first's tests ran.
        first = {example for example, _, _ in sorted(ran["main"], key=lambda t: t[1])[:8]}
        last_end = max(end for example, _, end in ran["main"] if example in first)
        early = [s for s in served if s.example not in first and s.when < last_end]
        assert early, "the second window started only once the first one's tests had run"


CHAINED = ANSWER.replace("{broken}", "q-003") + (
    """
@batched(concurrency=8)
async def score(example, answer, judge_client, llmeval_record):
    if example.id == "q-006":
        raise ValueError("the judge crashed on " + example.id)
    verdict = await judge_client.aio.complete("rate " + answer)
    llmeval_record.extra["verdict"] = verdict
    return verdict
"""
)

CHAINED_TESTS = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_scored(example, score):
    assert score == f"echo: rate echo: {example.id}@" + score.rsplit("@", 1)[1]
"""


@SERIAL_AND_XDIST
def test_each_example_goes_on_to_its_score_as_soon_as_its_answer_is_ready(
    suite: Make,
    pytester: pytest.Pytester,
    fake_openai: FakeOpenAIServer,
    served: list[Served],
    args: tuple[str, ...],
) -> None:
    fake_openai.latency = 0.1
    suite(16, CHAINED, CHAINED_TESTS)
    result = pytester.runpytest("--llmeval-report=report.json", *args)
    # Each error stays in its example's test, whichever fixture raised it.
    result.assert_outcomes(passed=14, errors=2)
    result.stdout.fnmatch_lines_random(
        ["E *RuntimeError: the app crashed on q-003", "E *ValueError: the judge crashed on q-006"]
    )
    assert sorted(s.example for s in served if s.model == "app") == sorted(
        f"q-{i:03d}" for i in range(16) if i != 3
    )
    assert sorted(s.example for s in served if s.model == "judge") == sorted(
        f"q-{i:03d}" for i in range(16) if i not in (3, 6)
    )
    for record in records(pytester):
        broken = record["example_id"] in ("q-003", "q-006")
        assert record["status"] == ("error" if broken else "passed")
        assert record["llm_calls"] == (1 if record["example_id"] == "q-006" else 0 if broken else 2)
        if not broken:
            assert set(record["usage"]) == {"app", "judge"}
            assert record["extra"]["verdict"].startswith(f"echo: rate echo: {record['example_id']}")
    if not args:
        # The first window (4 x 2 answers at a time): before, all its answers came back
        # before its first score was asked for; now the first scores come back meanwhile.
        window = {f"q-{i:03d}" for i in range(8)}
        last_answer = max(s.when for s in served if s.model == "app" and s.example in window)
        early = [s for s in served if s.model == "judge" and s.when < last_answer]
        assert early and {s.example for s in early} <= window


SOME_TESTS = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answered(example, answer):
    assert answer.startswith("echo: " + example.id)

@pytest.mark.llmeval(dataset="data.jsonl")
def test_scored(example, score):
    assert score.startswith("echo: rate echo: " + example.id)
"""


@SERIAL_AND_XDIST
def test_a_fixture_some_tests_use_is_computed_for_those_tests_alone(
    suite: Make,
    pytester: pytest.Pytester,
    served: list[Served],
    args: tuple[str, ...],
) -> None:
    suite(12, CHAINED.replace('"q-003"', '"none"').replace('"q-006"', '"none"'), SOME_TESTS)
    result = pytester.runpytest(
        "-k", "test_answered or (test_scored and (q-001 or q-005 or q-010))", *args
    )
    result.assert_outcomes(passed=15)
    judged = sorted(s.example for s in served if s.model == "judge")
    assert judged == ["q-001", "q-005", "q-010"]
    assert len([s for s in served if s.model == "app"]) == 15  # each test's (the cache is off)


def test_x_pays_for_at_most_one_window_ahead(
    suite: Make, pytester: pytest.Pytester, served: list[Served]
) -> None:
    """A window of 4 x 2: the broken example's test is the 11th; by then the tests before
    it had started at most one more example each, 10 + 8 in all, one of them broken."""
    suite(100, ANSWER.replace("{broken}", "q-010"), SLOW_TESTS.replace("0.05", "0.01"))
    result = pytester.runpytest("-x")
    result.assert_outcomes(passed=10, errors=1)
    answered = {s.example for s in served}
    assert {f"q-{i:03d}" for i in range(10)} <= answered
    assert len(served) <= 17
    assert answered <= {f"q-{i:03d}" for i in range(18)}


def test_with_auto_concurrency_the_window_is_four_times_the_ceiling(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, served: list[Served]
) -> None:
    """No bound of the fixture's own: the endpoint's limit (its ceiling,
    llmeval_max_concurrency) holds the requests in flight, and the window is 4 x that."""
    fake_openai.latency = 0.02
    conftest = ANSWER.replace("{broken}", "q-003").replace("@batched(concurrency=2)", "@batched")
    suite(60, conftest, SLOW_TESTS, ini="llmeval_max_concurrency = 2\n")
    result = pytester.runpytest("-x")
    result.assert_outcomes(passed=3, errors=1)
    assert fake_openai.peak_in_flight <= 2
    assert len(served) <= 4 * 2 - 1 + 3  # the window, one broken, and one per test run


ONE_AT_A_TIME = """
from pytest_llmeval import batched

@batched(concurrency=1)
async def answer(example, llm):
    return await llm.aio.complete(example.id + "@main")
"""

PLAIN_TESTS = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer):
    assert answer == f"echo: {example.id}@main"
"""


def test_a_test_counts_its_own_examples_time_not_the_others(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    """One example at a time, 0.2 s each: the fourth test's setup waits for the other
    three, and its record counts its own 0.2 s alone, not the window's 0.8 s (wide margins:
    the first test also pays for starting the loop and its client, on a loaded machine)."""
    fake_openai.latency = 0.2
    suite(4, ONE_AT_A_TIME, PLAIN_TESTS)
    result = pytester.runpytest("--llmeval-report=report.json")
    result.assert_outcomes(passed=4)
    for record in records(pytester):
        assert 0.2 <= record["elapsed_s"] < 0.7, record


CLIENTS_LOG = """
import json
import time

import openai
import pytest

def pytest_configure(config):
    # Each async client the run builds, and whether it was closed, in order; written
    # once the run is over (the first cleanup registered is the last to run).
    events, clients = [], []
    init, close = openai.AsyncOpenAI.__init__, openai.AsyncOpenAI.close

    def built(self, *args, **kwargs):
        init(self, *args, **kwargs)
        clients.append(self)
        events.append("built")

    async def closed(self):
        events.append("closed")
        await close(self)

    def report():
        openai.AsyncOpenAI.__init__, openai.AsyncOpenAI.close = init, close
        unclosed = sum(not client.is_closed() for client in clients)
        out = config.rootpath / "clients.json"
        out.write_text(json.dumps({"events": events, "unclosed": unclosed}))

    config.add_cleanup(report)
    openai.AsyncOpenAI.__init__, openai.AsyncOpenAI.close = built, closed

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    time.sleep(0.5)  # a slow end of the run (a plugin writing its report)
"""


def test_after_x_the_examples_in_flight_end_before_the_clients_close(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, served: list[Served]
) -> None:
    """-x with requests in flight: the examples still under way are cancelled before the
    run closes its clients, so none builds a client after that, and every client the run
    built is closed at its end."""
    fake_openai.latency = 0.3
    suite(40, CLIENTS_LOG + ANSWER.replace("{broken}", "q-002"), SLOW_TESTS)
    result = pytester.runpytest("-x", "-W", "error::ResourceWarning")
    result.assert_outcomes(passed=2, errors=1)
    log = json.loads(pytester.path.joinpath("clients.json").read_text())
    assert log["events"][0] == "built" and log["unclosed"] == 0, log
    first_close = log["events"].index("closed")
    assert "built" not in log["events"][first_close:], log


def test_ctrl_c_while_examples_are_in_flight_ends_the_run_with_its_report(
    suite: Make, fake_openai: FakeOpenAIServer
) -> None:
    root = suite(40, ANSWER.replace("{broken}", ""), SLOW_TESTS)
    fake_openai.hang = HELD
    fake_openai.latency = 0.05
    fake_openai.fault_sequence = [None, None, None, "timeout"]  # the fourth is held
    with start_run(root) as process:
        try:
            deadline = time.monotonic() + 60
            sent, steady = -1, 0.0
            while time.monotonic() < steady + 0.5 or not fake_openai.injected["timeout"]:
                # Until a request is held, and nothing else has been sent for 0.5 s: the
                # tests before it have run, one waits for it, the window ahead is done.
                assert process.poll() is None, process.communicate()[0].decode()
                assert time.monotonic() < deadline, "no request was held"
                if fake_openai.total_requests != sent:
                    sent, steady = fake_openai.total_requests, time.monotonic()
                time.sleep(0.05)
            took, text = ctrl_c(process)
        finally:
            if process.poll() is None:
                process.kill()
    assert took < ENDS_WITHIN, f"the run took {took:.1f}s to end after Ctrl-C:\n{text}"
    assert "KeyboardInterrupt" in text
    report = json.loads(root.joinpath("r.json").read_text())
    assert report["records"]  # the tests that ran are in it
    assert fake_openai.total_requests == sent  # nothing was sent after the interrupt


PER_MODULE = """
import pytest
from pytest_llmeval import batched

@pytest.fixture(scope="module")
def assistant(request):
    return {"module": request.module.__name__, "instance": object()}

@batched(concurrency=2)
async def answer(example, assistant, llm):
    return assistant, await llm.aio.complete(example.id + "@main")
"""

MODULE_TESTS = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer, assistant):
    used, reply = answer
    assert used is assistant and used["module"] == __name__
    assert reply == f"echo: {example.id}@main"
"""


@SERIAL_AND_XDIST
def test_a_window_holds_the_tests_that_share_its_fixtures(
    suite: Make, pytester: pytest.Pytester, served: list[Served], args: tuple[str, ...]
) -> None:
    """A module-scoped fixture of a batched one: a window started in one module does not
    compute the next module's examples with its instance; that module's first test
    starts a window of its own."""
    suite(10, PER_MODULE, MODULE_TESTS)
    pytester.makepyfile(test_other=MODULE_TESTS)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=20)
    assert len(served) == 20
