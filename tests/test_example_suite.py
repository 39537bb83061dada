"""The example suite behaves as the README says: v1 passes, its pipeline checks too
(retrieval, tool calls, conversations) and its looping agent is stopped at max_steps, its
scripted flaky example is listed and its calibration panel's agreement shown; the power
plan is printed before the run, by ``llmeval_repeat = auto`` and by ``llmeval plan``
alike; a wrong golden answer or the v2 prompt fails the gates, and xdist changes nothing.
Every output block of the README's "The example suite" section is checked here."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_html_report import Dom, chromium, dump_dom

from pytest_llmeval import load_dataset
from pytest_llmeval.cli import main as llmeval
from pytest_llmeval.embeddings import default_embedder

HOLIDAY = "It is the holiday season"  # the v2 prompt's addition (example_suite/app.py)
JUDGE_PROMPTS = {
    "rubric": "on the 1-5 scale",
    "pairwise": "comparing two responses",
    "grounding": "against a context document",
}

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "example_suite"
LOOP = "adversarial-refund-polling-loop-01"
FLAKY = "distribution-light-agents-01"
STOPPED = "max_steps=6: stopped before step 7 (tool refund_status)"


def readme_block(after: str) -> list[str]:
    """The lines of the first output block after ``after`` in the README's section on
    the example suite."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The example suite") :]
    section = section[: section.index("\n## ", 1)]
    lead = r"\s+".join(map(re.escape, after.split()))  # across the text's line breaks
    found = re.search(lead + r".*?```\n(.*?)```", section, re.S)
    assert found, f"no output block after {after!r} in the README"
    return found.group(1).splitlines()


def assert_shown(result: pytest.RunResult, lines: list[str]) -> None:
    """``lines`` are in the output, one after the other, as they are."""
    __tracebackhide__ = True
    out = result.outlines
    starts = [i for i, line in enumerate(out) if line == lines[0]]
    assert any(out[i : i + len(lines)] == lines for i in starts), (
        "not in the output:\n" + "\n".join(lines) + "\n\noutput:\n" + "\n".join(out)
    )


def records(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["records"])


