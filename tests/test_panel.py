"""Judge panels (``llmeval_judge_models``): Krippendorff's alpha against the textbook's
worked example, a panel's rubric mean and pairwise majority with each judge's answer in
the record, a judge that fails missing from one verdict, and a three-judge panel run on
the fake server (one judge always answers 5): its summary and report serially and under
xdist, replayed from the cache with no request, and REFUSED against a baseline judged
by another panel."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Imported before the in-process runs: pytester drops the modules a run imports, and
# numpy cannot be imported twice in one process.
import pytest_llmeval.stats.regression  # noqa: F401
from pytest_llmeval.agreement import krippendorff_alpha
from pytest_llmeval.client import LLMCallError
from pytest_llmeval.errors import ConfigError
from pytest_llmeval.judge import JudgeResult
from pytest_llmeval.records import Record, bind
from pytest_llmeval.runs.panel import panel_lines
from pytest_llmeval.settings import build
from pytest_llmeval.testing import FakeOpenAIServer

# --- Krippendorff's alpha --------------------------------------------------------------

N = None
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the example with
# missing values: 4 observers, 12 units. His results: nominal 0.743, ordinal 0.815,
# interval 0.849 (the PyPI package `krippendorff` gives the same to 1e-15).
TEXTBOOK = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    "C": [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
}
UNITS = list(zip(*TEXTBOOK.values(), strict=True))


@pytest.mark.parametrize(
    ("metric", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_alpha_of_the_textbook_example(metric: Any, expected: float) -> None:
    assert krippendorff_alpha(UNITS, metric) == pytest.approx(expected, abs=5e-4)


def test_alpha_is_one_for_perfect_agreement_and_undefined_without_variation() -> None:
    assert krippendorff_alpha([(1, 1), (2, 2), (3, None, 3)], "ordinal") == 1.0
    assert krippendorff_alpha([("a", "a"), ("b", "b")], "nominal") == 1.0
    assert math.isnan(krippendorff_alpha([(5, 5), (5, 5)], "ordinal"))  # nothing to expect
    assert math.isnan(krippendorff_alpha([(1, None), (None, 2)], "ordinal"))  # no pairs


def test_alpha_ignores_units_with_one_value_and_only_the_order_counts_when_ordinal() -> None:
    base = krippendorff_alpha(UNITS, "ordinal")
    assert krippendorff_alpha([*UNITS, (4, N, N, N)], "ordinal") == base
    # An order-preserving recoding changes nothing on the ordinal level, but the interval.
    recoded = [tuple(None if v is None else v**3 for v in u) for u in UNITS]
    assert krippendorff_alpha(recoded, "ordinal") == pytest.approx(base)
    assert krippendorff_alpha(recoded, "interval") != pytest.approx(
        krippendorff_alpha(UNITS, "interval")
    )


def test_a_judge_that_always_gives_5_disagrees_systematically() -> None:
    # The run below: judge-a always 5, judge-b and judge-c scripted (value from the
    # `krippendorff` package: -0.1875).
    units = [(5, 4, 4), (5, 3, 4), (5, 4, 3), (5, 2, 2)]
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(-0.1875)
    with pytest.raises(ValueError, match="unknown metric 'ratio'"):
        krippendorff_alpha(units, "ratio")  # type: ignore[arg-type]


# --- the panel in code ------------------------------------------------------------------

ASK: dict[str, Any] = {"task": "Answer billing questions", "criteria": ["quotes the price"]}
PANEL = ("judge-a", "judge-b", "judge-c")


def rubric(score: int) -> str:
    return json.dumps({"reasoning": f"I give {score}", "score": score})


def by_model(replies: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
    """A server reply per judge model (a string, or a callable of the request)."""

    def reply(request: dict[str, Any]) -> str:
        answer = replies[request["model"]]
        return str(answer(request) if callable(answer) else answer)

    return reply


def test_a_panel_scores_with_every_judge_and_keeps_each_answer(
    make_judge: Any, fake_openai: FakeOpenAIServer
) -> None:
    judge = make_judge(
        by_model({"judge-a": rubric(5), "judge-b": rubric(3), "judge-c": rubric(2)}),
        models=PANEL,
        n_samples=2,
    )
    record = Record(nodeid="t", example_id="e", partition="golden")
    previous = bind(record)
    try:
        result = judge.score("The Team plan is $29.", **ASK)
    finally:
        bind(previous)
    assert result.mean == pytest.approx((5 + 3 + 2) / 3)
    assert result.scores == [5, 5, 3, 3, 2, 2] and result.stable
    assert [(p["model"], p["mean"], p["scores"]) for p in result.panel] == [
        ("judge-a", 5.0, [5, 5]),
        ("judge-b", 3.0, [3, 3]),
        ("judge-c", 2.0, [2, 2]),
    ]
    assert result.reasoning == "I give 3"  # the judge closest to the panel's mean
    assert sorted(b["model"] for b in fake_openai.bodies) == sorted(PANEL * 2)
    (verdict,) = record.judge
    assert verdict["kind"] == "rubric" and verdict["model"] == "judge-a"
    assert [p["model"] for p in verdict.get("panel", [])] == list(PANEL)
    assert record.usage.keys() == set(PANEL)  # each judge's calls, on the test's record


def test_a_panel_awaited_gives_the_same_verdicts(make_judge: Any) -> None:
    def answer(score: int) -> str:  # a rubric verdict and a preference in one reply
        return json.dumps({"reasoning": "both", "score": score, "winner": "tie"})

    judge = make_judge(
        by_model({"judge-a": answer(5), "judge-b": answer(3), "judge-c": answer(4)}),
        models=PANEL,
    )

    async def both() -> tuple[Any, Any]:
        return await judge.ascore("The Team plan is $29.", **ASK), await judge.acompare(
            "the new answer", "the old answer", **ASK
        )

    scored, compared = asyncio.run(both())
    assert scored.mean == 4.0 and [p["mean"] for p in scored.panel] == [5.0, 3.0, 4.0]
    assert compared.winner == "tie" and [p["winner"] for p in compared.panel] == ["tie"] * 3


def test_the_panel_is_versioned_by_its_judges_in_any_order(make_judge: Any) -> None:
    abc = make_judge(rubric(4), models=PANEL)
    cba = make_judge(rubric(4), models=PANEL[::-1])
    abd = make_judge(rubric(4), models=("judge-a", "judge-b", "judge-d"))
    assert abc.prompt_sha256() == cba.prompt_sha256() != abd.prompt_sha256()
    assert abc.prompt_sha256("pairwise") == cba.prompt_sha256("pairwise")
    assert abc.prompt_sha256() != make_judge(rubric(4), model="judge-a").prompt_sha256()
    # Grounding is the first judge's alone.
    assert abc.prompt_sha256("grounding") == abc.panel[0].prompt_sha256("grounding")
    assert abc.models == PANEL and abc.model == "judge-a"


def test_a_judge_that_fails_is_missing_from_that_verdict_only(
    make_judge: Any, fake_openai: FakeOpenAIServer
) -> None:
    judge = make_judge(
        by_model({"judge-a": rubric(5), "judge-b": "I cannot judge this.", "judge-c": rubric(3)}),
        models=PANEL,
    )
    result = judge.score("The Team plan is $29.", **ASK)
    assert result.mean == 4.0 and result.scores == [5, 3]
    missing = result.panel[1]
    assert missing["mean"] is None and missing["scores"] == [None]
    (failure,) = result.failures
    assert failure.startswith("judge-b sample 0: reply: Invalid JSON")


def test_a_panel_with_no_verdict_is_the_judge_error(make_judge: Any) -> None:
    judge = make_judge("no verdict here", models=PANEL)
    record = Record(nodeid="t", example_id="e", partition="golden")
    previous = bind(record)
    try:
        with pytest.raises(LLMCallError) as info:
            judge.score("The Team plan is $29.", **ASK)
    finally:
        bind(previous)
    assert info.value.kind == "judge"
    assert "no judge of the panel (judge-a, judge-b, judge-c) gave a valid verdict" in str(
        info.value
    )
    assert "; judge-c sample 0: reply: Invalid JSON" in str(info.value)
    assert record.judge[0].get("mean") is None  # recorded, as a single judge's is


def preference(winner: Callable[[str, str], str]) -> Callable[[dict[str, Any]], str]:
    """A pairwise reply choosing by the two responses shown, A first."""

    def reply(request: dict[str, Any]) -> str:
        content = request["messages"][-1]["content"]
        a, b = re.findall(r"<response_[ab]>\n(.*?)\n</response_[ab]>", content, re.S)
        return json.dumps({"reasoning": "compared", "winner": winner(a, b)})

    return reply


FIRST = preference(lambda a, b: "A")  # position-biased: a tie in both orders
NEW = preference(lambda a, b: "A" if "new" in a else "B")
OLD = preference(lambda a, b: "A" if "old" in a else "B")


@pytest.mark.parametrize(
    ("judges", "winner", "biased"),
    [
        ({"judge-a": FIRST, "judge-b": NEW, "judge-c": NEW}, "a", False),
        ({"judge-a": FIRST, "judge-b": NEW, "judge-c": OLD}, "tie", False),
        ({"judge-a": FIRST, "judge-b": FIRST, "judge-c": OLD}, "tie", True),
        ({"judge-a": OLD, "judge-b": OLD, "judge-c": NEW}, "b", False),
    ],
    ids=["majority-a", "no-majority", "mostly-biased", "majority-b"],
)
def test_a_panel_prefers_by_majority(
    make_judge: Any, judges: dict[str, Any], winner: str, biased: bool
) -> None:
    judge = make_judge(by_model(judges), models=PANEL)
    result = judge.compare("the new answer", "the old answer", **ASK)
    assert (result.winner, result.position_bias) == (winner, biased)
    verdict = result.to_json()
    assert [p["model"] for p in verdict.get("panel", [])] == list(PANEL)
    assert verdict["position_bias"] is biased


def test_a_pairwise_judge_that_fails_is_missing(make_judge: Any) -> None:
    judge = make_judge(by_model({"judge-a": "?", "judge-b": NEW, "judge-c": NEW}), models=PANEL)
    result = judge.compare("the new answer", "the old answer", **ASK)
    assert result.winner == "a" and result.panel[0]["winner"] is None
    assert len(result.panel[0]["failures"]) == 2  # both orders


def test_grounding_is_the_first_judges(make_judge: Any, fake_openai: FakeOpenAIServer) -> None:
    claims = json.dumps({"claims": [{"claim": "Team is $29", "label": "SUPPORTED"}]})
    judge = make_judge(claims, models=PANEL)
    result = judge.check_grounding("Team is $29.", "The Team plan costs $29.")
    assert result.model == "judge-a" and [b["model"] for b in fake_openai.bodies] == ["judge-a"]


@pytest.mark.parametrize("models", [("judge-a",), ("a", "a"), ("a", "")])
def test_a_panel_needs_two_distinct_models(make_judge: Any, models: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="judge panel"):
        make_judge(rubric(4), models=models)


@pytest.mark.parametrize("raw", ["judge-a", "judge-a,judge-a", "judge-a,,judge-b", "a b c"])
def test_the_option_needs_two_distinct_models(raw: str) -> None:
    values = {"judge_models": raw}
    with pytest.raises(ConfigError) as info:
        build(lambda name: values.get(name, _default(name)), lambda name: None, **_ROOT)
    assert str(info.value).startswith(f"llmeval_judge_models: {raw!r} is not a judge panel")


def test_the_option_reads_a_comma_separated_list() -> None:
    values = {"judge_models": " judge-a, judge-b ,judge-c"}
    settings = build(lambda name: values.get(name, _default(name)), lambda name: None, **_ROOT)
    assert settings.judge_models == PANEL
    assert build(_default, lambda name: None, **_ROOT).judge_models == ()


def _default(name: str) -> str:
    from pytest_llmeval.settings import OPTIONS

    return next(default for option, _, default in OPTIONS if option == name)


_ROOT: dict[str, Any] = {"rootpath": Path("."), "datasets_dir": ""}


def test_panel_lines_of_records() -> None:
    def judged(model: str, score: int | None) -> JudgeResult:
        mean = math.nan if score is None else float(score)
        return JudgeResult(mean, [score], 0.0, True, "", [], [], model, "sha")

    record = Record(nodeid="t", example_id="e", partition="golden")
    panel = [judged("x", 4).panel_entry(True), judged("y", None).panel_entry(False)]
    verdict = JudgeResult(4.0, [4, None], 0.0, True, "", [], [], "x", "sha", panel=panel)
    record.judge.append(verdict.to_json())
    assert panel_lines([record]) == [
        "judge panel: 2 judges over 1 rubric verdicts, Krippendorff's alpha (ordinal) "
        "undefined; x mean 4.00; y mean - (1 missing)"
    ]
    assert panel_lines([Record(nodeid="t", example_id="e", partition="golden")]) == []


# --- a three-judge panel run --------------------------------------------------------------

SUITE = """
import pytest
from pytest_llmeval import assert_judge, assert_preferred

