"""The run's page (--llmeval-html): written by every run (failed, interrupted, under
xdist), self-contained, every model and dataset text escaped, and what a person looks
for (verdicts, the filtered table, a drill-down) is there in the DOM that headless
Chromium builds from it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.html.kit import esc, json_data, page, table
from pytest_llmeval.html.report import changes, intern_strings, render, write_html

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "apt-get install -y chromium"  # Debian's package; nothing downloads a browser

EVIL = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
MATH = "$27 vs $29$ and $math$"
LONG = ("fifty kilobytes of answer " * 2100)[:51_200] + "THE END"


# --- Chromium --------------------------------------------------------------------------


def chromium() -> str:
    """Debian's chromium, or a skip naming the install command (a failure under CI)."""
    found = shutil.which("chromium")
    if found is None:
        message = f"the HTML page's browser tests need Chromium: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: these tests must run there)", pytrace=False)
        pytest.skip(message)
    return found


def test_without_chromium_it_skips_with_the_install_command_but_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=re.escape(INSTALL)):
        chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        chromium()


def dump_dom(path: Path, fragment: str = "", *, profile: Path) -> str:
    """The DOM after the page's script ran, as headless Chromium serialises it."""
    done = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",  # its own: tests run side by side under xdist
            "--dump-dom",
            path.as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Dom(HTMLParser):
    """The elements of a serialised DOM (tag, attributes) and the text under each id."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.elements.append((tag, found))
        if tag not in {"br", "img", "input", "meta", "link", "hr", "col", "wbr"}:
            self._open.append((tag, found.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident:
                self.texts.setdefault(ident, []).append(data)

    def text(self, ident: str) -> str:
        return "".join(self.texts.get(ident, []))

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]


def assert_nothing_injected(dom: Dom) -> None:
    """Only the page's own three scripts (two of them data), no image, no handler."""
    scripts = dom.tags("script")
    assert [s.get("type") for s in scripts] == ["application/json", "application/json", None]
    assert dom.tags("img") == []
    handlers = [(t, a) for t, attrs in dom.elements for a in attrs if a.startswith("on")]
    assert handlers == []


# --- the kit -------------------------------------------------------------------------------


def test_kit_escapes_text_and_keeps_markup_it_built() -> None:
    built = table(["a", "<b>"], [[IMG, table(["x"], [["y"]])]])
    assert "&lt;b&gt;" in built and "&quot;&gt;&lt;img" in built
    assert "<table><thead><tr><th>x</th>" in built  # the inner table, as markup
    assert esc("it's <b>") == "it&#x27;s &lt;b&gt;"


def test_json_data_cannot_close_its_element() -> None:
    data = {"output": EVIL + "<!-- </SCRIPT > ]]>", "line": "a\u2028b"}
    markup = json_data("d", data)
    inside = markup.removeprefix('<script type="application/json" id="d">').removesuffix(
        "</script>"
    )
    assert "<" not in inside and ">" not in inside and "\u2028" not in inside
    assert json.loads(inside) == data


def test_the_page_fetches_nothing_and_runs_only_its_own_script() -> None:
    text = page("t <1>", "<p>body</p>", script="console.log(1)")
    policy = re.search(r'Content-Security-Policy" content="([^"]+)"', text)
    assert policy is not None
    assert "default-src &#x27;none&#x27;" in policy.group(1)
    assert "script-src &#x27;sha256-" in policy.group(1)
    assert "<title>t &lt;1&gt;</title>" in text
    assert not re.search(r"(src|href)=\"?(https?:)?//", text)


# --- the page, rendered ------------------------------------------------------------------


def record(example_id: str, partition: str = "golden", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "example_id": example_id,
        "partition": partition,
        "nodeid": f"test_x.py::test_answer[{example_id}]",
        "tags": [],
        "draw": None,
        "output": "fine",
        "metrics": [],
        "judge": [],
        "steps": [],
        "status": "passed",
        "failure_kind": None,
        "failure_reason": None,
        "soft": False,
        "extra": {},
    }
    return {**base, **fields}


def rubric(mean: float) -> dict[str, Any]:
    return {"kind": "rubric", "mean": mean, "scores": [round(mean)], "reasoning": "why"}


