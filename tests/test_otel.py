"""OpenTelemetry GenAI spans as trajectory steps: the agent of test_agents.py, instrumented
with spans and calling the server through a plain openai client (no ``llm`` fixture, no
``@traced``), gives the same trajectory and verdicts. Every span here comes from the
real opentelemetry-sdk. The runs are subprocesses: a process has one global tracer
provider, set once."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from test_agents import EXAMPLES, EXPECTED_STEPS, scripted, steps_by_example

from pytest_llmeval import otel, records
from pytest_llmeval.client import ClientConfig, LLMClient
from pytest_llmeval.client.cache import ResponseCache
from pytest_llmeval.client.llm import off_loop
from pytest_llmeval.records import Record
from pytest_llmeval.testing import FakeOpenAIServer

README = Path(__file__).resolve().parent.parent / "README.md"

# The README shows this part of the app: a model call and a tool call, each in its span.
INSTRUMENTED = """
tracer = trace.get_tracer("orders-agent")
client = openai.OpenAI()  # OPENAI_BASE_URL, OPENAI_API_KEY


def chat(messages):
    with tracer.start_as_current_span(
        "chat agent-model",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "agent-model"},
    ) as span:
        reply = client.chat.completions.create(model="agent-model", messages=messages, tools=TOOLS)
        span.set_attribute("gen_ai.usage.input_tokens", reply.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", reply.usage.completion_tokens)
        message = reply.choices[0].message
        span.set_attribute("gen_ai.output.messages", json.dumps([output_message(message)]))
        return message


def run_tool(call):
    with tracer.start_as_current_span(
        f"execute_tool {call.function.name}",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.function.name,
            "gen_ai.tool.call.id": call.id,
            "gen_ai.tool.call.arguments": call.function.arguments,
        },
    ) as span:
        result = RUN[call.function.name](**json.loads(call.function.arguments))
        span.set_attribute("gen_ai.tool.call.result", json.dumps(result))
        return result
"""

# test_agents.py's agent without the llm fixture and @traced: an OpenAI client and spans.
APP = (
    """
import json

import openai
import pytest
from opentelemetry import trace

from pytest_llmeval import assert_steps, assert_tool_calls

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}}}}
    for name in ("lookup_order", "issue_refund")
]


def lookup_order(order_id):
    return {"order_id": order_id, "status": "delivered"}


def issue_refund(order_id):
    return {"refunded": order_id}


RUN = {"lookup_order": lookup_order, "issue_refund": issue_refund}
"""
    + INSTRUMENTED
    + '''

def output_message(message):
    """The reply as the conventions' output message: text and tool_call parts."""
    parts = [{"type": "text", "content": message.content}] if message.content else []
    parts += [
        {"type": "tool_call", "id": call.id, "name": call.function.name,
         "arguments": json.loads(call.function.arguments)}
        for call in message.tool_calls or []
    ]
    return {"role": "assistant", "parts": parts}


def agent(question, turns=4):
    messages = [{"role": "user", "content": question}]
    # Not a step: an agent's own span, parent of the others (it ends last).
    with tracer.start_as_current_span("invoke_agent orders",
                                      attributes={"gen_ai.operation.name": "invoke_agent"}):
        for _ in range(turns):  # the app's own bound: a span cannot stop it
            message = chat(messages)
            if not message.tool_calls:
                return message.content
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                result = run_tool(call)
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                )


@pytest.mark.llmeval(dataset="data.jsonl")
def test_agent(example):
    agent(example.input["question"])
    if example.limits:
        assert_steps()  # the example's max_steps, checked after the fact
    assert_tool_calls(None, example.expected_tool_calls or [])
