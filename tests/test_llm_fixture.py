"""The ``llm`` fixture in eval suites run by pytester against the local fake server:
cached re-runs, faults with and without retries, replay mode, xdist."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from pytest_llmeval.testing import FakeOpenAIServer

SUITE = """
import pytest
from pytest_llmeval import assert_exact_match

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm):
    reply = llm.complete(example.input["question"])
    assert_exact_match(reply, example.expected_output, normalize=False)
"""

ASYNC_SUITE = """
import pytest
from pytest_llmeval import assert_exact_match

@pytest.mark.llmeval(dataset="data.jsonl")
async def test_answer(example, llm):
    reply = await llm.aio.chat.completions.create(
        messages=[{"role": "user", "content": example.input["question"]}])
    assert_exact_match(reply.choices[0].message.content, example.expected_output, normalize=False)
"""


@pytest.fixture
def suite(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def make(count: int, body: str = SUITE, partition: str = "distribution") -> None:
        pytester.makeini(
            "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
            "llmeval_min_pass_rate = distribution:0.5\n"
            f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = demo-model\n"
            "llmeval_retry_base_delay = 0.001\nllmeval_timeout = 0.3\n"
            "llmeval_prices = demo-model=1000/1000\n"
        )
        rows = [
            {
                "id": f"ex-{i:03d}",
                "partition": partition,
                "input": {"question": f"question {i}"},
                "expected_output": f"echo: question {i}",
            }
            for i in range(count)
        ]
        pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        pytester.makepyfile(test_suite=body)

    return make


def report_of(pytester: pytest.Pytester) -> dict[str, Any]:
    return json.loads(pytester.path.joinpath("report.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("body", [SUITE, ASYNC_SUITE], ids=["sync", "async"])
def test_second_run_of_an_unchanged_suite_makes_no_request(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any, body: str
) -> None:
    suite(5, body)
    first = pytester.runpytest("--llmeval-report", "report.json")
    first.assert_outcomes(passed=5)
    assert fake_openai.total_requests == 5
    first.stdout.fnmatch_lines(
        ["model calls: 5 (0 cache hits, free; 5 misses), 5 requests sent (*)"]
    )
    record = report_of(pytester)["records"][0]
    assert record["model"] == "demo-model" and record["llm_calls"] == 1
    assert record["tokens"] == {"prompt": 2, "completion": 3}
    assert record["cost_usd"] == pytest.approx(5 * 1000 / 1e6)

    fake_openai.reset_counters()
    second = pytester.runpytest()
    second.assert_outcomes(passed=5)
    assert fake_openai.total_requests == 0
    second.stdout.fnmatch_lines(
        ["model calls: 5 (5 cache hits, free; 0 misses), 0 requests sent (*)"]
    )


def test_a_second_run_under_xdist_makes_no_request_either(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any
) -> None:
    suite(8)
    # The cache filled serially; one xdist run, the second, reads it. (A fresh run under
    # xdist sending each request once: test_the_summary_counts_every_request...[xdist].)
    pytester.runpytest().assert_outcomes(passed=8)
    assert fake_openai.total_requests == 8
    fake_openai.reset_counters()
    pytester.runpytest("-n", "2").assert_outcomes(passed=8)
    assert fake_openai.total_requests == 0


MIXED_FAULTS = {"429": 0.05, "500": 0.05, "timeout": 0.05, "malformed": 0.05}


def run_with_faults(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any, retries: int
) -> pytest.RunResult:
    """100 examples against a server failing 20% of calls (hanging past the timeout).
    The server draws its faults from a seeded generator: the same ones every run."""
    fake_openai.faults = MIXED_FAULTS
    fake_openai.hang = 0.6
    suite(100)
    return pytester.runpytest(
        "--llmeval-cache",
        "off",
        "--llmeval-max-retries",
        str(retries),
        "--llmeval-timeout-retries",  # each call may time out more than once here
        str(retries),
        "--llmeval-report",
        "report.json",
    )


def test_twenty_percent_faults_with_retries_every_example_gets_a_verdict(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any
) -> None:
    result = run_with_faults(pytester, fake_openai, suite, retries=6)
    result.assert_outcomes(passed=100)
    assert sum(fake_openai.injected.values()) >= 10  # the faults did happen: every kind
    assert set(fake_openai.injected) == set(MIXED_FAULTS)
    assert {r["status"] for r in report_of(pytester)["records"]} == {"passed"}


def test_twenty_percent_faults_without_retries_are_errors_by_class(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any
) -> None:
    result = run_with_faults(pytester, fake_openai, suite, retries=0)
    injected = dict(fake_openai.injected)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()
    assert (
        outcomes["errors"] == sum(injected.values())
        and outcomes["passed"] == 100 - outcomes["errors"]
    )
    records = report_of(pytester)["records"]
    assert len(records) == 100  # every example is evaluated and written
    kinds: dict[str, int] = {}
    for record in records:
        if record["status"] == "error":
            kinds[record["failure_kind"]] = kinds.get(record["failure_kind"], 0) + 1
    assert kinds == {
        "llm_error:rate_limit": injected["429"],
        "llm_error:server_error": injected["500"],
        "llm_error:bad_response": injected["malformed"],  # a 200 whose body is not JSON
        "llm_error:timeout": injected["timeout"],
    }
    by_class = ", ".join(
        f"{k.split(':')[1]} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])
    )
    result.stdout.fnmatch_lines(
        [f"model call errors (after retries, not quality failures): {by_class}"]
    )
    # Errors are never softened, even in a soft partition, and are not quality failures.
    assert "softfailed" not in outcomes and "failed" not in outcomes


def test_replay_with_an_empty_cache_fails_fast_without_a_connection(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any
) -> None:
    suite(30, partition="golden")
    start = time.perf_counter()
    result = pytester.runpytest("--llmeval-cache", "replay")
    elapsed = time.perf_counter() - start
    result.assert_outcomes(errors=30)
    assert fake_openai.total_requests == 0
    assert elapsed < 10
    result.stdout.fnmatch_lines(
        [
            "*cache_miss after 1 attempt: no recorded response in * (cache mode 'replay', which "
            "never calls the API) for chat.completions model='demo-model' 'question *",
            "*golden rule: FAIL, 30 of 30 golden examples did not pass: ex-000 (error)*",
            "model call errors (after retries, not quality failures): cache_miss 30",
        ]
    )


def test_bad_cache_mode_is_a_usage_error(pytester: pytest.Pytester, suite: Any) -> None:
    suite(1)
    result = pytester.runpytest("--llmeval-cache", "sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown mode 'sometimes'; valid: use, replay, refresh, off*"])


def test_app_and_judge_calls_are_counted_per_model(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any
) -> None:
    body = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm, judge_client):
    reply = llm.complete(example.input["question"])
    judge_client.complete(f"grade: {reply}")
"""
    suite(3, body)
    result = pytester.runpytest(
        "--llmeval-judge-model", "judge-model", "--llmeval-report", "report.json"
    )
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "model calls: 6 (0 cache hits, free; 6 misses), 6 requests sent (*)",
            "  demo-model: 3 calls, 3 requests, 15 tokens, $0.0150",
            "  judge-model: 3 calls, 3 requests, 27 tokens, no price",
        ]
    )
    record = report_of(pytester)["records"][0]
    assert record["model"] == "demo-model"  # the app's model, not the judge's
    assert set(record["usage"]) == {"demo-model", "judge-model"}
    assert fake_openai.bodies[1]["temperature"] == 0  # the judge's default