@pytest.fixture(scope="module", autouse=True)
def local_model() -> None:
    """Load the local embedding model before the in-process runs. pytester drops the
    modules that a run imports, and torch cannot be imported twice in one process; loaded
    here, it stays, and every run shares the one model."""
    default_embedder().embed(["warm up"])


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    target = pytester.path / "example_suite"
    shutil.copytree(SUITE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def verdicts(result: pytest.RunResult) -> list[str]:
    return [
        line
        for line in result.outlines
        if line.startswith(("golden rule", "regression (")) or "(soft):" in line
    ]


def test_v1_passes_with_soft_failures_listed(pytester: pytest.Pytester, suite: Path) -> None:
    result = pytester.runpytest(
        str(suite), "--llmeval-report", "v1.json", "--llmeval-html", "v1.html"
    )
    assert result.ret == pytest.ExitCode.OK
    assert verdicts(result) == readme_block("With v1 the verdicts read:")
    result.stdout.fnmatch_lines(["soft failures (15):"])
    # The scripted flaky example, a warning; the calibration panel's agreement.
    assert_shown(result, readme_block("The flaky example is listed under them:"))
    assert_shown(result, readme_block("the calibration panel's agreement next to"))
    # Against the committed baseline of v1: every judge score and tool call is the same
    # (all d = 0): NO_CHANGE for the judge, INSUFFICIENT_DATA (not blocking) for the 8
    # regression examples' tool calls.
    assert_shown(result, readme_block("and its regression section:"))
    # The power plan, before the first test.
    assert_shown(result, readme_block("Before the first test, the header prints"))
    # The run's page, as headless Chromium shows it (v2's: tests/test_example_suite_views.py).
    chromium()
    page = Dom(dump_dom(pytester.path / "v1.html", profile=pytester.path / "chromium"))
    assert "llmeval: PASS" in page.text("verdicts") and "golden rule: PASS" in page.text("verdicts")
    assert "NO_CHANGE" in page.text("regression")

    # The pipeline checks pass: retrieval on golden, tool calls everywhere, each turn.
    run = records(pytester.path / "v1.json")
    by_test: dict[str, dict[str, str]] = {}
    for record in run:
        test = record["nodeid"].split("::")[1].split("[")[0]
        by_test.setdefault(test, {})[record["example_id"]] = record["status"]
    assert by_test["test_retriever_finds_the_relevant_passages"] == dict.fromkeys(
        (ex.id for ex in load_dataset(suite / "datasets") if ex.partition == "golden"),
        "passed",
    )
    tools = by_test["test_tools_called_as_expected"]
    assert len(tools) == 58 and {k: v for k, v in tools.items() if v != "passed"} == {
        LOOP: "failed"
    }
    assert by_test["test_every_turn_of_the_conversation"] == {
        "golden-sso-then-price-conversation-01": "passed"
    }
    recalls = [
        m["score"]
        for r in run
        for m in r["metrics"]
        if m["name"] == "retrieval_recall" and r["partition"] == "golden"
    ]
    assert recalls == [1.0] * 7

    # The trajectory of a refund question: search, then the account before the refund.
    steps = next(
        r["steps"]
        for r in run
        if r["example_id"] == "regression-refund-lookup-first-01"
        and "test_tools_called_as_expected" in r["nodeid"]
    )
    assert [(s["kind"], s["name"]) for s in steps] == [
        ("retrieval", "search"),
        ("llm", "support-demo-1"),
        ("tool", "lookup_account"),
        ("llm", "support-demo-1"),
        ("tool", "refund_status"),
        ("llm", "support-demo-1"),
    ]
    assert [c["name"] for s in steps for c in s.get("tool_calls", [])] == [
        "lookup_account",
        "refund_status",
    ]
    assert steps[4]["result"]["amount"] == "$566.40"

    # The flaky example: three draws of one test, the second answered wrong (scripted).
    flaky = sorted((r["draw"], r["status"]) for r in run if r["example_id"] == FLAKY)
    assert flaky == [(1, "passed"), (2, "failed"), (3, "passed")]
    # The calibration set's rubric verdicts are the panel's: each holds both judges.
    panels = [
        [p["model"] for p in v["panel"]]
        for r in run
        if "test_judge_within_a_point_of_people" in r["nodeid"]
        for v in r["judge"]
    ]
    assert len(panels) == 13 and all(p == ["judge-demo-1", "judge-demo-2"] for p in panels)
    # The rest of the suite keeps its one judge.
    singles = [v for r in run if "test_judge_rates_the_answer" in r["nodeid"] for v in r["judge"]]
    assert singles and not any(v.get("panel") for v in singles)

    # The looping agent: each of its tests is stopped before the tool call of step 7,
    # after 3 model calls; the rest was never asked for (the cache holds those 3 only).
    loop = [r for r in run if r["example_id"] == LOOP]
    assert len(loop) == 4
    assert {(r["status"], r["failure_kind"], r["failure_reason"]) for r in loop} == {
        ("failed", "max_steps", STOPPED)
    }
    assert {r["llm_calls"] for r in loop} == {3} and {len(r["steps"]) for r in loop} == {6}
    assert loop[0]["limits"] == {"max_steps": 6}
    question = next(ex for ex in load_dataset(suite / "datasets") if ex.id == LOOP).input
    asked = [
        entry
        for entry in map(json.loads, map(Path.read_text, suite.glob("llmeval-cache/*/*.json")))
        if entry["request"]["messages"][1]["content"] == question["question"]
    ]
    assert len(asked) == 6  # 3 model calls for each prompt version


def readme_commands(start: str) -> list[list[str]]:
    """The commands of the README's example-suite section (its bash block) that start
    with ``start``, as argv."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The example suite") :]
    block = section[section.index("```bash\n") :].split("```")[1]
    return [
        shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.startswith(start)
    ]


def test_auto_draws_pick_k_per_partition_and_print_the_plan(
    pytester: pytest.Pytester, suite: Path
) -> None:
    """``llmeval_repeat = auto`` on the committed baseline (two draws of each distribution
    example): the header's plan, and the draws it picks, one per example everywhere (its
    draws always agree); gate the pass rate, where the flaky example's draws disagree,
    and it picks two for distribution, all of them in the committed cache."""

    def collected(result: pytest.RunResult) -> list[str]:
        return [line for line in result.outlines if "::" in line]

    header = pytester.runpytest(str(suite), "-o", "llmeval_repeat=auto", "--co")
    assert header.ret == pytest.ExitCode.OK
    assert_shown(header, readme_block("Before the first test, the header prints"))
    # One draw everywhere: the tests of a run without draws, and the flaky example's 3.
    auto = collected(pytester.runpytest(str(suite), "-o", "llmeval_repeat=auto", "--co", "-q"))
    assert auto == collected(pytester.runpytest(str(suite), "--co", "-q"))
    assert len(auto) == 322 and sum(FLAKY in test for test in auto) == 3

    pass_rate = ("-o", "llmeval_gate=pass_rate.distribution", "-o", "llmeval_delta=pass_rate:0.04")
    drawn = pytester.runpytest(str(suite), "-o", "llmeval_repeat=auto", *pass_rate, "--co", "-q")
    ids = collected(drawn)
    second = {i.split("[")[1].removesuffix("-r2]") for i in ids if i.endswith("-r2]")}
    distribution = {
        ex.id for ex in load_dataset(suite / "datasets") if ex.partition == "distribution"
    }
    assert second == distribution | {FLAKY}  # calibration is drawn once (repeat=1)
    # Every second draw is replayed from the committed cache: the run passes, offline.
    result = pytester.runpytest(
        str(suite), "-o", "llmeval_repeat=auto", *pass_rate, "-k", "distribution-starter-price"
    )
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=8)


def test_llmeval_plan_prints_the_same_plan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's ``llmeval plan`` commands print its blocks: the plan of the header
    (the same lines, but for the note on prices, which the header reads from pytest.ini)
    and the plan of a pass-rate gate."""
    monkeypatch.chdir(ROOT)
    same, pass_rate = readme_commands(".venv/bin/llmeval plan")
    assert llmeval(same[1:]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == readme_block("from the command line, given the suite's gate and δ:")
    header = readme_block("Before the first test, the header prints")
    assert [line.strip() for line in header[1:-1]] == [line.strip() for line in printed[1:-1]]
    assert header[-1].split(", cost")[0].strip() == printed[-1].split(", cost")[0]
    assert llmeval(pass_rate[1:]) == 0
    assert capsys.readouterr().out.splitlines() == readme_block("buys a second draw")


def test_the_second_turn_is_asked_with_the_first(suite: Path) -> None:
    """The conversation's second request holds the first turn and its answer: the model
    is asked "the cheaper of those" with the plans it named."""
    example = next(ex for ex in load_dataset(suite / "datasets") if "conversation" in ex.tags)
    first, second = example.user_turns
    requests = [
        json.loads(path.read_text())["request"]["messages"]
        for path in suite.glob("llmeval-cache/*/*.json")
    ]
    asked = [m for m in requests if m[-1]["content"] == second and HOLIDAY not in m[0]["content"]]
    assert len(asked) == 1
    history = [(m["role"], m["content"]) for m in asked[0][1:]]
    assert history[0] == ("user", first) and history[-1] == ("user", second)
    assert history[1][0] == "assistant" and "Business and Enterprise" in history[1][1]
    # Its search had the first turn's words too, and found the prices.
    assert "\n[pricing]\n" in asked[0][0]["content"]


def test_golden_gate_selects_only_golden(pytester: pytest.Pytester, suite: Path) -> None:
    result = pytester.runpytest(str(suite), "-m", "golden")
    assert result.ret == pytest.ExitCode.OK
    assert verdicts(result) == ["golden rule: PASS, all 7 golden examples passed (57 tests)"]


def cached_replies(suite: Path) -> dict[str, tuple[str, str]]:
    """Cache key -> (who asked: the app or which judge prompt, the recorded reply)."""
    replies = {}
    for path in (suite / "llmeval-cache").glob("*/*.json"):
        entry = json.loads(path.read_text())
        system = entry["request"]["messages"][0]["content"]
        asker = next((k for k, text in JUDGE_PROMPTS.items() if text in system), "app")
        replies[entry["key"]] = (asker, entry["response"]["choices"][0]["message"]["content"])
    return replies


def test_one_wrong_golden_answer_fails_and_is_named(pytester: pytest.Pytester, suite: Path) -> None:
    victim = next(ex for ex in load_dataset(suite / "datasets") if ex.partition == "golden")
    for path in (suite / "llmeval-cache").glob("*/*.json"):
        entry = json.loads(path.read_text())
        system, *_, question = entry["request"]["messages"]
        if question["content"] == victim.input["question"] and HOLIDAY not in system["content"]:
            entry["response"]["choices"][0]["message"]["content"] = (
                "I'm not sure, please check our website.\n\n— Brightdesk Support"
            )
            path.write_text(json.dumps(entry))
    result = pytester.runpytest(str(suite), "-m", "golden")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"golden rule: FAIL, 1 of 7 golden examples did not pass*: {victim.id}*"]
    )