'''
)


@pytest.fixture
def suite(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """``suite(body, examples, ini)`` writes an eval suite of the app's, whose client
    reaches the local server through the environment."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    fake_openai.reply = scripted

    def make(body: str, examples: list[dict[str, Any]] = EXAMPLES, ini: str = "") -> None:
        pytester.makeini(
            "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
            "llmeval_cache = off\nllmeval_prices = agent-model=1000/1000\n" + ini
        )
        rows = "".join(json.dumps(e) + "\n" for e in examples)
        pytester.path.joinpath("data.jsonl").write_text(rows)
        pytester.makepyfile(test_app=body)

    return make


def report(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    document = json.loads(pytester.path.joinpath("report.json").read_text())
    return {r["example_id"]: r for r in document["records"]}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_spans_give_the_trajectory_and_verdicts_of_the_llm_fixture_and_traced(
    pytester: pytest.Pytester, suite: Any, workers: list[str]
) -> None:
    suite(APP)
    result = pytester.runpytest_subprocess("--llmeval-report", "report.json", *workers)
    result.assert_outcomes(passed=1, failed=2)
    steps = steps_by_example(pytester)
    assert steps["refund"] == EXPECTED_STEPS["refund"]
    assert steps["refund-first"] == EXPECTED_STEPS["refund-first"]
    # Nothing stops a span-only app at its limit: it ran to its own bound of 4 turns, and
    # assert_steps failed it afterwards. Up to the limit, the same steps.
    assert steps["loop"][:5] == EXPECTED_STEPS["loop"]
    assert len(steps["loop"]) == 8
    records = report(pytester)
    assert records["refund-first"]["failure_kind"] == "tool_calls"
    assert records["loop"]["failure_kind"] == "steps"
    assert records["loop"]["failure_reason"].startswith("steps: steps 8 > 5")
    # The wrong order fails with the diff, and the trajectory the README shows.
    result.stdout.fnmatch_lines(
        [
            "*tool_calls: 1 of 2 expected calls not found (order in_order, args subset) "
            "(regression)",
            "*    1. lookup_order(order_id='B2')  ok = actual 2",
            "*    2. issue_refund(any arguments)  out of order: actual 1",
        ]
    )
    section = readme_section()
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    shown = re.search(r"```\n(-+ llmeval trajectory -+\n.*?)```", section, re.S)
    assert snippet and shown
    assert snippet.group(1) in APP  # the README's code is the app's, word for word
    if not workers:  # (under xdist, loop's trajectory may be shown first)
        result.stdout.fnmatch_lines(shown.group(1).splitlines(), consecutive=True)
    # Each model call counts as one through the llm fixture does: tokens, cost, usage.
    refund = records["refund"]
    assert {s["source"] for s in refund["steps"]} == {"otel"}
    assert refund["llm_calls"] == 3 and refund["model"] == "agent-model"
    llm_steps = [s for s in refund["steps"] if s["kind"] == "llm"]
    prompt = sum(s["prompt_tokens"] for s in llm_steps)
    completion = sum(s["completion_tokens"] for s in llm_steps)
    assert refund["tokens"] == {"prompt": prompt, "completion": completion}
    assert refund["cost_usd"] == pytest.approx((prompt + completion) * 1000 / 1e6)
    assert all(s["latency_s"] > 0 for s in llm_steps)


def readme_section() -> str:
    readme = README.read_text()
    start = readme.index("### OpenTelemetry")
    return readme[start : readme.index("## Configuration", start)]


def by_test(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    document = json.loads(pytester.path.joinpath("report.json").read_text())
    return {r["nodeid"]: r for r in document["records"]}


RAG = '''
import json

import openai
import pytest
from opentelemetry import trace

from pytest_llmeval import assert_retrieval

tracer = trace.get_tracer("kb")
client = openai.OpenAI()
FOUND = {
    "How long do refunds take?": [("kb-refunds", 0.91, "Refunds take 5 days."),
                                  ("kb-billing", 0.42, "Invoices are monthly.")],
    "Which plans are there?": [("kb-billing", 0.63, "Invoices are monthly."),
                               ("kb-refunds", 0.21, "Refunds take 5 days.")],
}


