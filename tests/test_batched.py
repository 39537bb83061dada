"""Batched fixtures: one concurrent batch per window of the selected examples, each
example still its own test, its calls in its own record, its exception its own."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval import batched
from pytest_llmeval.testing import FakeOpenAIServer

CONFTEST = """
import pytest
from pytest_llmeval import batched

@batched
async def answer(example, llm, llmeval_record):
    if example.id == "{broken}":
        raise RuntimeError("the app crashed on " + example.id)
    reply = await llm.aio.complete(example.input["q"])
    llmeval_record.output = reply
    return reply
"""

SUITE = """
import pytest
from pytest_llmeval import assert_exact_match

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer):
    assert_exact_match(answer, example.expected_output, normalize=False)

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer_is_short(example, answer):
    assert len(answer) < 100
"""

Make = Callable[..., Path]


@pytest.fixture
def suite(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> Make:
    """suite(count, broken=None, conftest=CONFTEST, ini=""): a suite of ``count`` examples
    whose answers the fake server echoes (``echo: q-i``)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def make(
        count: int, *, broken: str = "", conftest: str = CONFTEST, ini: str = "", tests: str = SUITE
    ) -> Path:
        pytester.makeini(
            "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
            f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = app\n"
            "llmeval_judge_model = judge\nllmeval_min_pass_rate = distribution:0.5\n"
            "llmeval_max_concurrency = 64\nllmeval_retry_base_delay = 0.01\n" + ini
        )
        rows = [
            {
                "id": f"q-{i:03d}",
                "partition": "distribution",
                "input": {"q": f"q-{i:03d}"},
                "expected_output": f"echo: q-{i:03d}",
            }
            for i in range(count)
        ]
        pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        pytester.makeconftest(conftest.replace("{broken}", broken))
        pytester.makepyfile(test_suite=tests)
        return pytester.path

    return make


def records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    report = json.loads(pytester.path.joinpath("report.json").read_text())
    return report["records"]  # type: ignore[no-any-return]