ASK = {"task": "Answer billing questions", "criteria": ["quotes the right price"]}

@pytest.mark.llmeval(dataset="questions.jsonl")
def test_answer(example, judge):
    assert_judge(judge, f"answer to {example.id}", **ASK)

@pytest.mark.llmeval(dataset="questions.jsonl")
def test_preferred(example, judge):
    assert_preferred(judge, f"new answer to {example.id}", f"old answer to {example.id}", **ASK)
"""
IDS = ["q1", "q2", "q3", "q4"]
# judge -> example -> score: judge-a always answers 5.
SCORES = {
    "judge-a": dict.fromkeys(IDS, 5),
    "judge-b": {"q1": 4, "q2": 3, "q3": 4, "q4": 2},
    "judge-c": {"q1": 4, "q2": 4, "q3": 3, "q4": 2},
    "judge-d": {"q1": 4, "q2": 4, "q3": 3, "q4": 2},
}


def scripted_panel(request: dict[str, Any]) -> str:
    """Rubric: each judge's scripted score. Pairwise: judge-a prefers whichever it is
    shown first, judge-b the new answer, judge-c and judge-d the new one but on q4."""
    content = request["messages"][-1]["content"]
    model = request["model"]
    if "<response_a>" not in content:
        example = re.search(r"answer to (q\d)", content)
        assert example
        return rubric(SCORES[model][example.group(1)])
    a = re.search(r"<response_a>\n(\w+) answer to (q\d)", content)
    assert a
    wants_new = model == "judge-b" or (model != "judge-a" and a.group(2) != "q4")
    first = model == "judge-a" or (a.group(1) == "new") == wants_new
    return json.dumps({"reasoning": "compared", "winner": "A" if first else "B"})


Run = Callable[..., pytest.RunResult]


@pytest.fixture
def run(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> Run:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_openai.reply = scripted_panel
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {fake_openai.base_url}\n"
        "llmeval_judge_models = judge-a,judge-b,judge-c\n"
    )
    rows = [{"id": i, "partition": "distribution", "input": {"q": i}} for i in IDS]
    pytester.path.joinpath("questions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    pytester.makepyfile(test_questions=SUITE)
    return pytester.runpytest


RUBRIC_LINE = (
    "judge panel: 3 judges over 4 rubric verdicts, Krippendorff's alpha (ordinal) -0.19; "
    "judge-a mean 5.00; judge-b mean 3.25; judge-c mean 3.25"
)
PAIRWISE_LINE = (
    "judge panel: 3 judges over 4 pairwise verdicts, Krippendorff's alpha (nominal) -0.27; "
    "judge-a candidate 0, baseline 0, tie 4; judge-b candidate 4, baseline 0, tie 0; "
    "judge-c candidate 3, baseline 1, tie 0"
)


def readme_section() -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("### Judge panels")
    return readme[start : readme.index("\n#", start + 1)]


def readme_block() -> list[str]:
    """The output block of the README's section on judge panels."""
    block = re.search(r"```\n(judge: .*?)```", readme_section(), re.S)
    assert block
    return block.group(1).splitlines()


