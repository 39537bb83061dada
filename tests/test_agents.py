"""Tool-calling apps evaluated from their trajectories: a real agent loop over OpenAI tool
calling against the local server, whose replies script the calls; serially and under
xdist, plain and batched."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.testing import FakeOpenAIServer, calls

AGENT = """
import json
import pytest
from pytest_llmeval import assert_steps, assert_tool_calls, batched, traced

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}}}}
    for name in ("lookup_order", "issue_refund")
]


@traced
def lookup_order(order_id):
    return {"order_id": order_id, "status": "delivered"}


@traced
def issue_refund(order_id):
    return {"refunded": order_id}


RUN = {"lookup_order": lookup_order, "issue_refund": issue_refund}


def follow(messages, message):
    messages.append(message.model_dump(exclude_none=True))
    for call in message.tool_calls:
        result = RUN[call.function.name](**json.loads(call.function.arguments))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})


def agent(llm, question):
    messages = [{"role": "user", "content": question}]
    while True:
        message = llm.chat.completions.create(messages=messages, tools=TOOLS).choices[0].message
        if not message.tool_calls:
            return message.content
        follow(messages, message)


async def aagent(llm, question):
    messages = [{"role": "user", "content": question}]
    while True:
        reply = await llm.aio.chat.completions.create(messages=messages, tools=TOOLS)
        message = reply.choices[0].message
        if not message.tool_calls:
            return message.content
        follow(messages, message)
"""

PLAIN = (
    AGENT
    + """
@pytest.mark.llmeval(dataset="data.jsonl")
def test_agent(example, llm):
    agent(llm, example.input["question"])
    assert_tool_calls(None, example.expected_tool_calls)
"""
)

BATCHED = (
    AGENT
    + """
@batched
async def answer(example, llm):
    return await aagent(llm, example.input["question"])


@pytest.mark.llmeval(dataset="data.jsonl")
def test_agent(example, answer):
    assert_tool_calls(None, example.expected_tool_calls)
