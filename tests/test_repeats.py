"""Repeated draws (llmeval_repeat): each draw is a test with its own record and cache
key, an example's verdict is its partition's reducer over its draws, and an example
whose draws disagree is flaky."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

# Imported before the in-process runs: pytester drops the modules a run imports, and
# numpy cannot be imported twice in one process (a run with a baseline plans with it).
import pytest_llmeval.stats.regression  # noqa: F401
from pytest_llmeval.testing import FakeOpenAIServer

# The app answers a refund question right 7 times in 10 (the server's replies to each
# such question, in order: 3 of the first 5), and "hours" always right.
NOISY = ["30 days", "14 days", "30 days", "30 days", "14 days"] + ["30 days"] * 4 + ["14 days"]

EXAMPLES = [
    {"id": "golden-refund-01", "partition": "golden", "input": {"q": "refund"}},
    {"id": "golden-hours-01", "partition": "golden", "input": {"q": "hours"}},
    {"id": "dist-refund-02", "partition": "distribution", "input": {"q": "refund?"}},
]
RIGHT = {"refund": "30 days", "refund?": "30 days", "hours": "9 to 5"}

PLAIN = """
import pytest

@pytest.fixture
def answer(example, llm):
    return llm.complete(example.input["q"])
"""

BATCHED = """
from pytest_llmeval import batched

@batched
async def answer(example, llm, llmeval_draw, llmeval_record):
    assert llmeval_draw == (llmeval_record.draw or 1)
    return await llm.aio.complete(example.input["q"])
"""

TESTS = f"""
import pytest

RIGHT = {RIGHT!r}

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, answer, llmeval_draw, llmeval_record):
    assert llmeval_draw == (llmeval_record.draw or 1)  # 1 when drawn once
    assert answer == RIGHT[example.input["q"]]
"""


README = Path(__file__).parent.parent / "README.md"


def readme_block(after: str) -> list[str]:
    """The first output block after ``after`` in the README's noise section."""
    text = README.read_text()
    section = text[text.index("## Noise: repeated draws") :]
    lead = r"\s+".join(map(re.escape, after.split()))
    found = re.search(lead + r".*?```\n(.*?)```", section, re.S)
    assert found, f"no output block after {after!r}"
    return found.group(1).splitlines()


class Script:
    """Replies per question in order: a refund question's from NOISY, the others always
    right. Under xdist the draws ask in another order, but each question is given the
    same replies, so what a run counts does not depend on it."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> str:
        question = request["messages"][-1]["content"]
        with self.lock:
            n = self.asked[question]
            self.asked[question] += 1
        if question.startswith("refund"):
            return NOISY[n % len(NOISY)]
        return RIGHT[question]


@pytest.fixture
def suite(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {fake_openai.base_url}\nllmeval_model = app\n"
        "llmeval_retry_base_delay = 0.01\nllmeval_min_pass_rate = distribution:0.5\n"
    )
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    pytester.makepyfile(test_suite=TESTS)
    return pytester


def summary(result: pytest.RunResult) -> list[str]:
    """The summary's table counts (timings differ), verdicts and flaky examples."""
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "llmeval summary" in line)
    shown = []
    for line in lines[start + 1 :]:
        words = line.split()
        if line.startswith("partition "):
            shown.append(" ".join(words[:11]))  # up to pass@k
        elif len(words) > 10 and words[1].isdigit():  # a partition's row
            shown.append(" ".join(words[:10]))
        elif line.startswith(("golden rule", "distribution (", "flaky", "  golden-", "  dist-")):
            shown.append(line)
        elif line.startswith("llmeval: "):
            shown.append(line)
            break
    return shown