def test_judge_fixture_scores_and_warns_about_a_same_family_judge(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any
) -> None:
    fake_openai.reply = lambda request: (
        json.dumps({"reasoning": "ok", "score": 4}) if request["model"] == "gpt-4o" else "echo"
    )
    body = """
import pytest
from pytest_llmeval import assert_judge

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm, judge):
    reply = llm.complete(example.input["question"])
    assert_judge(judge, reply, task="answer", criteria=["is helpful"])
"""
    suite(2, body)
    result = pytester.runpytest(
        "--llmeval-model",
        "gpt-4o-mini",
        "--llmeval-judge-model",
        "gpt-4o",
        "--llmeval-judge-samples",
        "3",
        "-W",
        "default::pytest_llmeval.errors.JudgeFamilyWarning",
        "--llmeval-report",
        "report.json",
    )
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*JudgeFamilyWarning: the judge (gpt-4o) and the model under "
            "test (gpt-4o-mini) are both gpt models*"
        ]
    )
    record = report_of(pytester)["records"][0]
    assert record["judge"][0]["scores"] == [4, 4, 4] and record["judge"][0]["model"] == "gpt-4o"
    assert record["metrics"][0]["name"] == "judge" and record["metrics"][0]["threshold"] == 3.0
    assert record["model"] == "gpt-4o-mini"