"""
)

EXAMPLES = [
    {
        "id": "refund",
        "partition": "golden",
        "input": {"question": "Refund order A1"},
        "expected_tool_calls": [
            {"name": "lookup_order", "args": {"order_id": "A1"}},
            {"name": "issue_refund", "args": {"order_id": "A1"}},
        ],
    },
    {
        # A past bug: refunding before looking the order up.
        "id": "refund-first",
        "partition": "regression",
        "input": {"question": "Refund order B2"},
        "expected_tool_calls": [
            {"name": "lookup_order", "args": {"order_id": "B2"}},
            {"name": "issue_refund"},
        ],
    },
    {
        "id": "loop",
        "partition": "golden",
        "input": {"question": "Where is order C3?"},
        "max_steps": 5,
    },
]

# The model's replies, turn by turn (the last one repeats): what a tool-calling model
# would answer to each question.
SCRIPTS: dict[str, list[Any]] = {
    "Refund order A1": [
        calls(("lookup_order", {"order_id": "A1"})),
        calls(("issue_refund", {"order_id": "A1"})),
        "Order A1 is refunded.",
    ],
    "Refund order B2": [
        calls(("issue_refund", {"order_id": "B2"})),
        calls(("lookup_order", {"order_id": "B2"})),
        "Order B2 is refunded.",
    ],
    "Where is order C3?": [calls(("lookup_order", {"order_id": "C3"}))],  # forever
}


def scripted(request: dict[str, Any]) -> Any:
    messages = request["messages"]
    question = next(m["content"] for m in messages if m["role"] == "user")
    turn = sum(m["role"] == "assistant" for m in messages)
    script = SCRIPTS[question]
    return script[min(turn, len(script) - 1)]


@pytest.fixture
def agent_suite(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_openai.reply = scripted

    def make(body: str) -> None:
        pytester.makeini(
            "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
            f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = agent-model\n"
            "llmeval_cache = off\nllmeval_prices = agent-model=1000/1000\n"
        )
        rows = "".join(json.dumps(e) + "\n" for e in EXAMPLES)
        pytester.path.joinpath("data.jsonl").write_text(rows)
        pytester.makepyfile(test_orders=body)

    return make


def steps_by_example(pytester: pytest.Pytester) -> dict[str, list[tuple[Any, ...]]]:
    report = json.loads(pytester.path.joinpath("report.json").read_text())
    return {
        r["example_id"]: [
            (
                s["kind"],
                s["name"],
                s.get("args"),
                s.get("result"),
                [(c["name"], c["args"]) for c in s.get("tool_calls", [])],
                s.get("content"),
            )
            for s in r["steps"]
        ]
        for r in report["records"]
    }


def llm(*wanted: tuple[str, str]) -> tuple[Any, ...]:
    return ("llm", "agent-model", None, None, [(n, {"order_id": o}) for n, o in wanted], None)


def tool(name: str, order: str, result: Any) -> tuple[Any, ...]:
    return ("tool", name, {"order_id": order}, result, [], None)


EXPECTED_STEPS = {
    "refund": [
        llm(("lookup_order", "A1")),
        tool("lookup_order", "A1", {"order_id": "A1", "status": "delivered"}),
        llm(("issue_refund", "A1")),
        tool("issue_refund", "A1", {"refunded": "A1"}),
        ("llm", "agent-model", None, None, [], "Order A1 is refunded."),
    ],
    "refund-first": [
        llm(("issue_refund", "B2")),
        tool("issue_refund", "B2", {"refunded": "B2"}),
        llm(("lookup_order", "B2")),
        tool("lookup_order", "B2", {"order_id": "B2", "status": "delivered"}),
        ("llm", "agent-model", None, None, [], "Order B2 is refunded."),
    ],
    # max_steps 5: the sixth step, a tool call, is stopped before it runs.
    "loop": [
        llm(("lookup_order", "C3")),
        tool("lookup_order", "C3", {"order_id": "C3", "status": "delivered"}),
        llm(("lookup_order", "C3")),
        tool("lookup_order", "C3", {"order_id": "C3", "status": "delivered"}),
        llm(("lookup_order", "C3")),
    ],
}


@pytest.mark.parametrize("body", [PLAIN, BATCHED], ids=["plain", "batched"])
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_trajectory_lists_every_step_in_order(
    pytester: pytest.Pytester,
    fake_openai: FakeOpenAIServer,
    agent_suite: Any,
    body: str,
    workers: list[str],
) -> None:
    agent_suite(body)
    result = pytester.runpytest("--llmeval-report", "report.json", *workers)
    # A batched fixture runs the agent in the test's setup: the stopped loop is an error
    # there, as pytest counts, and the same quality failure in the report.
    result.assert_outcomes(passed=1, failed=2 if body == PLAIN else 1, errors=body == BATCHED)
    assert steps_by_example(pytester) == EXPECTED_STEPS
    report = json.loads(pytester.path.joinpath("report.json").read_text())
    assert {r["example_id"]: (r["status"], r["failure_kind"]) for r in report["records"]} == {
        "refund": ("passed", None),
        "refund-first": ("failed", "tool_calls"),
        "loop": ("failed", "max_steps"),
    }
    # The looping agent is stopped without paying for the rest: 3 model calls, no more.
    loop_requests = [
        b for b in fake_openai.bodies if b["messages"][0]["content"].startswith("Where")
    ]
    assert len(loop_requests) == 3
    assert fake_openai.total_requests == 9


def test_a_wrong_tool_order_fails_with_the_diff_and_the_numbered_trajectory(
    pytester: pytest.Pytester, agent_suite: Any
) -> None:
    agent_suite(PLAIN)
    result = pytester.runpytest("--llmeval-report", "report.json")
    result.stdout.fnmatch_lines(
        [
            "*tool_calls: 1 of 2 expected calls not found (order in_order, args subset) "
            "(regression)",
            "*  expected:",
            "*    1. lookup_order(order_id='B2')  ok = actual 2",
            "*    2. issue_refund(any arguments)  out of order: actual 1",
            "*  actual:",
            "*    1. issue_refund(order_id='B2')",
            "*    2. lookup_order(order_id='B2')",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*- llmeval trajectory -*",
            "1. llm agent-model: asked for issue_refund(order_id='B2') (* tokens)",
            '2. tool issue_refund(order_id=\'B2\') -> {"refunded": "B2"}',
            "3. llm agent-model: asked for lookup_order(order_id='B2') (* tokens)",
            '4. tool lookup_order(order_id=\'B2\') -> {"order_id": "B2", "status": "delivered"}',
            "5. llm agent-model: 'Order B2 is refunded.' (* tokens)",
        ]
    )
    records = {
        r["example_id"]: r
        for r in json.loads(pytester.path.joinpath("report.json").read_text())["records"]
    }
    assert records["refund-first"]["failure_kind"] == "tool_calls"
    loop = records["loop"]
    assert (loop["status"], loop["failure_kind"]) == ("failed", "max_steps")
    assert loop["failure_reason"] == "max_steps=5: stopped before step 6 (tool lookup_order)"
    assert loop["limits"] == {"max_steps": 5}
    assert loop["llm_calls"] == 3
    result.stdout.fnmatch_lines(["*golden rule: FAIL*"])


def test_the_readme_agent_runs_as_written(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Pipelines and agents") :]
    dataset = re.search(r"```json\n(.*?)```", section, re.S)
    test_file = re.search(r"```python\n(import json.*?)```", section, re.S)
    shown = re.search(
        r"```\n(E +pytest_llmeval.errors.LLMEvalAssertionError: tool_calls.*?)```", section, re.S
    )
    assert dataset and test_file and shown
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_openai.reply = scripted
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = agent-model\n"
    )
    evals = pytester.mkdir("evals")
    (evals / "orders.jsonl").write_text(dataset.group(1))
    (evals / "test_orders.py").write_text(test_file.group(1))
    result = pytester.runpytest("evals", "--llmeval-report", "report.json")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(shown.group(1).splitlines(), consecutive=True)
    verdicts = re.search(r"```\n(golden rule: FAIL, 1 of 2 .*?)```", section, re.S)
    assert verdicts
    result.stdout.fnmatch_lines(verdicts.group(1).splitlines(), consecutive=True)
    result.stdout.fnmatch_lines(["partition * pass rate  tool_calls  p50 latency*"])
    loop = next(
        r
        for r in json.loads(pytester.path.joinpath("report.json").read_text())["records"]
        if r["example_id"] == "loop"
    )
    assert loop["failure_reason"] == "max_steps=5: stopped before step 6 (tool lookup_order)"
    assert loop["llm_calls"] == 3


def test_a_conversation_replays_its_user_turns(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's conversation test: the second turn is answered knowing the first."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Pipelines and agents") :]
    test = re.search(
        r"```python\n(@pytest.mark.llmeval\(dataset=\"conversations.*?)```", section, re.S
    )
    assert test
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def remembers(request: dict[str, Any]) -> str:
        users = [m["content"] for m in request["messages"] if m["role"] == "user"]
        return f"Noted: {users[0]}" if len(users) == 1 else f"You are on {users[0]}."

    fake_openai.reply = remembers
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = chat-model\n"
    )
    turns = [
        {"role": "user", "content": "the Team plan"},
        {"role": "user", "content": "Which plan am I on?"},
    ]
    rows = [
        {
            "id": "remembers",
            "partition": "golden",
            "input": {"messages": turns},
            "metadata": {"must_mention": ["Team plan"]},
        },
    ]
    pytester.path.joinpath("conversations.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    imports = "import pytest\nfrom pytest_llmeval import assert_constraints, required_phrases\n\n"
    pytester.makepyfile(test_conversation=imports + test.group(1))
    result = pytester.runpytest("--llmeval-report", "report.json")
    result.assert_outcomes(passed=1)
    (record,) = json.loads(pytester.path.joinpath("report.json").read_text())["records"]
    assert [(s["kind"], s.get("content")) for s in record["steps"]] == [
        ("llm", "Noted: the Team plan"),
        ("llm", "You are on the Team plan."),
    ]
    assert [len(b["messages"]) for b in fake_openai.bodies] == [1, 3]


def test_a_batched_fixture_sees_the_steps_of_the_batched_fixtures_before_it(
    pytester: pytest.Pytester,
) -> None:
    """Whichever test's setup computes the window: the one it starts in had its earlier
    fixture's steps moved into its record already, and they are still its trajectory."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    rows = [{"id": i, "partition": "golden", "input": {}} for i in ("a", "b", "c")]
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytester.makepyfile(
        test_steps="""
import pytest
from pytest_llmeval import batched, traced

@traced
def tool(x):
    return x

@batched
async def first(example, llmeval_record):
    tool(example.id)

@batched
async def second(example, first, llmeval_record):
    tool("again")
    return [(s["name"], s["args"]["x"]) for s in llmeval_record.trajectory]

@pytest.mark.llmeval(dataset="data.jsonl")
def test_it(example, second, llmeval_record):
    assert second == [("tool", example.id), ("tool", "again")]
    assert [s["args"]["x"] for s in llmeval_record.steps] == [example.id, "again"]
"""
    )
    pytester.runpytest().assert_outcomes(passed=3)