def test_a_noisy_golden_example_is_flaky_and_fails_the_golden_rule_under_all(
    suite: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    outcomes = []
    for conftest, args in (
        (PLAIN, ()),
        (PLAIN, ("-n", "2")),
        (BATCHED, ()),
        (BATCHED, ("-n", "2")),
    ):
        fake_openai.reply = Script()
        fake_openai.reset_counters()
        suite.makeconftest(conftest)
        result = suite.runpytest(
            "--llmeval-repeat", "5", "--llmeval-cache", "off", "--llmeval-report", "r.json", *args
        )
        outcomes.append((result.ret, summary(result)))
        assert fake_openai.total_requests == 15  # 3 examples x 5 draws, each its own call
    ret, shown = outcomes[0]
    assert ret == pytest.ExitCode.TESTS_FAILED
    assert shown[:3] == [
        "partition cases passed failed errors skipped pass rate draws pass^k pass@k",
        "golden 2 1 1 0 0 50.0% 5 50.0% 100.0%",
        "distribution 1 1 0 0 0 100.0% 5 0.0% 100.0%",
    ], shown
    assert shown[3:7] == [
        "golden rule: FAIL, 1 of 2 golden examples did not pass: golden-refund-01",
        "distribution (soft): PASS, pass rate 100.0% (1/1 examples) >= minimum 50.0%",
        "flaky examples (their draws disagree): 2",
        "  golden-refund-01: 3 of 5 draws passed (golden, fails the gate)",
    ], shown
    assert "  dist-refund-02: 3 of 5 draws passed (distribution, a warning)" in shown
    report = json.loads(suite.path.joinpath("r.json").read_text())
    flaky = {f["example_id"]: (f["passed"], f["draws"], f["mode"]) for f in report["flaky"]}
    # golden-hours-01 answers the same each time: never flaky
    assert flaky == {"golden-refund-01": (3, 5, "fail"), "dist-refund-02": (3, 5, "warn")}
    records = [r for r in report["records"] if r["example_id"] == "golden-hours-01"]
    assert sorted(r["draw"] for r in records) == [1, 2, 3, 4, 5]
    assert report["partitions"]["golden"]["draws"] == 5
    # The same summary serially and under xdist, plain and batched, as the README shows.
    assert all(o == outcomes[0] for o in outcomes), outcomes
    assert shown == readme_block("drawn five times"), shown


def test_draws_have_their_own_ids_and_cache_keys_and_replay_from_the_cache(
    suite: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    suite.makeconftest(PLAIN)
    fake_openai.reply = Script()
    result = suite.runpytest("--llmeval-repeat", "golden:3", "-v")
    result.stdout.fnmatch_lines(
        [
            "*test_answer?golden-refund-01-r1? PASSED*",
            "*test_answer?golden-refund-01-r3? *",
            "*test_answer?dist-refund-02? PASSED*",  # drawn once: its plain id
        ]
    )
    assert fake_openai.total_requests == 7  # 2 golden examples x 3 draws, 1 distribution
    fake_openai.reset_counters()
    again = suite.runpytest("--llmeval-repeat", "golden:3", "--llmeval-cache", "replay")
    assert fake_openai.total_requests == 0
    assert summary(again) == summary(result)
    # -k selects draws like any test
    one = suite.runpytest("--llmeval-repeat", "golden:3", "-k", "r2", "--llmeval-cache", "replay")
    one.assert_outcomes(passed=1, failed=1)  # the refund's second reply is wrong


@pytest.mark.parametrize(
    ("reducer", "verdict"),
    [
        ("all", "golden rule: FAIL"),
        ("majority", "golden rule: PASS"),  # 3 of 5
        ("any", "golden rule: PASS"),
    ],
)
def test_the_reducer_decides_an_example_over_its_draws(
    suite: pytest.Pytester, fake_openai: FakeOpenAIServer, reducer: str, verdict: str
) -> None:
    suite.makeconftest(PLAIN)
    suite.path.joinpath("data.jsonl").write_text(json.dumps(EXAMPLES[0]) + "\n")
    fake_openai.reply = Script()  # draws 1..5 get the first five: 3 of 5 right
    result = suite.runpytest(
        "--llmeval-repeat", "5", f"--llmeval-reducer=golden:{reducer}", "--llmeval-flaky=warn"
    )
    result.stdout.fnmatch_lines(
        [f"{verdict}*", "*golden-refund-01: 3 of 5 draws passed (golden, a warning)"]
    )
    assert (result.ret == pytest.ExitCode.OK) == ("PASS" in verdict)


def test_flaky_fail_fails_a_case_its_reducer_would_pass(
    suite: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    suite.makeconftest(PLAIN)
    suite.path.joinpath("data.jsonl").write_text(json.dumps(EXAMPLES[0]) + "\n")
    fake_openai.reply = Script()
    result = suite.runpytest("--llmeval-repeat", "5", "--llmeval-reducer=golden:majority")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "golden rule: FAIL, 1 of 1 golden examples did not pass: golden-refund-01",
            "*golden-refund-01: 3 of 5 draws passed (golden, fails the gate)",
            "llmeval: FAIL (golden rule)",
        ]
    )


MEAN_TESTS = """
import pytest
from pytest_llmeval import assert_metric  # noqa: F401

@pytest.mark.llmeval(dataset="data.jsonl", repeat=4)
def test_answer(example, answer, llmeval_record):
    score = 1.0 if answer == "30 days" else 0.0
    llmeval_record.metrics.append(
        {"name": "right", "score": score, "threshold": 0.6, "passed": score >= 0.6, "details": {}}
    )
    assert score >= 0.6
"""


def test_mean_takes_each_metrics_mean_over_the_draws_and_the_marker_sets_the_draws(
    suite: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    suite.makeconftest(PLAIN)
    suite.makepyfile(
        test_suite=MEAN_TESTS.replace(
            "from pytest_llmeval import assert_metric  # noqa: F401\n", ""
        )
    )
    suite.path.joinpath("data.jsonl").write_text(
        json.dumps({**EXAMPLES[2], "partition": "distribution"}) + "\n"
    )
    fake_openai.reply = Script()  # 4 draws: right, right, wrong, right: mean 0.75 >= 0.6
    result = suite.runpytest("--llmeval-report", "r.json")
    result.stdout.fnmatch_lines(["distribution (soft): PASS, pass rate 100.0% (1/1 examples)*"])
    report = json.loads(suite.path.joinpath("r.json").read_text())
    assert report["partitions"]["distribution"]["metric_means"] == {"right": 0.75}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--llmeval-repeat=0", "llmeval_repeat: '0' is not a whole number >= 1"),
        ("--llmeval-repeat=golden:two", "llmeval_repeat: 'two' is not a whole number >= 1"),
        ("--llmeval-repeat=gold:2", "llmeval_repeat: unknown partition 'gold'"),
        ("--llmeval-reducer=golden:most", "llmeval_reducer: unknown value 'most'"),
        ("--llmeval-flaky=loud", "llmeval_flaky: unknown value 'loud'"),
    ],
)
def test_a_bad_repeat_option_is_a_usage_error(
    suite: pytest.Pytester, option: str, message: str
) -> None:
    result = suite.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_a_run_without_repeats_keeps_its_ids_and_cache_keys(
    suite: pytest.Pytester, fake_openai: FakeOpenAIServer, tmp_path: Path
) -> None:
    suite.makeconftest(PLAIN)
    fake_openai.reply = Script()
    first = suite.runpytest("-v")
    first.stdout.fnmatch_lines(["*test_answer?golden-refund-01? PASSED*"])
    assert "draws" not in "\n".join(first.outlines)
    # draw 1 of a repeated run asks what the plain run asked: its replies are cached
    fake_openai.reset_counters()
    suite.runpytest("--llmeval-repeat", "2")
    assert fake_openai.total_requests == 3  # draw 2 of each example only