def test_judge_fixture_takes_the_judge_temperature(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any
) -> None:
    fake_openai.reply = lambda request: json.dumps({"reasoning": "ok", "score": 4})
    body = """
import pytest
from pytest_llmeval import assert_judge

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, judge):
    assert_judge(judge, "an answer", task="answer", criteria=["is helpful"])
"""
    suite(1, body)
    pytester.runpytest("--llmeval-judge-model=judge-1", "--llmeval-judge-temperature=0.25")
    assert [b["temperature"] for b in fake_openai.bodies] == [0.25]
    result = pytester.runpytest("--llmeval-judge-model=judge-1", "--llmeval-judge-temperature=0.7")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # at start-up, not once per test
    result.stderr.fnmatch_lines(["*llmeval_judge_temperature: 0.7 is above 0.3*"])


# Under xdist the file's tests share one worker (loadfile): the server's fault sequence is
# then met in the tests' order, as serially (two workers would take it in any order).
@pytest.mark.parametrize(
    "workers", [[], ["-n", "2", "--dist", "loadfile"]], ids=["serial", "xdist"]
)
def test_the_summary_counts_every_request_the_server_received(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any, workers: list[str]
) -> None:
    """Retries and calls lost after retries are requests too: the summary's count, sent
    from a worker under xdist, is the server's."""
    fake_openai.fault_sequence = ["500", "500", None, "500", "500", "500"]
    suite(3)
    result = pytester.runpytest("--llmeval-max-retries=2", "-p", "no:randomly", *workers)
    result.assert_outcomes(passed=2, errors=1)  # two failures then an answer; one lost
    assert fake_openai.total_requests == 7
    result.stdout.fnmatch_lines(
        [
            "model calls: 3 (0 cache hits, free; 3 misses), 7 requests sent "
            "(retries and failures included)",
            "  demo-model: 3 calls, 7 requests, * tokens, $*",
        ]
    )


SIMILAR = """
import pytest
from pytest_llmeval import assert_similar

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm):
    assert_similar(llm.complete(example.input["question"]), example.expected_output)
"""


def test_embeddings_have_their_own_endpoint(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, suite: Any
) -> None:
    """A chat server and an embedding server are often two processes."""
    suite(3, SIMILAR)
    with FakeOpenAIServer() as embedding_server:
        args = (
            "--llmeval-embedding-model=embed-model",
            f"--llmeval-embedding-base-url={embedding_server.base_url}",
            "--llmeval-report=report.json",
        )
        pytester.runpytest(*args).assert_outcomes(passed=3)
        assert dict(fake_openai.requests) == {"/chat/completions": 3}
        assert dict(embedding_server.requests) == {"/embeddings": 3}
        assert embedding_server.bodies[0]["model"] == "embed-model"

        # Per-token vectors (llama.cpp without pooling) are a classified error that says
        # what to do, not a quality failure.
        embedding_server.per_token_embeddings = True
        result = pytester.runpytest("--llmeval-cache=off", *args)
        result.assert_outcomes(errors=3)
        result.stdout.fnmatch_lines(
            ["*bad_response after 1 attempt: the server returned one vector per token*"]
        )
        assert "--pooling mean" in result.stdout.str()
        assert "ValidationError" not in result.stdout.str()
        kinds = {r["failure_kind"] for r in report_of(pytester)["records"]}
        assert kinds == {"llm_error:bad_response"}


@pytest.mark.parametrize("value", ["1.5", "-1", "inf"])
def test_timeout_retries_is_a_whole_number(
    pytester: pytest.Pytester, suite: Any, value: str
) -> None:
    suite(1)
    result = pytester.runpytest(f"--llmeval-timeout-retries={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*llmeval_timeout_retries: '{value}' is not a whole number*"])
