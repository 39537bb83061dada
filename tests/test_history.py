"""Run history: each run's report added to a folder (``llmeval_history_dir``), and
``llmeval history DIR`` drawing the runs in the order they started, with baselines and
incomplete runs marked, as one self-contained page or JSON."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.cli import main
from pytest_llmeval.html.charts import Series, XPoint, bar_chart, line_chart
from pytest_llmeval.runs.history import add_run, read_history, read_runs
from pytest_llmeval.runs.report import REPORT_FORMAT, ReportJSON

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def document(
    minute: int,
    *,
    golden: float = 1.0,
    complete: bool = True,
    exit_status: int = 0,
    args: list[str] | None = None,
    judge: float | None = None,
    costs: tuple[float, ...] = (0.01, 0.02),
    regression: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A report of a run started ``minute`` minutes after T0."""
    started = T0 + timedelta(minutes=minute)
    golden_json: dict[str, Any] = {"pass_rate": golden, "metric_means": {}}
    if judge is not None:
        golden_json["metric_means"]["judge"] = judge
    return {
        "format": REPORT_FORMAT,
        "version": 1,
        "run": {
            "started_at": started.isoformat(),
            "finished_at": (started + timedelta(seconds=30)).isoformat(),
            "exit_status": exit_status,
            "args": args or [],
            "rootdir": "/nowhere",
        },
        "passed": golden == 1.0 and complete,
        "complete": complete,
        "failures": [],
        "not_run": [],
        "partitions": {"golden": golden_json, "distribution": {"pass_rate": 0.9}},
        "gates": [],
        "regression": regression,
        "records": [
            {
                "example_id": f"golden-{i}",
                "partition": "golden",
                "status": "passed",
                "cost_usd": cost,
                "latency_s": 0.5 + i,
            }
            for i, cost in enumerate(costs)
        ],
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    data = json.dumps(doc).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def as_report(doc: dict[str, Any]) -> ReportJSON:
    return doc  # type: ignore[return-value]


# --- adding a run ---------------------------------------------------------------------------


def test_add_run_writes_a_compressed_standard_json_report(tmp_path: Path) -> None:
    doc = document(0)
    doc["records"][0]["cost_usd"] = float("nan")  # a test's own value: written as null
    path = add_run(as_report(doc), tmp_path / "history")
    assert re.fullmatch(r"run-20260301T090000Z-[0-9a-f]{8}\.json\.gz", path.name)
    text = gzip.decompress(path.read_bytes()).decode()
    assert "NaN" not in text
    assert json.loads(text)["records"][0]["cost_usd"] is None
    assert os.listdir(tmp_path / "history") == [path.name]  # no temporary file left


def test_runs_started_in_the_same_second_never_collide(tmp_path: Path) -> None:
    """Parallel CI jobs start at the same time: each keeps its own file."""
    paths = {add_run(as_report(document(0, golden=g / 10)), tmp_path) for g in range(10)}
    assert len(paths) == 10 == len(list(tmp_path.iterdir()))
    runs, warnings = read_history(tmp_path)
    assert warnings == []
    assert sorted(r.pass_rates["golden"] or 0.0 for r in runs) == [g / 10 for g in range(10)]


def test_an_interrupted_run_is_kept_and_read_as_incomplete(tmp_path: Path) -> None:
    add_run(as_report(document(0, complete=False, exit_status=2)), tmp_path)
    add_run(as_report(document(1, complete=False, exit_status=1)), tmp_path)  # -x
    (interrupted, stopped), _ = read_history(tmp_path)
    assert interrupted.incomplete and interrupted.state == "incomplete (interrupted)"
    assert stopped.incomplete and stopped.state == "incomplete"


# --- reading, in start order ------------------------------------------------------------------


def test_runs_are_in_start_order_whatever_the_files_are_called(tmp_path: Path) -> None:
    # File names sort the other way round from the start times, and mix .json and .gz.
    for name, minute in [("a.json", 40), ("b.json.gz", 30), ("c.json", 20), ("d.json.gz", 10)]:
        write(tmp_path / name, document(minute, golden=minute / 100))
    write(tmp_path / "e.json.gz", document(0, golden=0.0))
    runs, warnings = read_history(tmp_path)
    assert warnings == []
    assert [r.name for r in runs] == ["e", "d", "c", "b", "a"]
    assert [r.pass_rates["golden"] for r in runs] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_start_order_is_not_argument_order(tmp_path: Path) -> None:
    late = write(tmp_path / "late.json", document(5))
    early = write(tmp_path / "early.json", document(1))
    # Different time zones, the same instants: ordered by the instant.
    doc = document(3)
    doc["run"]["started_at"] = (T0 + timedelta(minutes=3)).astimezone().isoformat()
    middle = write(tmp_path / "middle.json", doc)
    runs, _ = read_runs([late, middle, early])
    assert [r.name for r in runs] == ["early", "middle", "late"]


def test_the_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "2.json", document(2, golden=0.5, judge=3.5, costs=(0.5,)))
    write(tmp_path / "1.json", document(1, judge=4.25, costs=()))
    assert main(["history", str(tmp_path), "--json"]) == 0
    series = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in series["runs"]] == ["1", "2"]
    assert series["pass_rate"] == {"golden": [1.0, 0.5], "distribution": [0.9, 0.9]}
    assert series["metric_means"] == {"judge": {"golden": [4.25, 3.5]}}
    assert series["cost_usd"] == [None, 0.5]
    assert series["latency_p95_s"] == [None, 0.5]