def panel_block(result: pytest.RunResult) -> list[str]:
    """The summary's judge lines, but the endpoint's formats (its port changes)."""
    return [x for x in result.outlines if x.startswith(("judge: ", "pairwise: ", "judge panel:"))]


def test_a_three_judge_panel_serially_and_under_xdist(
    run: Run, pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    serial = run("--llmeval-report=report.json")
    serial.assert_outcomes(passed=8)
    assert fake_openai.total_requests == 4 * 3 + 4 * 3 * 2  # each judge: rubric, two orders
    block = panel_block(serial)
    assert block == [
        "judge: 4 rubric verdicts, mean 3.83, 0 unstable",
        "pairwise: 4 comparisons, candidate preferred 3, baseline 0, tie 1; position bias "
        "0 of 4 (0%), counted as ties",
        RUBRIC_LINE,
        PAIRWISE_LINE,
    ]
    assert block == readme_block()  # the README shows this run's lines
    report = json.loads(pytester.path.joinpath("report.json").read_text())
    panel = report["judge_panel"]
    assert panel["judges"] == ["judge-a", "judge-b", "judge-c"]
    assert panel["rubric"]["alpha"] == pytest.approx(-0.1875)
    assert panel["rubric"]["metric"] == "ordinal" and panel["rubric"]["verdicts"] == 4
    assert [j["mean"] for j in panel["rubric"]["judges"]] == [5.0, 3.25, 3.25]
    assert panel["pairwise"]["alpha"] == pytest.approx(-0.26923, abs=1e-5)
    records = {(r["nodeid"].split("[")[0], r["example_id"]): r for r in report["records"]}
    (q4,) = records["test_questions.py::test_answer", "q4"]["judge"]
    assert q4["mean"] == 3.0 and [p["mean"] for p in q4["panel"]] == [5.0, 2.0, 2.0]
    (tie,) = records["test_questions.py::test_preferred", "q4"]["judge"]
    assert tie["winner"] == "tie" and [p["winner"] for p in tie["panel"]] == ["tie", "a", "b"]

    parallel = run("-n", "2", "--llmeval-report=parallel.json")
    parallel.assert_outcomes(passed=8)
    assert panel_block(parallel) == block
    again = json.loads(pytester.path.joinpath("parallel.json").read_text())
    assert again["judge_panel"] == panel


def test_a_panel_run_replays_from_the_cache_without_a_request(
    run: Run, fake_openai: FakeOpenAIServer
) -> None:
    first = run()
    first.assert_outcomes(passed=8)
    fake_openai.reset_counters()
    replayed = run("--llmeval-cache=replay")
    replayed.assert_outcomes(passed=8)
    assert fake_openai.total_requests == 0
    assert panel_block(replayed) == panel_block(first)


def test_a_changed_panel_or_one_judge_is_refused_and_a_reordered_panel_is_not(run: Run) -> None:
    assert run("--llmeval-save-baseline=baseline.json").ret == pytest.ExitCode.OK
    changed = run(
        "--llmeval-baseline=baseline.json", "--llmeval-judge-models=judge-a,judge-b,judge-d"
    )
    assert changed.ret == pytest.ExitCode.TESTS_FAILED
    changed.stdout.fnmatch_lines(
        ["regression: BLOCK, judge[distribution] REFUSED (the judge model and judge prompt differ)"]
    )
    reordered = run(
        "--llmeval-baseline=baseline.json", "--llmeval-judge-models=judge-c,judge-b,judge-a"
    )
    assert reordered.ret == pytest.ExitCode.OK
    assert not any("REFUSED" in line for line in reordered.outlines)
    # A baseline of one judge (the panel's first) is another judge too.
    single = ("--llmeval-judge-models=", "--llmeval-judge-model=judge-a")
    assert run("--llmeval-save-baseline=single.json", *single).ret == pytest.ExitCode.OK
    panel = run("--llmeval-baseline=single.json")
    assert panel.ret == pytest.ExitCode.TESTS_FAILED
    assert (
        "regression: BLOCK, judge[distribution] REFUSED (the judge model and judge prompt "
        "differ)" in panel.outlines
    )


def test_a_bad_panel_stops_the_run(run: Run) -> None:
    result = run("--llmeval-judge-models=judge-a")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    shown = re.search(r"`(ERROR: llmeval_judge_models: .*?): \.\.\.`", readme_section(), re.S)
    assert shown
    result.stderr.fnmatch_lines([" ".join(shown.group(1).split()) + ": *"])