def test_strings_that_recur_are_stored_once_and_read_back_the_same() -> None:
    long = "a passage retrieved for every example, " * 3
    records = [
        record("a", output=long, extra={"odd": "\x01starts with the mark"}),
        record("b", output=long, steps=[{"kind": "retrieval", "name": "r", "result": long}]),
    ]
    strings, encoded = intern_strings(records)
    assert strings == [long]
    assert json.dumps(encoded).count(long) == 0

    def decode(value: Any) -> Any:  # what the page's reviver does
        if isinstance(value, str) and value.startswith("\x01"):
            return value[1:] if value[1:2] == "\x01" else strings[int(value[1:])]
        if isinstance(value, dict):
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    assert decode(encoded) == records


def test_changes_since_the_baseline_pair_the_same_test_and_draw() -> None:
    baseline = [
        record("a"),
        record("b", status="failed"),
        record("c", judge=[rubric(5)]),
        record("d", judge=[rubric(4)]),
        # drawn twice in the baseline, once now: compared with the draws' mean
        record("e", nodeid="test_x.py::test_answer[e-r1]", draw=1, judge=[rubric(5)]),
        record("e", nodeid="test_x.py::test_answer[e-r2]", draw=2, judge=[rubric(3)]),
    ]
    now = [
        record("a", status="failed"),
        record("b"),
        record("c", judge=[rubric(2)]),
        record("d", judge=[rubric(3)]),
        record("e", judge=[rubric(3)]),
        record("new", status="failed"),  # not in the baseline: not a change
    ]
    found = changes(now, baseline)
    assert [new["example_id"] for _, new in found["pass_to_fail"]] == ["a"]
    assert [new["example_id"] for _, new in found["fail_to_pass"]] == ["b"]
    assert [new["example_id"] for _, new in found["judge_drops"]] == ["c", "d", "e"]


def document(records: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": "pytest-llmeval-report",
        "version": 1,
        "run": {"started_at": "2026-01-01T00:00:00+00:00", "args": [IMG]},
        "passed": False,
        "complete": True,
        "failures": ["golden rule"],
        "not_run": [],
        "partitions": {},
        "gates": [
            {
                "partition": "golden",
                "kind": "golden",
                "passed": False,
                "message": f"golden rule: FAIL, 1 of 2 golden examples did not pass: {IMG}",
            }
        ],
        "flaky": [],
        "time_budgets": [],
        "regression": None,
        "records": records,
    }
    return {**base, **fields}


def test_no_text_of_a_run_reaches_the_page_as_markup(tmp_path: Path) -> None:
    """Server-side parts (verdicts, changed examples) escape; the records travel as data."""
    baseline = tmp_path / "baseline.json"
    before = [record(IMG, output=EVIL, judge=[rubric(5)])]
    baseline.write_text(json.dumps(document(before)))
    now = [record(IMG, output=EVIL + MATH, status="failed", failure_reason=IMG, judge=[rubric(1)])]
    regression = {"baseline": str(baseline), "blocks": False, "comparisons": []}
    target = tmp_path / "page.html"
    write_html(document(now, regression=regression), target)
    text = target.read_text()
    for markup in (EVIL, "<img", "onerror=alert(1)>"):
        assert markup not in text
    assert "Changed since the baseline" in text
    assert "passed in the baseline, fail now (1)" in text


def test_an_unreadable_baseline_is_said_on_the_page(tmp_path: Path) -> None:
    regression = {"baseline": str(tmp_path / "gone.json"), "blocks": False, "comparisons": []}
    text = render(document([record("a")], regression=regression), baseline=None)
    assert "Changed since the baseline" not in text
    write_html(document([record("a")], regression=regression), tmp_path / "p.html")
    assert (
        "the baseline&#x27;s examples are not shown: cannot read"
        in (tmp_path / "p.html").read_text()
    )


# --- through a run -----------------------------------------------------------------------

EVIL_SUITE = f"""
import pytest

OUTPUTS = {{
    "golden-00": {EVIL!r},
    "golden-01": {IMG!r},
    "golden-02": {MATH!r},
    "golden-03": {LONG!r},
}}


@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llmeval_record):
    llmeval_record.output = OUTPUTS[example.id]
    llmeval_record.step("tool", "lookup", args={{"q": OUTPUTS[example.id]}}, result={EVIL!r})
    assert example.id != "golden-01", {IMG!r}
"""


def write_suite(pytester: pytest.Pytester, count: int, body: str) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    rows = [
        json.dumps(
            {
                "id": f"golden-{i:02d}",
                "partition": "golden",
                "input": {"q": EVIL},
                "expected_output": None,
                "tags": ["t<b>"],
            }
        )
        for i in range(count)
    ]
    pytester.path.joinpath("data.jsonl").write_text("\n".join(rows) + "\n")
    pytester.makepyfile(test_evals=body)