def test_a_bad_file_is_one_line_and_the_others_are_drawn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "good.json", document(0))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.json.gz").write_bytes(b"not gzip")
    write(tmp_path / "other.json", {"format": "something else"})
    no_start = document(1)
    del no_start["run"]["started_at"]
    write(tmp_path / "nostart.json", no_start)
    (tmp_path / "notes.txt").write_text("not a report, not read")
    out = tmp_path / "out.html"
    assert main(["history", str(tmp_path), "--html", str(out)]) == 0
    stdout, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 4 and all(line.startswith("llmeval history: skipped ") for line in lines)
    for name in ("broken.json", "broken.json.gz", "other.json", "nostart.json"):
        named = re.escape(str(tmp_path / name)) + "[: ]"
        assert sum(bool(re.search(named, line)) for line in lines) == 1
    assert "1 runs in" in stdout and f"wrote {out}" in stdout
    assert "Files left out" in out.read_text()


@pytest.mark.parametrize("what", ["missing", "a file"])
def test_a_bad_folder_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    target = tmp_path / "nope"
    if what == "a file":
        target.write_text("")
    assert main(["history", str(target), "--html", str(tmp_path / "out.html")]) == 2
    stdout, err = capsys.readouterr()
    assert stdout == ""
    reason = "not a folder" if what == "a file" else "no such folder"
    assert err == f"llmeval history: {target}: {reason}\n"
    assert not (tmp_path / "out.html").exists()