def test_every_example_is_computed_once_concurrently_and_recorded_in_its_own_test(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.latency = 0.05
    suite(40, ini="llmeval_concurrency = 8\n")
    result = pytester.runpytest("--llmeval-report=report.json", "--llmeval-cache=off")
    result.assert_outcomes(passed=80)
    assert fake_openai.requests["/chat/completions"] == 80  # the cache is off
    assert fake_openai.peak_in_flight == 8  # the concurrency, reached and not passed
    by_test = {(r["nodeid"].split("[")[0], r["example_id"]): r for r in records(pytester)}
    for i in range(40):
        for test in ("test_suite.py::test_answer", "test_suite.py::test_answer_is_short"):
            record = by_test[test, f"q-{i:03d}"]
            assert record["output"] == f"echo: q-{i:03d}"
            assert record["llm_calls"] == 1 and record["usage"]["app"]["calls"] == 1


def test_identical_requests_in_flight_are_sent_once(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    """A batched fixture is computed per test, as a plain one: the two tests of an
    example ask the same thing at once, and the client sends it once (the other test's
    call counts as a cache hit, free)."""
    fake_openai.latency = 0.05
    suite(10, conftest=CONFTEST.replace("@batched\n", "@batched(concurrency=16)\n"))
    result = pytester.runpytest("--llmeval-report=report.json")
    result.assert_outcomes(passed=20)
    assert fake_openai.requests["/chat/completions"] == 10
    assert sorted(r["cache_hits"] for r in records(pytester)) == [0] * 10 + [1] * 10


def test_only_the_selected_examples_are_computed(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    suite(30)
    result = pytester.runpytest("-k", "not short and (q-001 or q-002 or q-017)")
    result.assert_outcomes(passed=3)
    assert fake_openai.requests["/chat/completions"] == 3


def test_an_exception_belongs_to_its_example_alone(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    suite(10, broken="q-004")
    result = pytester.runpytest("--llmeval-report=report.json")
    result.assert_outcomes(passed=18, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_answer[[]q-004]*",
            '*raise RuntimeError("the app crashed on " + example.id)',
            "E *RuntimeError: the app crashed on q-004",
        ]
    )
    assert fake_openai.requests["/chat/completions"] == 9
    broken = [r for r in records(pytester) if r["example_id"] == "q-004"]
    assert [r["status"] for r in broken] == ["error", "error"]


def test_x_pays_for_one_window_not_for_the_whole_run(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    suite(100, broken="q-000", ini="llmeval_concurrency = 5\n")
    result = pytester.runpytest("-x")
    result.assert_outcomes(errors=1)
    # A window of 4 x 5, one broken: started at once, and cancelled when the run stops, so
    # some may not have been sent (tests/test_batched_pipeline.py: -x after a few tests).
    assert fake_openai.requests["/chat/completions"] <= 19


def test_xdist_computes_each_example_once_with_the_same_summary(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    suite(60, broken="q-007")
    serial = pytester.runpytest("--llmeval-cache=off")
    sent = fake_openai.requests["/chat/completions"]
    fake_openai.reset_counters()
    fake_openai.latency = 0.02
    parallel = pytester.runpytest("-n", "2", "--llmeval-cache=off")
    assert sent == fake_openai.requests["/chat/completions"] == 118  # each test's, once
    # Two workers each run one test at a time: more requests at once means each worker's
    # batches held several of the examples queued on it (pytest-xdist >= 3.7).
    assert fake_openai.peak_in_flight > 2
    assert serial.ret == parallel.ret
    assert serial.parseoutcomes() == parallel.parseoutcomes()

    def summary(result: pytest.RunResult) -> list[str]:
        lines = result.outlines
        start = next(i for i, line in enumerate(lines) if "llmeval summary" in line)
        return [line for line in lines[start:] if "latency" not in line and "ms " not in line]

    assert summary(serial)[3:5] == summary(parallel)[3:5]


JUDGED = """
import pytest
from pytest_llmeval import batched

@batched
async def answer(example, llm):
    return await llm.aio.complete(example.input["q"])

@batched
async def verdict(example, answer, judge):
    return await judge.ascore(answer, task="echo the question", criteria=["echoes it"])
"""

JUDGED_TESTS = """
import pytest
from pytest_llmeval import assert_judge

@pytest.mark.llmeval(dataset="data.jsonl")
def test_rated(example, verdict):
    assert_judge(verdict, min_score=4)
"""


def test_a_batched_fixture_can_use_another_and_the_judge(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.reply = lambda request: (
        json.dumps({"reasoning": "fine", "score": 5})
        if request["model"] == "judge"
        else "echo: " + request["messages"][-1]["content"]
    )
    fake_openai.latency = 0.05
    suite(20, conftest=JUDGED, tests=JUDGED_TESTS)
    result = pytester.runpytest("--llmeval-report=report.json")
    result.assert_outcomes(passed=20)
    assert fake_openai.requests["/chat/completions"] == 40
    assert fake_openai.peak_in_flight > 8
    for record in records(pytester):
        assert record["llm_calls"] == 2 and set(record["usage"]) == {"app", "judge"}
        assert [v["scores"] for v in record["judge"]] == [[5]]


def test_with_faults_and_retries_every_example_is_verdicted(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.faults = {"429": 0.1, "500": 0.1}
    suite(50)
    result = pytester.runpytest("--llmeval-max-retries=8", "--llmeval-cache=off")
    result.assert_outcomes(passed=100)
    assert sum(fake_openai.injected.values()) > 0


def test_a_call_lost_after_retries_is_an_error_of_its_example(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.fault_sequence = ["500"]
    suite(5)
    result = pytester.runpytest(
        "--llmeval-max-retries=0", "--llmeval-cache=off", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=9, errors=1)  # the first call sent, whichever it was
    result.stdout.fnmatch_lines(
        ["model call errors (after retries, not quality failures): server_error 1"]
    )


def test_function_scoped_dependencies_are_refused(suite: Make, pytester: pytest.Pytester) -> None:
    suite(2, conftest=CONFTEST.replace("llm, llmeval_record", "llm, llmeval_record, tmp_path"))
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*TypeError: batched fixture 'answer' depends on 'tmp_path'*"])


def test_batched_needs_an_async_function_of_example() -> None:
    with pytest.raises(TypeError, match="needs an async def function"):
        batched(lambda example: example)
    with pytest.raises(TypeError, match="must take an 'example' argument"):

        @batched
        async def no_example(llm: Any) -> None: ...


PLAIN = """
import pytest

@pytest.fixture
def answer(example, llm, llmeval_record):
    if example.id == "{broken}":
        raise RuntimeError("the app crashed on " + example.id)
    reply = llm.complete(example.input["q"])
    llmeval_record.output = reply
    return reply
"""


def test_batched_and_plain_style_give_the_same_summary_serially_and_under_xdist(
    suite: Make, pytester: pytest.Pytester
) -> None:
    def outcome(conftest: str, *args: str) -> tuple[int, list[str]]:
        suite(30, broken="q-003", conftest=conftest)
        result = pytester.runpytest("-o", "llmeval_min_pass_rate=distribution:0.99", *args)
        lines = result.outlines
        start = next(i for i, line in enumerate(lines) if "llmeval summary" in line)
        # the table's counts and the verdicts; timings differ
        shown = [" ".join(line.split()[:8]) for line in lines[start + 1 : start + 5]]
        return result.ret, shown

    plain = outcome(PLAIN)
    assert plain[0] == pytest.ExitCode.TESTS_FAILED
    assert plain[1][1] == "distribution 60 58 0 2 0 96.7% 1.000"
    # One xdist run: plain tests give the same summary under xdist as serially
    # (tests/test_plugin.py::test_serial_and_xdist_give_the_same_summary_and_exit_status).
    assert outcome(CONFTEST) == outcome(CONFTEST, "-n", "2") == plain


ASYNC_TESTS = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
async def test_answer(example, request):
    answer = request.getfixturevalue("answer")  # asked for while the event loop runs
    assert answer == example.expected_output
"""


def test_a_batch_asked_for_inside_an_event_loop_runs_beside_it(
    suite: Make, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    """Asked for while an event loop runs (getfixturevalue in an async test), the batch
    runs in a daemon thread of its own (a Ctrl-C does not wait for it)."""
    fake_openai.latency = 0.05
    suite(12, tests=ASYNC_TESTS)
    result = pytester.runpytest("--llmeval-cache=off")
    result.assert_outcomes(passed=12)
    assert fake_openai.requests["/chat/completions"] == 12


def test_a_worker_queue_of_another_shape_is_said_once_not_silently_shrunk(
    pytester: pytest.Pytester,
) -> None:
    """pytest-xdist 3.6's queue has no lock(): batching cannot see what is queued."""
    from pytest_llmeval.errors import LLMEvalWarning
    from pytest_llmeval.plugin.batching import _queued_on_worker

    class OldInteractor:  # the shape of pytest-xdist < 3.7's WorkerInteractor
        def __init__(self) -> None:
            self.torun = [3, 4]  # a plain queue, without lock()
            self.nextitem_index = 2

    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    config = pytester.parseconfigure()
    config.pluginmanager.register(OldInteractor())
    with pytest.warns(LLMEvalWarning, match="pytest-xdist>=3.7") as caught:
        assert _queued_on_worker(config) == []
        assert _queued_on_worker(config) == []
    assert len(caught) == 1


class _Suspend:
    """Awaited outside any event loop: suspends the coroutine once."""

    def __await__(self) -> Any:
        yield


def _one_of(func: Callable[..., Any]) -> Any:
    """The coroutine computing ``func``'s value for one example, outside any loop."""
    import contextvars
    from types import SimpleNamespace

    from pytest_llmeval.dataset import Example
    from pytest_llmeval.plugin.batching import Batches, Spec, _Work
    from pytest_llmeval.plugin.keys import EXAMPLE_KEY
    from pytest_llmeval.records import Record

    item = SimpleNamespace(nodeid="t", stash=pytest.Stash(), _fixtureinfo=None)
    item.stash[EXAMPLE_KEY] = Example(id="q-0", partition="distribution", input={"q": "q-0"})
    batches = Batches(config=Any, concurrency=None, auto_window=4)  # type: ignore[arg-type]
    work = _Work(item, [], {}, Record(example_id="q-0", partition="distribution"))  # type: ignore[arg-type]
    coroutine = batches._one(Spec("f", func, ("example",), None), work)
    return contextvars.copy_context(), coroutine


def test_an_example_abandoned_mid_way_lets_its_coroutine_close() -> None:
    """GeneratorExit (a pending task destroyed with its loop) is the loop's, not the
    example's: it ends the coroutine rather than becoming an outcome for its test."""

    async def waits(example: Any) -> None:
        await _Suspend()

    context, coroutine = _one_of(waits)
    context.run(coroutine.send, None)
    with pytest.raises(GeneratorExit):  # not StopIteration(_Raised(GeneratorExit()))
        context.run(coroutine.throw, GeneratorExit())


def test_keyboard_interrupt_or_system_exit_in_user_code_is_its_tests_own() -> None:
    """Raised by the user's code, they belong to its test (raised there), and the loop
    goes on with the other examples."""
    from pytest_llmeval.plugin.batching import _Raised

    for error in (KeyboardInterrupt(), SystemExit(3)):

        async def raises(example: Any, error: BaseException = error) -> None:
            raise error

        context, coroutine = _one_of(raises)
        with pytest.raises(StopIteration) as stopped:
            context.run(coroutine.send, None)
        assert stopped.value.value == _Raised(error)


def test_a_test_whose_example_was_cancelled_errors_and_never_gets_a_value() -> None:
    """The gate never lies: an example cancelled (the run stopping, a Ctrl-C, its own
    CancelledError) makes its test error at once with a message that says so, and a
    closed batch starts nothing more."""
    import asyncio
    from concurrent.futures import Future
    from types import SimpleNamespace

    from pytest_llmeval.plugin.batching import Batches, Spec, _settle, _Window

    async def cancelled_task() -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task

    future: Future[Any] = Future()
    _settle(future, asyncio.run(cancelled_task()))
    batches = Batches(config=Any, concurrency=None, auto_window=4)  # type: ignore[arg-type]
    item: Any = SimpleNamespace(nodeid="t")
    spec = Spec("f", _Suspend, ("example",), None)
    batches._started["t"] = {spec: (future, _Window(item, {}, 4))}
    with pytest.raises(RuntimeError, match="cancelled before it was computed"):
        batches._wait(item)  # at once: not a wait on a future no one will settle
    batches.close()
    batches.close()  # once is enough: the second is a no-op
    with pytest.raises(RuntimeError, match="the run is stopping"):
        batches._start(item, [spec], _Window(item, {}, 4))
