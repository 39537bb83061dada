"""The example suite's v2 run (blocked against the v1 baseline) through each view of a
run: its HTML page in headless Chromium, its JUnit XML against pytest's schema, and its
Markdown for the pull request. One run of the suite serves the three (it is the slowest
part of each)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import xmlschema
from test_html_report import Dom, assert_nothing_injected, chromium, dump_dom
from test_junit import SCHEMA, parse

from pytest_llmeval.runs.markdown import MAX_LINES, write_markdown

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class V2:
    folder: Path  # the run's folder: a copy of the example suite, and what it wrote

    @property
    def page(self) -> Path:
        return self.folder / "v2.html"


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> V2:
    folder = tmp_path_factory.mktemp("v2")
    shutil.copytree(
        ROOT / "example_suite",
        folder / "example_suite",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "example_suite", "--prompt-version", "v2"),
            *(f"--llmeval-html={folder / 'v2.html'}", "--junitxml=junit.xml"),
            *("--llmeval-report=v2.json", "-q", "-p", "no:cacheprovider"),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout[-3000:] + run.stderr
    return V2(folder)


def test_the_page_shows_verdicts_a_filtered_table_and_a_drill_down(v2: V2, tmp_path: Path) -> None:
    chromium()
    target = v2.page
    first = Dom(dump_dom(target, profile=tmp_path / "a"))
    assert_nothing_injected(first)
    verdicts = first.text("verdicts")
    assert "golden rule: FAIL, 2 of 7 golden examples did not pass" in verdicts
    assert "regression: BLOCK, judge[distribution] REGRESSION" in verdicts
    assert "REGRESSION" in first.text("regression")
    changed = first.text("changed")
    assert "passed in the baseline, fail now" in changed and "this run: failed" in changed

    view = "#status=failed&partition=golden&metric=judge&view=records"
    filtered = Dom(dump_dom(target, view, profile=tmp_path / "b"))
    assert filtered.text("count").startswith("showing 2 of 2 records")
    rows = filtered.text("rows")
    assert "golden-annual-discount-01" in rows and "judge 1.000 / 4.000" in rows

    index = int(
        re.findall(r'data-index="(\d+)"', dump_dom(target, view, profile=tmp_path / "c"))[0]
    )
    drill = Dom(dump_dom(target, f"{view}&open={index}", profile=tmp_path / "d"))
    text = drill.text(f"record-{index}")
    assert "rubric by judge-demo-1: mean 1.00" in text
    assert "breaks the support persona" in text  # the judge's reasoning
    assert "Trajectory (" in text and "retrieval search" in text
    assert "expected output" in text and '"question"' in text  # the example's, recorded


def test_the_junit_xml_validates_and_carries_the_eval(v2: V2) -> None:
    tmp_path = v2.folder
    schema = xmlschema.XMLSchema(str(SCHEMA))
    xml = tmp_path / "junit.xml"
    schema.validate(str(xml))
    props, cases = parse(xml)
    assert props["llmeval"] == (
        "FAIL (golden rule; regression (hard); adversarial (soft); distribution (soft); "
        "regression BLOCK)"
    )
    assert props["llmeval.gate.golden"].startswith("golden rule: FAIL, 2 of 7 golden examples")
    assert props["llmeval.gate.regression"].startswith("regression (hard): FAIL, 8 of 8")
    assert props["llmeval.regression"] == (
        "regression: BLOCK, judge[distribution] REGRESSION, tool_calls[regression] REGRESSION"
    )
    assert props["llmeval.regression.judge.distribution"].startswith(
        "REGRESSION: Candidate is worse by 2.31"
    )
    assert set(props) >= {f"llmeval.pass_rate.{p}" for p in ("golden", "adversarial")}
    judged = cases["test_judge_rates_the_answer[golden-annual-discount-01]"].find("failure")
    assert judged is not None
    assert judged.get("message", "").startswith("llmeval: judge 1.00 < 4.00\n")
    soft = [
        tc.find("skipped")
        for name, tc in cases.items()
        if name.startswith("test_judge_rates_the_answer[distribution-")
    ]
    messages = [s.get("message", "") for s in soft if s is not None]
    assert messages and all(
        m.startswith("soft failure (distribution): judge; llmeval: judge ") for m in messages
    )
    assert "soft failure (distribution): judge; llmeval: judge 1.00 < 3.00" in messages
    # The README's lines, name = value.
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### JUnit XML") :]
    shown = section[section.index("```text\n") + 8 :]
    pairs = [line.split(" = ", 1) for line in shown[: shown.index("```\n")].splitlines()]
    assert len(pairs) == 5 and all(props[name] == value for name, value in pairs)


def test_the_markdown_fits_and_names_its_blocking_verdicts(v2: V2, tmp_path: Path) -> None:
    # What the controller writes with --llmeval-markdown, from the same run's report.
    document = json.loads(v2.folder.joinpath("v2.json").read_text())
    write_markdown(document, tmp_path / "v2.md", html=None, step_summary=None)
    lines = (tmp_path / "v2.md").read_text().splitlines()
    assert len(lines) < MAX_LINES
    assert lines[0] == "## llmeval: FAIL"
    assert lines[1] == (
        "**Fails the run:** golden rule; regression (hard); adversarial (soft); "
        "distribution (soft); regression BLOCK"
    )
    verdicts = [line for line in lines if line.startswith("- ❌")]
    assert [line.split(":")[0] for line in verdicts] == [
        "- ❌ golden rule",
        "- ❌ regression (hard)",
        "- ❌ adversarial (soft)",
        "- ❌ distribution (soft)",
    ]
    assert (
        "❌ **regression: BLOCK, judge\\[distribution\\] REGRESSION, "
        "tool_calls\\[regression\\] REGRESSION**"
    ) in lines
    changed = next(line for line in lines if line.startswith("- pass → fail: 43 examples"))
    assert "`regression-refund-lookup-first-01`" in changed
    # As the README shows it: the start, the third line (prompt, model, duration) aside.
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Markdown for the pull request") :]
    shown = section[section.index("```markdown\n") + 12 :]
    shown_lines = shown[: shown.index("```\n")].splitlines()
    assert shown_lines == lines[:2] + lines[3 : len(shown_lines) + 1]
    assert "### Failures (113)" in lines and len(lines) == 43
    assert "then the regression table, the 43 examples that went from pass to fail, and 8 of " in (
        section
    )
