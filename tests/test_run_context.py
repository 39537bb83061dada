"""A run's context (its thresholds, default embedder, pools and clients) is the run's: it
applies in the run, in our pools' threads and in a test's own thread started in a copy of
its context, and nothing of it is left once the run ends (an in-process pytester run
hands the outer run its own context back, with its threads gone)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from pytest_llmeval import thresholds
from pytest_llmeval.client import DaemonPool
from pytest_llmeval.context import RunContext, activate, current_run, deactivate
from pytest_llmeval.plugin.keys import RUN_KEY
from pytest_llmeval.records import Record, bind, current_record
from pytest_llmeval.testing import FakeOpenAIServer

CONFTEST = """
from pytest_llmeval import batched
from pytest_llmeval.embeddings import acompare_texts

@batched
async def answer(example, llm):
    return await llm.aio.complete(example.input["q"])

@batched
async def similarity(example, answer):
    return await acompare_texts(answer, example.expected_output)

@batched
async def verdict(example, answer, judge):
    return await judge.ascore(answer, task="echo the question", criteria=["echoes it"])
"""

TESTS = """
import contextvars
import threading

import pytest
from pytest_llmeval import assert_judge, assert_similar, assert_token_f1, thresholds

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer, similarity, verdict):
    assert_similar(similarity)
    assert_judge(verdict, min_score=4)
    # A helper in the test's own thread, run in a copy of the test's context: the run's
    # thresholds and the test's record.
    copied = threading.Thread(
        target=contextvars.copy_context().run,
        args=(assert_token_f1, answer, example.expected_output),
    )
    copied.start()
    copied.join()
    seen = {}
    bare = threading.Thread(target=lambda: seen.update(f1=thresholds.resolve("token_f1", None)))
    bare.start()
    bare.join()
    assert seen == {"f1": 0.8}  # a bare thread sees no run: the built-in default
"""


class Probe:
    """Keeps the inner run's config, to look at its context once the run is over."""

    def __init__(self) -> None:
        self.configs: list[pytest.Config] = []

    def pytest_configure(self, config: pytest.Config) -> None:
        self.configs.append(config)


def llmeval_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("llmeval-")}


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_a_run_leaves_nothing_of_its_context_behind(
    pytester: pytest.Pytester,
    fake_openai: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    xdist: bool,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_openai.reply = lambda request: (
        json.dumps({"reasoning": "fine", "score": 5})
        if request["model"] == "judge"
        else "echo: " + request["messages"][-1]["content"]
    )
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = app\n"
        "llmeval_judge_model = judge\nllmeval_embedding_model = embed-model\n"
        "llmeval_thresholds = token_f1:0.5 similarity.golden:0.9\n"
    )
    rows = [
        {"id": f"q-{i}", "partition": "golden", "input": {"q": f"q-{i}"}}
        | {"expected_output": f"echo: q-{i}"}
        for i in range(8)
    ]
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=TESTS)
    outer, run_before, threads_before = Record("outer", "golden"), current_run(), llmeval_threads()
    previous = bind(outer)
    probe = Probe()
    try:
        args = ["--llmeval-report=report.json", "--llmeval-cache=off"]
        result = pytester.runpytest(*args, *(["-n", "2"] if xdist else []), plugins=[probe])
        assert current_record() is outer  # the outer test's record, bound again
    finally:
        bind(previous)
    result.assert_outcomes(passed=8)
    report = json.loads(pytester.path.joinpath("report.json").read_text())
    for record in report["records"]:
        # The ini's thresholds, in the batch's waiting threads and in the test's own thread.
        thresholds_by_metric = {m["name"]: m["threshold"] for m in record["metrics"]}
        assert thresholds_by_metric == {"similarity": 0.9, "judge": 4, "token_f1": 0.5}
        assert set(record["usage"]) == {"app", "judge", "embed-model"}  # by model

    # The outer run's context is current again; the inner one is closed.
    assert current_run() is run_before
    assert thresholds.resolve("token_f1", None) == 0.8
    (config,) = probe.configs
    run = config.stash[RUN_KEY]
    assert run is not run_before
    if not xdist:  # under xdist the workers computed the batches and embedded
        embedder: Any = run.embedder()
        assert embedder.client._openai.is_closed()  # the embedding client, closed by the run
        assert run.pools._waiting is not None and run.pools._waiting._shut
    for thread in llmeval_threads() - threads_before:
        thread.join(timeout=5)
    assert not {t.name for t in llmeval_threads() - threads_before}


def test_our_pools_run_work_in_the_submitters_context() -> None:
    """The record and the run reach a helper called from one of our threads."""
    run, record = RunContext(thresholds={"token_f1": 0.3}), Record("x", "golden")
    pool = DaemonPool(2, "llmeval-test")
    token, previous = activate(run), bind(record)
    try:
        seen = pool.submit(lambda: (current_run(), current_record())).result()
    finally:
        bind(previous)
        deactivate(token)
        pool.shutdown()
    assert seen == (run, record)
