"""The run as Markdown for a pull request (runs/markdown.py): the verdicts, the tables, the
changed examples and the top failures, under 60 lines for any run; written by the plugin
to --llmeval-markdown and appended to $GITHUB_STEP_SUMMARY; and the example suite's v2
run, which names its blocking verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# Imported here, not first inside an in-process pytester run (which would drop numpy
# from sys.modules, and numpy cannot be imported twice): the power plan of a run with a
# baseline needs the statistics.
import pytest_llmeval.stats.regression  # noqa: F401
from pytest_llmeval.records import Record, RecordJSON
from pytest_llmeval.runs.compare import compare_runs
from pytest_llmeval.runs.draws import Flaky
from pytest_llmeval.runs.markdown import MAX_LINES, changes, markdown, scores_line, write_markdown
from pytest_llmeval.runs.report import ReportJSON, build_report
from pytest_llmeval.runs.summary import (
    BudgetVerdict,
    aggregate,
    check_partitions,
)
from pytest_llmeval.settings import RegressionSettings, Settings

ROOT = Path(__file__).resolve().parent.parent


def record(
    example_id: str,
    partition: str = "distribution",
    status: str = "passed",
    *,
    test: str = "test_answer",
    score: float | None = None,
    reason: str = "token_f1 0.100 < threshold 0.500",
    soft: bool = False,
    draw: int | None = None,
    output: str = "",
) -> Record:
    shown = example_id if draw is None else f"{example_id}-r{draw}"
    r = Record(example_id, partition, nodeid=f"test_x.py::{test}[{shown}]", draw=draw)
    r.output = output
    if score is not None:
        threshold = 0.5
        r.metrics.append(
            {
                "name": "token_f1",
                "score": score,
                "threshold": threshold,
                "passed": score >= threshold,
                "details": {},
            }
        )
    if status == "failed":
        r.fail("failed", "token_f1", reason)
        r.soft = soft
    elif status == "error":
        r.fail("error", "llm_error:APITimeoutError", "the model call timed out")
    elif status == "not run":
        r.status, r.failure_kind, r.failure_reason = "skipped", "not run", "not run: stopped"
    return r


def report(
    records: list[Record],
    *,
    budgets: list[BudgetVerdict] | None = None,
    flaky: list[Flaky] | None = None,
    regression: dict[str, Any] | None = None,
) -> ReportJSON:
    stats = aggregate(records)
    verdicts = check_partitions(records, stats, Settings())
    run = {"git_commit": "0123456789abcdef", "duration_s": 12.5}
    return build_report(
        records,
        stats,
        verdicts,
        run,
        budgets=budgets or [],
        flaky=flaky or [],
        regression=regression,
    )


def test_a_passing_run_reads_pass_with_its_rules_met() -> None:
    text = markdown(report([record("golden-01", "golden"), record("d-01", score=0.9)]))
    lines = text.splitlines()
    assert lines[0] == "## llmeval: PASS"
    assert "- ✅ golden rule: PASS, all 1 golden examples passed" in lines
    assert "| golden | 1 | 1 | 0 | 0 | 0 | 100.0% |" in lines
    assert "Failures" not in text and "Regression" not in text


def test_two_thousand_failures_fit_in_sixty_lines_and_point_to_the_page() -> None:
    records = [
        record(f"{p}-{i:04d}", p, "failed", score=0.1, soft=p == "distribution")
        for p in ("golden", "regression", "adversarial", "distribution", "extra-a", "extra-b")
        for i in range(340)
    ]
    records += [record(f"err-{i}", "extra-c", "error") for i in range(40)]
    budgets = [BudgetVerdict(p, 20.0, 10.0, strict=True) for p in ("golden", "regression", "x")]
    flaky = [Flaky(f"c{i}", f"flaky-{i}", "distribution", 1, 3, "fail") for i in range(30)]
    document = report(records, budgets=budgets, flaky=flaky)
    text = markdown(document, html=Path("out/run.html"))
    lines = text.splitlines()
    assert len(records) > 2000 and len(lines) < MAX_LINES
    assert lines[0] == "## llmeval: FAIL"
    assert lines[1].startswith("**Fails the run:** golden rule; regression (hard);")
    # The lists are capped, and what they leave out is counted and linked.
    assert "- and 2072 more, see [the HTML report](out/run.html)" in lines
    assert "- and 3 more partition rules, see [the HTML report](out/run.html)" in lines
    assert "- and 2 more time budgets overrun, see [the HTML report](out/run.html)" in lines
    assert "  - ... and 29 more" in lines  # flaky examples
    assert "### Partitions (the first 5 of 7)" in lines
    assert "### Failures (2080)" in lines
    # Errors first (they fail the run whatever the partition), then one failure of each
    # kind and partition, then each example's first.
    failures = lines[lines.index("### Failures (2080)") + 1 : -1]
    assert [line.split("`")[1] for line in failures] == [
        *("err-0", "golden-0000", "regression-0000", "adversarial-0000", "extra-a-0000"),
        *("extra-b-0000", "distribution-0000", "err-1"),
    ]
    assert failures[0] == "- `err-0` (extra-c): the model call timed out"
    assert (
        failures[6]
        == "- `distribution-0000` (distribution, soft): token_f1 0.100 < threshold 0.500"
    )


def test_the_verdicts_name_budgets_flaky_examples_and_an_incomplete_run() -> None:
    records = [
        record("golden-01", "golden"),
        record("golden-02", "golden", "not run"),
        record("d-01", "distribution", "failed", soft=True, score=0.2),
    ]
    budgets = [BudgetVerdict("distribution", 12.0, 10.0, strict=False)]
    flaky = [Flaky("test_x.py::test_answer[d-01]", "d-01", "distribution", 1, 3, "warn")]
    text = markdown(report(records, budgets=budgets, flaky=flaky))
    assert (
        "- ❌ golden rule: FAIL, 1 of 2 golden examples did not pass: golden-02 (not run)" in text
    )
    assert "- ⚠️ time budget: distribution took 12.00s, over its budget of 10s" in text
    assert "- ⚠️ flaky examples (their draws disagree): 1" in text
    assert "  - d-01: 1 of 3 draws passed (distribution, a warning)" in text
    assert "- ❌ run incomplete: stopped; 1 of 3 selected eval tests never ran: golden-02" in text
    # A failure's line: its scores when the reason does not name the metric, then the reason.
    assert "- `d-01` (distribution, soft): token_f1 0.100 < threshold 0.500" in text
    failing = record("d-02", "distribution", "failed", score=0.25, reason="wrong answer")
    text = markdown(report([failing]))
    assert "- `d-02` (distribution): token_f1 0.25 < 0.50 - wrong answer" in text


def test_model_text_is_escaped_and_cut() -> None:
    nasty = '<script>alert(1)</script> "><img onerror=x> $math$ @octocat *b* [l](http://x) | `c`'
    records = [
        record(f"d-{i}", "distribution", "failed", reason=nasty + "\n" + "x" * 50_000)
        for i in range(3)
    ]
    records.append(record("`tick`<b>", "golden", "failed", reason=nasty))
    text = markdown(report(records))
    escaped = (
        '\\<script>alert(1)\\</script> ">\\<img onerror=x> \\$math\\$ \\@octocat \\*b\\* '
        "\\[l\\](http://x) \\| \\`c\\`"
    )
    assert text.count(escaped) == 4  # the three failures' reasons and the golden one's
    for raw in ("<script", "<img", "$math$", "@octocat", "*b*", "[l](", "| `c`"):
        assert raw not in text.replace(escaped, "")
    assert max(len(line) for line in text.splitlines()) < 400  # 50 KB of reason cut
    # An id is inline code (rendered as it is), fenced past its own backticks; in a
    # verdict's text it is escaped.
    assert "- `` `tick`<b> `` (golden): " in text
    assert "golden examples did not pass: \\`tick\\`\\<b>" in text


def test_changed_examples_since_the_baseline() -> None:
    base = [
        record("d-01", score=0.9),
        record("d-02", "distribution", "failed", score=0.1),
        record("d-03", score=0.8, draw=1),
        record("d-03", score=0.8, draw=2),
        record("d-04", score=0.9),
        record("d-05", score=0.9, test="test_other"),
    ]
    now = [
        record("d-01", "distribution", "failed", score=0.2),
        record("d-02", score=0.6),
        record("d-03", score=0.7, draw=1),
        record("d-03", "distribution", "failed", score=0.1, draw=2),
        record("d-04", score=0.85),
        record("d-05", score=0.1, test="test_other", status="failed"),
        record("d-05", score=0.9),  # no such test in the baseline
    ]
    found = changes([r.to_json() for r in base], [r.to_json() for r in now])
    assert found.to_failed == [
        "test_x.py::test_answer[d-01]",
        "test_x.py::test_answer[d-03]",  # one of its draws failed
        "test_x.py::test_other[d-05]",
    ]
    assert found.to_passed == ["test_x.py::test_answer[d-02]"]
    assert [(round(d, 2), c.split("::")[1], m) for d, c, m, _, _ in found.drops] == [
        (0.8, "test_other[d-05]", "token_f1"),
        (0.7, "test_answer[d-01]", "token_f1"),
        (0.4, "test_answer[d-03]", "token_f1"),  # the mean of its draws, 0.8 -> 0.4
        (0.05, "test_answer[d-04]", "token_f1"),
    ]
    text = markdown(report(now), baseline=[r.to_json() for r in base])
    assert "### Changed since the baseline" in text
    assert "- pass → fail: 3 examples (3 tests): `d-01`, `d-03`, `d-05`" in text
    assert "- fail → pass: 1 example (1 test): `d-02`" in text
    assert "- largest score drops: `test_other[d-05]` token_f1 0.90 → 0.10;" in text


def judged(
    scores: list[float], partition: str = "distribution", prompt: str = "p1"
) -> list[RecordJSON]:
    """Records each with a rubric verdict of the one judge."""
    out = []
    for i, score in enumerate(scores):
        r = record(f"{partition}-{i:02d}", partition, "passed" if score >= 3 else "failed")
        r.judge.append(
            {
                "kind": "rubric",
                "mean": score,
                "scores": [int(score)],
                "variance": 0.0,
                "stable": True,
                "reasoning": "",
                "strengths": [],
                "weaknesses": [],
                "model": "judge-1",
                "prompt_sha256": prompt,
                "parser": "judge-verdict/1",
                "scale": [1, 5],
                "failures": [],
                "response_format": None,
                "endpoint": None,
            }
        )
        r.metrics.append(
            {"name": "judge", "score": score, "threshold": 3.0, "passed": score >= 3, "details": {}}
        )
        out.append(r.to_json())
    return out


def test_the_regression_decision_and_its_table() -> None:
    base = judged([5.0] * 20)
    now = judged([2.0] * 20)
    settings = RegressionSettings(gate=(("judge", None),))
    comparisons = compare_runs(base, now, settings)
    regression = {
        "baseline": "/ci/baselines/main.json",
        "blocks": True,
        "fails_session": True,
        "error": None,
        "comparisons": [c.to_json() for c in comparisons],
    }
    records = [Record.from_json(r) for r in now]
    lines = markdown(report(records, regression=regression)).splitlines()
    start = lines.index("### Regression against the baseline main.json")
    assert lines[start + 1] == "❌ **regression: BLOCK, judge\\[distribution\\] REGRESSION**"
    assert lines[start + 2] == "```text"
    assert lines[start + 4].split() == [
        *("metric", "partition", "baseline", "candidate", "Δ", "CI", "p", "adj", "n"),
        *("MDE80", "verdict"),
    ]
    assert lines[start + 5].split()[:4] == ["judge", "distribution", "5.000", "2.000"]
    assert lines[start + 6].startswith("  judge[distribution]: Candidate is worse by 3.00")
    # Not enforced: said as a warning. And a report this version cannot read back: its
    # verdict lines as they were written.
    regression["fails_session"] = False
    text = markdown(report(records, regression=regression))
    assert "⚠️ **regression: would BLOCK (judge\\[distribution\\] REGRESSION);" in text
    regression["comparisons"] = [{"verdict": "REGRESSION", "line": "worse", "future": 1}]
    assert "- worse" in markdown(report(records, regression=regression)).splitlines()
    regression["error"] = "regression: ERROR, cannot compare with the baseline: duplicate"
    assert "❌ **regression: ERROR, cannot compare" in markdown(
        report(records, regression=regression)
    )


def test_every_section_at_its_longest_still_fits() -> None:
    partitions = ("golden", "regression", "adversarial", "distribution", "a", "b", "c")
    base = [r for p in partitions for r in judged([5.0] * 12, p)]
    now = [r for p in partitions for r in judged([1.0] * 12, p)]
    gate = RegressionSettings(gate=(("judge", None), ("pass_rate", None)))
    comparisons = compare_runs(base, now, gate)
    assert len(comparisons) == 8 and all(c.verdict == "REGRESSION" for c in comparisons)
    regression = {
        "baseline": "base.json",
        "blocks": True,
        "fails_session": True,
        "error": None,
        "comparisons": [c.to_json() for c in comparisons],
    }
    records = [Record.from_json(r) for r in now]
    records.append(record("golden-99", "golden", "not run"))
    records.append(record("golden-98", "golden", "error"))
    records.append(record("golden-97", "golden"))
    budgets = [BudgetVerdict(p, 20.0, 10.0, strict=True) for p in partitions]
    flaky = [Flaky(f"c{i}", f"flaky-{i}", "a", 1, 3, "fail") for i in range(30)]
    document = report(records, budgets=budgets, flaky=flaky, regression=regression)
    # Every judged example turned from pass to fail, and one the other way.
    base.append(record("golden-97", "golden", "failed").to_json())
    text = markdown(document, html="run.html", baseline=base)
    lines = text.splitlines()
    assert len(lines) == MAX_LINES - 3, text
    assert "cut to fit" not in text  # each list's cap, not the last resort
    for heading in ("Verdicts", "Partitions", "Regression against", "Changed", "Failures"):
        assert any(line.startswith(f"### {heading}") for line in lines), heading
    assert "and 4 more comparisons, see [the HTML report](run.html)" in lines


def test_scores_line_says_each_failed_metric_against_its_threshold() -> None:
    r = record("d-01", score=0.42)
    r.metrics += [
        {"name": "judge", "score": 2.0, "threshold": 4.0, "passed": False, "details": {}},
        {"name": "similarity", "score": 0.9, "threshold": 0.7, "passed": True, "details": {}},
        {"name": "cost", "score": 0.3, "threshold": 0.1, "passed": False, "details": {}},
        {"name": "custom", "score": None, "threshold": 1.0, "passed": False, "details": {}},
    ]
    assert scores_line(r.metrics) == (
        "token_f1 0.42 < 0.50; judge 2.00 < 4.00; cost 0.30 > 0.10; custom undefined"
    )


def test_write_markdown_writes_the_file_and_appends_to_the_step_summary(tmp_path: Path) -> None:
    document = report([record("golden-01", "golden", "failed")])
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    target = tmp_path / "out" / "run.md"
    write_markdown(document, target, html=None, step_summary=str(summary))
    write_markdown(document, None, html=None, step_summary=str(summary))
    text = target.read_text()
    assert text.startswith("## llmeval: FAIL\n") and text.endswith("\n")
    assert summary.read_text() == "earlier step\n" + (text + "\n") * 2


SUITE = """
import pytest
from pytest_llmeval import assert_token_f1

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    answer = "no idea" if example.id.endswith("3") else example.expected_output
    assert_token_f1(answer, example.expected_output, threshold=0.7)
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_plugin_writes_the_file_and_the_step_summary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str]
) -> None:
    rows = [
        {"id": f"{p}-{i}", "partition": p, "input": {"q": i}, "expected_output": f"answer {p} {i}"}
        for p in ("golden", "distribution")
        for i in range(4)
    ]
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_evals=SUITE)
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = pytester.runpytest("--llmeval-markdown=pr/run.md", *workers)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = (pytester.path / "pr" / "run.md").read_text()
    assert summary.read_text() == text + "\n"
    lines = text.splitlines()
    assert lines[0] == "## llmeval: FAIL"
    assert "- ❌ golden rule: FAIL, 1 of 4 golden examples did not pass: golden-3" in lines
    assert "- `golden-3` (golden): token_f1 0.000 < threshold 0.700 (golden)" in lines
    # Only the step summary: no file of its own.
    summary.unlink()
    pytester.runpytest(*workers)
    assert summary.read_text().startswith("## llmeval: FAIL")


def test_a_run_that_saves_over_its_baseline_still_lists_what_changed_since_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling baseline (the same file read and saved): the changes are against the
    baseline the run read at start-up, not the file it has just written."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    rows = [
        {"id": f"golden-{i}", "partition": "golden", "input": {"q": i}, "expected_output": "a b"}
        for i in range(8)
    ]
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_evals=SUITE.replace('endswith("3")', "endswith(BAD)"))
    pytester.makeconftest("import builtins\nbuiltins.BAD = ('3',)\n")
    pytester.runpytest("--llmeval-save-baseline=b.json")
    pytester.makeconftest("import builtins\nbuiltins.BAD = ('1', '2', '3')\n")
    pytester.runpytest(
        "--llmeval-baseline=b.json", "--llmeval-save-baseline=b.json", "--llmeval-markdown=r.md"
    )
    text = (pytester.path / "r.md").read_text()
    assert "pass → fail: 2 examples" in text, text