def search(question):
    """A retriever instrumented after the GenAI conventions; it embeds the question."""
    with tracer.start_as_current_span(
        "retrieval kb", attributes={"gen_ai.operation.name": "retrieval",
                                    "gen_ai.data_source.id": "kb"},
    ) as span:
        with tracer.start_as_current_span(
            "embeddings embed-model", attributes={"gen_ai.operation.name": "embeddings",
                                                  "gen_ai.request.model": "embed-model"},
        ) as inner:
            reply = client.embeddings.create(model="embed-model", input=question)
            inner.set_attribute("gen_ai.usage.input_tokens", reply.usage.prompt_tokens)
        found = FOUND[question]
        span.set_attribute("gen_ai.retrieval.documents", json.dumps(
            [{"id": i, "score": s, "content": t} for i, s, t in found]))
        return found


def search_openinference(question):
    """The same retriever as LlamaIndex's OpenInference instrumentation records it."""
    with tracer.start_as_current_span("retrieve") as span:
        span.set_attribute("openinference.span.kind", "RETRIEVER")
        for n, (i, s, t) in enumerate(FOUND[question]):
            span.set_attribute(f"retrieval.documents.{n}.document.id", i)
            span.set_attribute(f"retrieval.documents.{n}.document.score", s)
            span.set_attribute(f"retrieval.documents.{n}.document.content", t)


@pytest.mark.llmeval(dataset="data.jsonl")
def test_search(example):
    search(example.input["question"])
    assert_retrieval(None, example.relevant_ids, k=1)


@pytest.mark.llmeval(dataset="data.jsonl")
def test_search_openinference(example):
    search_openinference(example.input["question"])
    assert_retrieval(None, example.relevant_ids, k=1)
