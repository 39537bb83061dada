"""The monitor dashboard: one self-contained HTML page of a monitor database and CI runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.cli import main
from pytest_llmeval.monitor.dashboard import write_dashboard
from pytest_llmeval.monitor.store import Store
from pytest_llmeval.runs.report import REPORT_FORMAT

HOUR = 3600.0
T0 = 1_780_000_000.0 // HOUR * HOUR
TYPES = ("hallucination", "constraint", "quality", "drift")


def _window(mean: float | None, rate: float | None = 0.05) -> dict[str, Any]:
    return {
        "samples": 0 if mean is None else 10,
        "judge_n": 0 if mean is None else 10,
        "judge_mean": mean,
        "judge_p10": None if mean is None else mean - 1,
        "hallucination_n": 0 if rate is None else 10,
        "hallucination_rate": rate,
        "constraint_n": 0 if rate is None else 10,
        "constraint_pass_rate": None if rate is None else 1 - rate,
        "eval_errors": 0,
        "partial": False,
    }


def _drift(alert: bool) -> dict[str, Any]:
    verdict = "REGRESSION" if alert else "NO REGRESSION"
    return {"alert": alert, "verdict": verdict, "line": f"judge: {verdict}"}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six hourly windows, the last two drifting, with traffic and alerts of each type
    (read only by the tests, so drawn once for all of them)."""
    path = tmp_path_factory.mktemp("db") / "monitor.sqlite3"
    store = Store(path)
    with store.transaction() as conn:
        for i in range(6):
            start = T0 + i * HOUR
            drifting = i >= 4
            aggregates = _window(3.2 if drifting else 4.5, None if i == 1 else 0.05)
            Store.save_window(conn, start, start + HOUR, aggregates, _drift(drifting), start + HOUR)
            Store.add_traffic(conn, {start: (100, 10, i)})
            for j, kind in enumerate(TYPES):
                message = "<script>alert(1)</script> & more" if (i, j) == (5, 0) else f"{kind} {i}"
                alert = {"ts": start + j, "window_start": start, "type": kind}
                alert |= {"severity": "high", "message": message, "request_id": f"req-{i}-{j}"}
                Store.insert_alert(conn, alert)
    store.close()
    return path