def test_an_empty_folder_has_nothing_to_draw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["history", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"llmeval history: no run reports in {tmp_path}\n"


def test_baselines_are_marked(tmp_path: Path) -> None:
    """By the command line that saved one, or by the runs compared with it."""
    history = tmp_path / "history"
    history.mkdir()
    write(history / "a.json", document(0, args=["--llmeval-save-baseline", "base.json"]))
    write(history / "b.json", document(1, args=["--llmeval-save-baseline=base.json"]))
    # Saved through the ini key: known by the baseline file a later run names.
    saved_by_ini = document(2)
    write(history / "c.json", saved_by_ini)
    baseline = write(tmp_path / "baseline.json", saved_by_ini)
    write(history / "d.json", document(3, regression={"baseline": str(baseline), "blocks": False}))
    write(history / "e.json", document(4, args=["--llmeval-baseline", "base.json"]))
    runs, _ = read_history(history)
    assert [r.name for r in runs if r.baseline] == ["a", "b", "c"]


# --- the page -------------------------------------------------------------------------------


class Dom(HTMLParser):
    """The elements of a page: (tag, attributes, text inside it directly)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self.stack: list[int] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, []))
        self.stack.append(len(self.elements) - 1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, []))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.elements[self.stack.pop()][0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.elements[self.stack[-1]][2].append(data)

    def texts(self, tag: str, **attrs: str) -> list[str]:
        return [
            "".join(text)
            for t, a, text in self.elements
            if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]


def local_links(page: str) -> list[str]:
    """Every src and href; none may fetch anything from a network."""
    links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert not [link for link in links if re.match(r"[a-z]+:|//", link)]
    return links


def test_points_link_to_run_pages_and_the_page_fetches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "history"
    history.mkdir()
    write(history / "run one.json.gz", document(0))
    (history / "run one.html").write_text("<p>the run's page</p>")
    elsewhere = tmp_path / "ci" / "report.html"
    elsewhere.parent.mkdir()
    elsewhere.write_text("<p>the run's page</p>")
    # Written by the run (after it started, before the next one did)
    written = (T0 + timedelta(minutes=1, seconds=40)).timestamp()
    os.utime(elsewhere, (written, written))
    for minute, name in ((1, "two.json"), (3, "four.json")):
        doc = document(minute, args=["--llmeval-html", "ci/report.html"])
        doc["run"]["rootdir"] = str(tmp_path)
        write(history / name, doc)
    write(history / "three.json", document(2))  # no page
    # The run four minutes in wrote its page at the same path later: four has no page
    # now (the page is two's), and three never had one.
    out = tmp_path / "site" / "history.html"
    assert main(["history", str(history), "--html", str(out)]) == 0
    page = out.read_text()
    links = sorted(set(local_links(page)))
    assert links == ["../ci/report.html", "../history/run%20one.html"]
    runs, _ = read_history(history)
    assert [(r.name, r.page is not None) for r in runs] == [
        ("run one", True),
        ("two", True),
        ("three", False),
        ("four", False),
    ]
    for link in links:  # each resolves to the page, from where the history page is
        assert (out.parent / link.replace("%20", " ")).is_file()
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert "<script" not in page and "<img" not in page


def test_text_is_escaped_in_the_charts() -> None:
    xs = [XPoint('<script>alert(1)</script>"', href='x.html"><img src=x onerror=alert(1)>')]
    chart = line_chart("$title$ <b>", xs, [Series("</svg><script>", [0.5])])
    chart += bar_chart("bars", ["<i>"], [Series("a&b", [2.0])])
    dom = Dom(chart)
    assert not [t for t, _, _ in dom.elements if t in ("script", "img", "b", "i")]
    assert "$title$ <b>" in dom.texts("text")
    assert "</svg><script>" in dom.texts("text")
    assert [a["href"] for t, a, _ in dom.elements if t == "a"] == [
        'x.html"><img src=x onerror=alert(1)>'
    ]


def test_gaps_and_empty_charts() -> None:
    xs = [XPoint(str(i)) for i in range(4)]
    chart = line_chart("t", xs, [Series("s", [1.0, None, 2.0, 3.0])])
    assert chart.count("<polyline") == 1 and chart.count("<circle") == 3  # no line over a gap
    empty = line_chart("t", xs, [Series("s", [None] * 4)], empty="nothing measured")
    assert ">nothing measured</text>" in empty and "<circle" not in empty


# --- five runs of a suite --------------------------------------------------------------------

SUITE = """
import os
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    if os.environ.get("STOP_AT") == example.id:
        raise KeyboardInterrupt
    assert example.id not in os.environ.get("FAIL", "").split(",")
"""


def history_run(
    pytester: pytest.Pytester, *args: str, subprocess: bool = False
) -> tuple[pytest.RunResult, Path]:
    """One run of the suite into the history; the file it added."""
    before = set(pytester.path.joinpath("history").glob("*"))
    flags = ("--llmeval-history-dir=history", *args)
    result = pytester.runpytest_subprocess(*flags) if subprocess else pytester.runpytest(*flags)
    (added,) = set(pytester.path.joinpath("history").glob("*")) - before
    return result, added


def test_five_runs_drawn_in_start_order_with_the_interrupted_one_incomplete(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    rows = [
        json.dumps({"id": f"{p}-{i}", "partition": p, "input": {}, "expected_output": None})
        for p, count in (("golden", 2), ("distribution", 4))
        for i in range(count)
    ]
    pytester.path.joinpath("data.jsonl").write_text("\n".join(rows) + "\n")
    pytester.makepyfile(test_evals=SUITE)
    files, results = [], []
    for index in range(5):
        monkeypatch.setenv("FAIL", "distribution-1" if index == 3 else "")
        monkeypatch.setenv("STOP_AT", "distribution-2" if index == 2 else "")
        args: list[str] = []
        if index == 0:
            args = ["--llmeval-save-baseline=baseline.json"]
        elif index == 1:
            args = ["-n", "2"]
        # Ctrl-C ends the whole process: the interrupted run has one of its own.
        result, added = history_run(pytester, *args, subprocess=index == 2)
        results.append(result)
        files.append(added)
    # Run 4 fails: distribution at 75% is under its minimum (85%).
    assert [r.ret for r in results] == [0, 0, pytest.ExitCode.INTERRUPTED, 1, 0]
    assert all(f.name.endswith(".json.gz") for f in files)
    # Names that sort against the start order: only run.started_at orders the runs.
    history = pytester.path / "history"
    for index, path in enumerate(files):
        path.rename(history / f"{'zyxwv'[index]}.json.gz")
    page = pytester.path / "history.html"
    assert main(["history", str(history), "--html", str(page)]) == 0
    assert main(["history", str(history), "--json"]) == 0
    runs, warnings = read_history(history)
    assert warnings == []
    assert [r.name for r in runs] == ["z", "y", "x", "w", "v"]
    states = ["passed", "passed", "incomplete (interrupted)", "failed", "passed"]
    assert [r.state for r in runs] == states
    assert runs[2].incomplete and not any(r.incomplete for i, r in enumerate(runs) if i != 2)
    assert [r.baseline for r in runs] == [True, False, False, False, False]
    assert runs[2].pass_rates["distribution"] is not None
    assert runs[3].pass_rates["distribution"] == 0.75
    starts = [r.started_at for r in runs]
    assert starts == sorted(starts) and len(set(starts)) == 5
    check_page(page.read_text(), ["z", "y", "x", "w", "v"])
    chromium = shutil.which("chromium")
    if chromium:  # the page as a browser reads it
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        check_page(dom, ["z", "y", "x", "w", "v"])


def check_page(page: str, names: list[str]) -> None:
    """The five runs: the first saved as the baseline, the third interrupted."""
    local_links(page)
    dom = Dom(page)
    # Each chart labels the runs in start order, numbered, and marks the incomplete one.
    labels = [t for t in dom.texts("text") if t.startswith("#")]
    per_chart = [f"#{i + 1} {name}" for i, name in enumerate(names)]
    assert labels[: len(names)] == per_chart
    charts = page.count('<figure class="chart">')
    assert charts >= 3  # pass rate, cost, p95 latency
    assert dom.texts("text", **{"class": "mark-incomplete"}) == ["incomplete"] * charts
    assert dom.texts("text", **{"class": "mark-baseline"}) == ["baseline"] * charts
    points = [a["class"] for t, a, _ in dom.elements if t == "g" and "point" in a.get("class", "")]
    assert sum("incomplete" in c for c in points) == len(points) // len(names)
    # The table: one row per run, in start order, the incomplete run said so.
    rows = [t for t in dom.texts("td") if t in names]
    assert rows == names
    assert "incomplete (interrupted)" in dom.texts("td")
    assert dom.texts("td").count("baseline") == 1


def _add(args: tuple[str, int]) -> str:
    return add_run(as_report(document(args[1])), Path(args[0])).name


def test_parallel_jobs_adding_runs_at_once_keep_each(tmp_path: Path) -> None:
    """Processes adding runs of the same start time into one folder at the same moment."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        names = list(pool.map(_add, [(str(tmp_path), 0)] * 16))
    assert len(set(names)) == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary file
    runs, warnings = read_history(tmp_path)
    assert len(runs) == 16 and warnings == []


def test_a_session_without_eval_tests_adds_nothing_to_the_history(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_plain="def test_a():\n    pass\n")
    pytester.runpytest("--llmeval-history-dir=hist", "-p", "no:cacheprovider").assert_outcomes(
        passed=1
    )
    assert not pytester.path.joinpath("hist").exists()