'''

RAG_EXAMPLES = [
    {
        "id": "refunds",
        "partition": "golden",
        "input": {"question": "How long do refunds take?"},
        "relevant_ids": ["kb-refunds"],
    },
    {
        "id": "plans",
        "partition": "golden",
        "input": {"question": "Which plans are there?"},
        "relevant_ids": ["kb-plans"],
    },
]


def test_a_retrieval_spans_documents_feed_assert_retrieval(
    pytester: pytest.Pytester, suite: Any
) -> None:
    suite(RAG, RAG_EXAMPLES)
    result = pytester.runpytest_subprocess("--llmeval-report", "report.json")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*retrieval: recall@1 0.000 < 1.000 (golden)"])
    records = by_test(pytester)
    gen_ai = records["test_app.py::test_search[refunds]"]
    # The retrieval span started first and ended last: its step comes first.
    assert [(s["kind"], s["name"]) for s in gen_ai["steps"]] == [
        ("retrieval", "kb"),
        ("embedding", "embed-model"),
    ]
    documents = [
        {"id": "kb-refunds", "score": 0.91, "text": "Refunds take 5 days."},
        {"id": "kb-billing", "score": 0.42, "text": "Invoices are monthly."},
    ]
    assert gen_ai["steps"][0]["documents"] == documents
    assert gen_ai["steps"][1]["prompt_tokens"] == 5
    openinference = records["test_app.py::test_search_openinference[refunds]"]
    assert openinference["steps"] == [
        {"kind": "retrieval", "name": "retrieve", "source": "otel", "documents": documents}
    ]
    missed = records["test_app.py::test_search[plans]"]
    recall = next(m for m in missed["metrics"] if m["name"] == "retrieval_recall")
    assert recall["score"] == 0.0 and recall["details"]["missed"] == ["kb-plans"]


OWN_PROVIDER = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(PROVIDER)
"""


def test_an_app_with_its_own_tracer_provider_keeps_exporting_its_spans(
    pytester: pytest.Pytester, suite: Any
) -> None:
    body = APP.replace(
        "import openai\n", "import openai\nfrom conftest import EXPORTER, PROVIDER\n", 1
    )
    body += """

@pytest.mark.llmeval(dataset="data.jsonl")
def test_exported(example, llmeval_record):
    EXPORTER.clear()
    agent(example.input["question"])
    exported = [span.name for span in EXPORTER.get_finished_spans()]
    assert exported[-1] == "invoke_agent orders" and len(exported) == 1 + len(llmeval_record.steps)
    assert trace.get_tracer_provider() is PROVIDER
"""
    suite(body)
    pytester.makeconftest(OWN_PROVIDER)
    result = pytester.runpytest_subprocess("--llmeval-report", "report.json", "-k", "refund")
    result.assert_outcomes(passed=3, failed=1)  # test_exported: refund, refund-first
    exported = by_test(pytester)["test_app.py::test_exported[refund]"]
    assert len(exported["steps"]) == 5


def test_a_provider_not_the_sdks_is_named_in_a_warning(
    pytester: pytest.Pytester, suite: Any
) -> None:
    suite(APP)
    pytester.makeconftest(
        "from opentelemetry import trace\ntrace.set_tracer_provider(trace.NoOpTracerProvider())\n"
    )
    result = pytester.runpytest_subprocess("--llmeval-report", "report.json")
    result.assert_outcomes(passed=1, failed=2)  # loop: no steps, so within its limits
    result.stdout.fnmatch_lines(
        [
            "*LLMEvalWarning: llmeval_otel: the tracer provider is a NoOpTracerProvider, not "
            "opentelemetry-sdk's TracerProvider: its spans cannot become trajectory steps"
        ]
    )
    assert all(r["steps"] == [] for r in report(pytester).values())


def test_off_collects_nothing(pytester: pytest.Pytester, suite: Any) -> None:
    suite(APP, ini="llmeval_otel = off\n")
    result = pytester.runpytest_subprocess("--llmeval-report", "report.json")
    result.assert_outcomes(passed=1, failed=2)  # loop: no steps, so within its limits
    assert {key: r["steps"] for key, r in report(pytester).items()} == {
        "refund": [],
        "refund-first": [],
        "loop": [],
    }


def test_a_bad_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--llmeval-otel=on")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [
        "ERROR: llmeval_otel: unknown mode 'on'; valid: auto, off"
    ]


PROBE = """
import json, sys
import pytest
code = pytest.main(["-q", "-p", "no:cacheprovider"])
print(json.dumps([int(code), sorted(m for m in sys.modules if m.startswith("opentelemetry"))]))
"""


def test_a_run_whose_app_does_not_trace_imports_no_opentelemetry(tmp_path: Path) -> None:
    tmp_path.joinpath("data.jsonl").write_text(
        '{"id": "a", "partition": "golden", "input": {}, "expected_output": "x"}\n'
    )
    tmp_path.joinpath("test_eval.py").write_text(
        "import pytest\n"
        "from pytest_llmeval import assert_exact_match\n"
        "@pytest.mark.llmeval(dataset='data.jsonl')\n"
        "def test_a(example):\n"
        "    assert_exact_match('x', example.expected_output)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [0, []]


# --- the processor on its own: spans of a tracer provider of the test's ------------------


@pytest.fixture
def tracer() -> Iterator[Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(otel.processor())
    yield provider.get_tracer("test")
    provider.shutdown()


@pytest.fixture
def record() -> Iterator[Record]:
    mine = Record(example_id="e", partition="golden")
    previous = records.bind(mine)
    yield mine
    records.bind(previous)


def test_a_failed_tool_span_is_a_step_with_its_error(tracer: Tracer, record: Record) -> None:
    attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "refund"}
    with (
        pytest.raises(ValueError),
        tracer.start_as_current_span("execute_tool refund", attributes=attributes) as span,
    ):
        span.set_attribute("gen_ai.tool.call.arguments", '{"order_id": "A1"')  # cut short
        span.set_attribute("error.type", "ValueError")
        raise ValueError("no such order")
    assert record.steps == [
        {
            "kind": "tool",
            "name": "refund",
            "source": "otel",
            "args": '{"order_id": "A1"',  # not JSON: kept as text
            "error": "ValueError: no such order",
        }
    ]


def test_a_reply_is_text_and_tool_calls_and_other_spans_are_no_steps(
    tracer: Tracer, record: Record
) -> None:
    reply = [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Looking it up."},
                {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": '{"q": 1}'},
            ],
        },
        {"role": "assistant", "parts": [{"type": "text", "content": "a second choice"}]},
    ]
    with (
        tracer.start_as_current_span("GET /orders"),
        tracer.start_as_current_span(
            "text_completion m",
            attributes={
                "gen_ai.operation.name": "text_completion",
                "gen_ai.response.model": "m-2024",
                "gen_ai.output.messages": json.dumps(reply),
            },
        ),
    ):
        pass
    assert record.steps == [
        {
            "kind": "llm",
            "name": "m-2024",
            "source": "otel",
            "content": "Looking it up.",
            "tool_calls": [{"name": "lookup", "args": {"q": 1}, "id": "c1"}],
            "latency_s": record.steps[0]["latency_s"],
            "cost_usd": None,
        }
    ]
    assert record.llm_calls == 1 and record.model == "m-2024"


def test_nested_spans_take_their_places_by_start_time(tracer: Tracer, record: Record) -> None:
    def tool(name: str) -> Any:
        return tracer.start_as_current_span(
            name, attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        )

    with tool("outer"):
        with tool("first"), tool("first.inner"):
            pass
        record.step("tool", "app-step")  # a step of the app's own, between the spans
        with tool("second"):
            pass
    assert [s["name"] for s in record.steps] == [
        "outer",
        "first",
        "first.inner",
        "app-step",
        "second",
    ]


def test_spans_of_concurrent_tasks_and_pool_threads_go_to_their_own_records(
    tracer: Tracer,
) -> None:
    def tool(name: str) -> None:
        with tracer.start_as_current_span(
            name, attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        ):
            pass

    async def example(name: str) -> Record:
        mine = Record(example_id=name, partition="golden")
        records.bind(mine)  # this task's alone
        tool(f"{name}-1")
        await asyncio.sleep(0.01)
        await off_loop(tool, f"{name}-2")  # in a pool thread, in this task's context
        return mine

    async def both() -> list[Record]:
        return list(await asyncio.gather(example("a"), example("b")))

    a, b = asyncio.run(both())
    assert [s["name"] for s in a.steps] == ["a-1", "a-2"]
    assert [s["name"] for s in b.steps] == ["b-1", "b-2"]


def test_a_span_outside_an_eval_test_is_ignored(tracer: Tracer) -> None:
    assert records.current_record() is None
    with tracer.start_as_current_span("chat m", attributes={"gen_ai.operation.name": "chat"}):
        pass  # nothing to add it to, and nothing raised


def test_the_spans_of_the_plugins_own_client_are_not_steps_twice(
    tracer: Tracer,
    record: Record,
    fake_openai: FakeOpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An instrumentation of the openai package (opentelemetry-instrumentation-openai
    wraps ``Completions.create`` so) sees the llm fixture's calls, already steps, and the
    judge's, never steps."""
    from openai.resources.chat.completions import Completions

    create = Completions.create

    def instrumented(self: Completions, *args: Any, **kwargs: Any) -> Any:
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": kwargs["model"]}
        with tracer.start_as_current_span(f"chat {kwargs['model']}", attributes=attributes):
            return create(self, *args, **kwargs)

    monkeypatch.setattr(Completions, "create", instrumented)
    cache = ResponseCache(tmp_path / "cache", "off")
    for role in ("app", "judge"):
        config = ClientConfig(
            role=role, model=f"{role}-model", base_url=fake_openai.base_url, api_key="k"
        )
        client = LLMClient(config, cache)
        client.chat.completions.create(messages=[{"role": "user", "content": "hi"}])
        client.close()
    assert fake_openai.total_requests == 2
    assert [(s["kind"], s["name"], s["source"]) for s in record.steps] == [
        ("llm", "app-model", "llm")
    ]