def _report(path: Path, rates: dict[str, float | None], scores: list[float]) -> Path:
    records = [
        {
            "example_id": f"e{i}",
            "partition": "golden",
            "status": "passed",
            "judge": [{"kind": "rubric", "mean": score, "scores": [score]}],
        }
        for i, score in enumerate(scores)
    ]
    document = {
        "format": REPORT_FORMAT,
        "run": {"started_at": "2026-01-02T03:04:05+00:00"},
        "passed": True,
        "partitions": {name: {"pass_rate": rate} for name, rate in rates.items()},
        "records": records,
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def page(db: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp_path = tmp_path_factory.mktemp("page")
    runs = [
        _report(tmp_path / "run-a.json", {"golden": 1.0, "distribution": 0.9}, [4.0, 5.0]),
        _report(tmp_path / "run-b.json", {"golden": 0.75, "distribution": None}, []),
    ]
    out = write_dashboard(db, tmp_path / "out" / "dash.html", runs)
    assert out == tmp_path / "out" / "dash.html"
    return out.read_text(encoding="utf-8")


def test_page_is_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page and 'src="//' not in page
    assert "url(" not in page  # no CSS fetches either
    # Charts are inline SVG: nothing to fetch, and no run here has a page to link to.
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == []
    assert "<img" not in page and "<script" not in page
    # Quality (judge, hallucination, constraints), traffic (pushed, sampled), alerts (by
    # type, by severity), CI runs (pass rate, cost, p95 latency).
    assert page.count('<figure class="chart">') == 10
    assert page.count('class="shaded"') == 3 * 6  # every window has a drift alert here


def test_page_shows_alerts_escaped(page: str) -> None:
    for kind in TYPES:
        assert f"<td>{kind}</td>" in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "Most recent alerts (20 of 24, newest first)" in page
    assert "req-5-3" in page and "req-0-0" not in page  # only the latest 20


def test_page_shows_totals_and_runs(page: str, db: Path) -> None:
    assert str(db.resolve()) in page
    assert '<tr><th>pushed</th><td class="num">600</td></tr>' in page
    assert '<tr><th>dropped</th><td class="num">15</td></tr>' in page
    assert '<tr><th>alerts</th><td class="num">24</td></tr>' in page
    assert "<td>run-a</td>" in page and "<td>run-b</td>" in page
    assert "<td>75.0%</td>" in page and "<td>4.50</td>" in page


def test_empty_database_without_runs(tmp_path: Path) -> None:
    Store(tmp_path / "empty.sqlite3").close()
    page = write_dashboard(tmp_path / "empty.sqlite3", tmp_path / "dash.html").read_text()
    assert "<svg" not in page
    assert page.count("no data yet") >= 4


def test_windows_without_evaluations(tmp_path: Path) -> None:
    """All-None aggregates in a single window draw notes, not warnings (they are errors
    here)."""
    path = tmp_path / "monitor.sqlite3"
    store = Store(path)
    with store.transaction() as conn:
        Store.save_window(conn, T0, T0 + HOUR, _window(None, None), None, T0 + HOUR)
    store.close()
    page = write_dashboard(path, tmp_path / "dash.html").read_text()
    assert page.count('<figure class="chart">') == 3  # the quality charts only
    assert page.count(">no evaluations of this kind yet</text>") == 3
    assert "<circle" not in page and "<polyline" not in page


def test_missing_database_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        write_dashboard(missing, tmp_path / "dash.html")
    assert not (tmp_path / "dash.html").exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "is not (standard )?JSON"),
        ('{"format": "other"}', "is not a pytest-llmeval report"),
    ],
)
def test_malformed_report_names_it(db: Path, tmp_path: Path, content: str, why: str) -> None:
    report = tmp_path / "broken.json"
    report.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=f"{re.escape(str(report))}.*{why}"):
        write_dashboard(db, tmp_path / "dash.html", [report])


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"SQLite? no: a text file\n" * 20, "file is not a database"),
        (b"", "no monitor tables"),
        (None, "no monitor tables"),  # a SQLite file of another program
    ],
    ids=["not-sqlite", "empty", "no-monitor-schema"],
)
def test_a_file_that_is_not_a_monitor_database_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, why: str
) -> None:
    """As ``llmeval promote`` (tests/test_promote.py)."""
    import sqlite3

    bad = tmp_path / "app.db"
    if content is None:
        with sqlite3.connect(bad) as db:
            db.execute("CREATE TABLE users (name TEXT)")
        db.close()
    else:
        bad.write_bytes(content)
    before = bad.read_bytes()
    assert main(["dashboard", str(bad), "--out", str(tmp_path / "dash.html")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"llmeval dashboard: {bad}: not a monitor database ({why})"]
    assert bad.read_bytes() == before and not (tmp_path / "dash.html").exists()


def test_dollar_signs_are_drawn_as_plain_text(tmp_path: Path) -> None:
    """Alert types, severities, partition and file names are free text: "$" in them is
    drawn as it is, as escaped SVG text (no mathtext, no LaTeX: the page is drawn without
    matplotlib)."""
    path = tmp_path / "monitor $prod$.sqlite3"
    store = Store(path)
    kinds = ["price $27 vs $29", "$$", r"cost $\notacommand$"]
    with store.transaction() as conn:
        Store.save_window(conn, T0, T0 + HOUR, _window(4.5), _drift(False), T0 + HOUR)
        Store.add_traffic(conn, {T0: (100, 10, 0)})
        for i, kind in enumerate(kinds):
            alert = {"ts": T0 + i, "window_start": T0, "type": kind, "severity": "high $1$"}
            Store.insert_alert(conn, alert | {"message": f"{kind}!", "request_id": f"r{i}"})
    store.close()
    run = _report(tmp_path / "run $a$ vs $b$.json", {"golden": 1.0, "$weird$": 0.5}, [4.0])
    # In a fresh interpreter, to see that drawing the page imports no matplotlib.
    draw = (
        "import sys; from pytest_llmeval.monitor.dashboard import write_dashboard; "
        "write_dashboard(*sys.argv[1:3], [sys.argv[3]]); print('matplotlib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", draw, str(path), str(tmp_path / "dash.html"), str(run)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
    page = (tmp_path / "dash.html").read_text(encoding="utf-8")
    for kind in kinds:
        assert f"<td>{kind}</td>" in page
        assert f"</title>{kind}</text>" in page  # a label of the alerts chart
    assert "<td>run $a$ vs $b$</td>" in page and "monitor $prod$.sqlite3" in page
    assert ">$weird$</text>" in page and ">high $1$</text>" in page
    assert ">#1 run $a$ vs $b$</text>" in page  # the run's label on the x axis