def test_a_failed_run_writes_its_page_and_chromium_shows_the_text_not_markup(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    write_suite(pytester, 4, EVIL_SUITE)
    result = pytester.runpytest("--llmeval-html=run.html")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    target = pytester.path / "run.html"
    text = target.read_text()
    assert EVIL not in text and "<img" not in text
    assert "golden rule: FAIL, 1 of 4 golden examples did not pass" in text

    dom = Dom(dump_dom(target, profile=tmp_path / "p0"))
    assert_nothing_injected(dom)
    assert dom.text("count") == "showing 4 of 4 records (4 in the run)"
    rows = dom.text("rows")
    assert EVIL in rows and MATH in rows  # the output column, as text

    for index, expected in enumerate((EVIL, IMG, MATH, LONG)):
        dom = Dom(dump_dom(target, f"#open={index}", profile=tmp_path / f"p{index + 1}"))
        assert_nothing_injected(dom)
        drill = dom.text(f"record-{index}")
        assert expected in drill  # the whole output, 50 KB included
        assert "tool lookup" in drill and EVIL in drill  # the trajectory's step
    failed = Dom(dump_dom(target, "#open=1", profile=tmp_path / "p9")).text("record-1")
    assert "Why it failed" in failed and IMG in failed


def test_the_table_filters_by_the_fragment(pytester: pytest.Pytester, tmp_path: Path) -> None:
    write_suite(pytester, 4, EVIL_SUITE)
    pytester.runpytest("--llmeval-html=run.html")
    target = pytester.path / "run.html"
    dom = Dom(dump_dom(target, "#status=failed&view=records", profile=tmp_path / "p"))
    assert dom.text("count") == "showing 1 of 1 records (4 in the run)"
    assert "golden-01" in dom.text("rows") and "golden-00" not in dom.text("rows")
    searched = Dom(dump_dom(target, "#q=THE%20END", profile=tmp_path / "q"))
    assert searched.text("count") == "showing 1 of 1 records (4 in the run)"
    tagged = Dom(dump_dom(target, "#tag=t%3Cb%3E", profile=tmp_path / "t"))
    assert tagged.text("count") == "showing 4 of 4 records (4 in the run)"


INTERRUPT = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llmeval_record):
    llmeval_record.output = "answered " + example.id
    if example.id == "golden-02":
        raise KeyboardInterrupt
"""


def test_an_interrupted_run_writes_its_page_saying_so(pytester: pytest.Pytester) -> None:
    write_suite(pytester, 5, INTERRUPT)
    # In a process of its own: a KeyboardInterrupt ends the whole process, as Ctrl-C does.
    result = pytester.runpytest_subprocess("--llmeval-html=run.html")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    text = (pytester.path / "run.html").read_text()
    assert "run incomplete: " in text
    assert "never ran: golden-02, golden-03, golden-04" in text
    assert "answered golden-01" in text


def test_a_parallel_run_writes_the_same_records(pytester: pytest.Pytester) -> None:
    write_suite(pytester, 4, EVIL_SUITE)
    result = pytester.runpytest("-n", "2", "--llmeval-html=run.html")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = (pytester.path / "run.html").read_text()
    assert "golden rule: FAIL, 1 of 4 golden examples did not pass" in text
    assert text.count("test_evals.py::test_answer[golden-0") == 4


def test_a_page_that_cannot_be_written_is_said_not_fatal(pytester: pytest.Pytester) -> None:
    write_suite(pytester, 1, INTERRUPT)
    pytester.path.joinpath("taken").write_text("a file, not a folder")
    result = pytester.runpytest("--llmeval-html=taken/run.html")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["the run's page was not written: *"])


# --- the example suite (the README's screenshots) -----------------------------------------


def test_the_readmes_screenshots_are_the_views_the_example_suites_test_checks() -> None:
    """The README's three pictures exist, are small, and its linked view is the one the
    example suite's test (tests/test_example_suite_views.py) opens."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### The run's page", 1)[1].split("\n## ", 1)[0]
    pictures = re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", section)
    assert len(pictures) == 3
    for picture in pictures:
        assert (ROOT / picture).stat().st_size < 150_000, picture
    assert "v2.html#status=failed&partition=golden&view=records" in section