def test_auto_plans_the_draws_from_the_baseline_and_the_header_shows_the_plan(
    suite: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    suite.makeconftest(PLAIN)
    # Eight refund questions, each right 3 times in its first 5: noisy enough that the
    # plan wants more draws than one.
    noisy = [
        {"id": f"golden-refund-{i:02}", "partition": "golden", "input": {"q": f"refund {i}"}}
        for i in range(8)
    ]
    suite.path.joinpath("data.jsonl").write_text("".join(json.dumps(e) + "\n" for e in noisy))
    suite.makepyfile(test_suite=TESTS.replace('RIGHT[example.input["q"]]', '"30 days"'))
    fake_openai.reply = Script()
    saved = suite.runpytest("--llmeval-repeat", "5", "--llmeval-save-baseline", "base.json")
    assert suite.path.joinpath("base.json").exists(), saved.outlines
    planned = suite.runpytest(
        "-o", "llmeval_repeat=auto", "--llmeval-baseline", "base.json", "-v", "-p", "no:randomly"
    )
    out = "\n".join(planned.outlines)
    assert "llmeval plan:" in out
    header = out[: out.index("collected")]
    draws = next(line for line in header.splitlines() if "draws per example:" in line)
    # What the header says is what the run does: count the draws of the golden refund.
    chosen = int(draws.split("golden ")[1].split(",")[0])
    assert chosen > 1, header
    ran = {
        line.split("[")[1].split("]")[0]
        for line in planned.outlines
        if line.startswith("test_suite.py::") and "golden-refund-01" in line
    }
    assert len(ran) == chosen, (draws, ran)
    # The same plan from the command line (its lines, as the header indents them).
    cli = suite.run(sys.executable, "-m", "pytest_llmeval.cli", "plan", "base.json")
    assert cli.ret == 0
    planned_lines = [
        line
        for line in header[header.index("llmeval plan:") :].splitlines()[1:]
        if line.startswith("  ")
    ]
    assert [line.strip() for line in planned_lines] == [line.strip() for line in cli.outlines[1:]]


def test_auto_without_a_baseline_is_a_usage_error(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-o", "llmeval_repeat=auto")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llmeval_repeat = auto plans the draws from a baseline*"])


def test_the_header_names_the_draws(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--llmeval-repeat", "golden:3", "--co")
    result.stdout.fnmatch_lines(["llmeval: *draws: golden:3*"])