# The examples re-recorded: a golden one (the app under both prompt versions, the rubric
# and the pairwise judge), a distribution one and a calibration one (the grounding judge),
# and the pipeline's: a tool-calling one, the two-turn conversation and the looping agent.
# The similarity tests are left out: they ask no model (local embeddings), and would cost
# each of the two runs a torch import.
RECORDED_SAMPLE = (
    "(golden-refund-window or distribution-starter-price or calibration-team-price-wrong"
    " or regression-other-customers-refund or conversation or polling-loop)"
    " and not similarity and not means_the_reference"
)


def cache_entries(suite: Path) -> dict[str, str]:
    """Cache file -> its entry as canonical JSON (keys sorted), without the two fields
    that differ on every recording: when it was recorded and how long the call took."""
    entries = {}
    for path in (suite / "llmeval-cache").glob("*/*.json"):
        entry = json.loads(path.read_text())
        del entry["created_at"], entry["latency_s"]
        entries[path.name] = json.dumps(entry, sort_keys=True, ensure_ascii=False)
    return entries


def test_the_committed_cache_is_what_the_demo_server_records(suite: Path) -> None:
    """The one documented command regenerates the cache, byte for byte but for the time
    of recording and the latency. Run on a sample of the suite (``-k``, through
    ``PYTEST_ADDOPTS``, which the command's pytest runs inherit) that asks every kind of
    request the cache holds (the whole suite took three times as long)."""
    committed = cached_replies(suite)
    committed_entries = cache_entries(suite)
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    subprocess.run(
        [sys.executable, str(suite / "demo_server.py"), "record"],
        cwd=suite,
        env={**os.environ, "PYTEST_ADDOPTS": f"{addopts} -k {shlex.quote(RECORDED_SAMPLE)}"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    recorded = cache_entries(suite)  # the command emptied the cache first: the sample's
    assert recorded and {name: committed_entries.get(name) for name in recorded} == recorded
    sample = cached_replies(suite)
    assert {key: committed.get(key) for key in sample} == sample
    # The sample asks for every kind of entry: both prompt versions' answers, each judge.
    versions = {
        HOLIDAY in json.loads(text)["request"]["messages"][0]["content"]
        for text in recorded.values()
    }
    assert versions == {False, True}
    assert set(Counter(asker for asker, _ in sample.values())) == {*JUDGE_PROMPTS, "app"}
    asked_for_tools = [
        name
        for text in recorded.values()
        for call in json.loads(text)["response"]["choices"][0]["message"].get("tool_calls") or []
        for name in [call["function"]["name"]]
    ]
    assert {"lookup_account", "refund_status"} <= set(asked_for_tools)
    askers = Counter(asker for asker, _ in committed.values())
    # For each of two prompt versions: 50 questions answered at once, 6 after 1 or 2
    # rounds of tool calls (17 calls in v1, 18 in v2), the looping agent's 3 calls before
    # it is stopped, the conversation's 2 turns, and the flaky example's 3 draws; and the
    # baseline's second draw of each of the 38 distribution questions (v1).
    assert askers["app"] == 145 + 2 * 3 + 38
    assert askers["grounding"] == 13  # the calibration set's responses
    assert askers["rubric"] > 50 and askers["pairwise"] > 0
    # The panel's second judge scored the calibration set's 13 responses.
    second = [
        e
        for e in map(json.loads, committed_entries.values())
        if e["request"]["model"] == "judge-demo-2"
    ]
    assert len(second) == 13


def test_v2_prompt_fails_the_gates_as_the_readme_shows(
    pytester: pytest.Pytester, suite: Path
) -> None:
    result = pytester.runpytest(str(suite), "--prompt-version", "v2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert verdicts(result) == readme_block("With v2 the summary reads:")
    # The statistics block it against the committed baseline of v1: the judge score on
    # distribution and the tool calls on regression (the refund checked first in 6 of 8).
    assert_shown(result, readme_block("and the regression section blocks it:"))
    # A tool-order failure: v2's answer reads right, its trajectory does not.
    assert_shown(result, readme_block("fails on its trajectory, not on its words:"))


def test_v2_prompt_fails_the_gates_the_same_way_under_xdist(
    pytester: pytest.Pytester, suite: Path
) -> None:
    # Without the embedding tests, which ask no model and would cost each xdist worker
    # the import of torch and sentence-transformers (v1's runs include them).
    asking = ("--prompt-version", "v2", "-k", "not similarity and not means_the_reference")
    serial = pytester.runpytest(str(suite), *asking)
    parallel = pytester.runpytest(str(suite), *asking, "-n", "2")
    assert serial.ret == parallel.ret == pytest.ExitCode.TESTS_FAILED
    assert verdicts(serial) == verdicts(parallel)
    assert [line.split(":")[1].split(",")[0].strip() for line in verdicts(serial)] == [
        "FAIL",
        "FAIL",
        "FAIL",
        "FAIL",
    ]
    # And the statistics block it, the same way: the README's lines, which no
    # embedding test changes.
    for result in (serial, parallel):
        assert_shown(result, readme_block("and the regression section blocks it:"))


# The app as production runs it: a plain openai client, no plugin, sync and async.
PRODUCTION = """
import asyncio, json, sys
import openai
sys.path.insert(0, sys.argv[1])
from app import GAVE_UP, MAX_ROUNDS, SupportAssistant
from demo_server import make_reply
from pytest_llmeval.testing import FakeOpenAIServer

turns, question, loop = json.loads(sys.argv[2])
with FakeOpenAIServer(make_reply()) as server:
    options = {"base_url": server.base_url, "api_key": "demo-key", "max_retries": 0}
    assistant = SupportAssistant(
        openai.OpenAI(**options), "v1", "support-demo-1",
        async_client=openai.AsyncOpenAI(**options),
    )
    said = {"sync": assistant.converse(turns), "async": asyncio.run(assistant.aconverse(turns))}
    said["tools"] = assistant.answer(question)
    before = server.total_requests
    said["loop"] = assistant.answer(loop) == GAVE_UP
    said["loop_calls"] = (server.total_requests - before, MAX_ROUNDS)
print(json.dumps(said))
"""


def test_the_app_runs_on_a_plain_openai_client_sync_and_async(suite: Path) -> None:
    """Outside the eval suite (no plugin, no cache), against the demo server: the same
    replies through the sync and the async client, the tools run, and the looping agent
    stopped by the app's own bound on model calls."""
    examples = {ex.id: ex for ex in load_dataset(suite / "datasets")}
    conversation = examples["golden-sso-then-price-conversation-01"].user_turns
    question = examples["regression-refund-lookup-first-01"].input["question"]
    loop = examples[LOOP].input["question"]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PRODUCTION,
            str(suite),
            json.dumps([conversation, question, loop]),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    said = json.loads(done.stdout)
    scripted = {
        json.loads(line)["id"]: json.loads(line)
        for line in (suite / "demo" / "v1.jsonl").read_text().splitlines()
    }
    turns = [t["output"] for t in scripted["golden-sso-then-price-conversation-01"]["turns"]]
    assert said["sync"] == said["async"] == turns
    assert said["tools"] == scripted["regression-refund-lookup-first-01"]["output"]
    assert said["loop"] and said["loop_calls"] == [10, 10]
