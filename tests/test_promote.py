"""The feedback loop: ``llmeval promote`` turns monitored failures into regression
examples that run as tests at once."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval import load_dataset, max_length
from pytest_llmeval.cli import main
from pytest_llmeval.monitor import Monitor, Sampler, constraints_evaluator, grounding_evaluator

KB = "The Team plan costs $29 per agent per month. Business costs $49."
GOLDEN = {"id": "team-price", "partition": "golden", "input": {"question": "How much is Team?"}}
TESTS = """
import os
import pytest
from pytest_llmeval import assert_constraints, forbidden_terms

# The app, fixed or not: the regression examples must catch the old answer.
ANSWER = os.environ.get("APP_ANSWER", "Team is $29 per agent per month.")

@pytest.mark.llmeval(dataset="datasets")
def test_reply(example):
    assert_constraints(ANSWER, [forbidden_terms(example.metadata.get("must_not_mention", []))])
"""
TRAFFIC = [
    # request id, question, answer, served at
    ("req-1", "What does Team cost per seat?", "Team is $27 per agent.", 1_000.0),
    ("req-2", "How much is Team?", "Team is $25.", 2_000.0),  # the golden example's input
    ("req-3", "Is Business more?", "Business is $49. " + "Really. " * 20, 3_000.0),
    ("req-4", "Any discount?", "We give 15% off.", 4_000.0),
    ("req-5", "What does Team cost per seat?", "Team is $27 again.", 5_000.0),  # req-1's input
    ("req-6", "Price of Business?", "Business is $49.", 6_000.0),  # no alert
]


@pytest.fixture
def monitored(pytester: pytest.Pytester) -> Path:
    """A suite with one golden example, and a monitor database of six served requests:
    hallucinations (req-1, req-2, req-4, req-5) and a constraint failure (req-3)."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (pytester.path / "datasets").mkdir()
    (pytester.path / "datasets" / "golden.jsonl").write_text(json.dumps(GOLDEN) + "\n")
    pytester.makepyfile(test_app=TESTS)
    db = pytester.path / "monitor.db"
    monitor = Monitor(
        db,
        {
            "grounding": grounding_evaluator(KB),
            "length": constraints_evaluator([max_length(100)]),
        },
        sampler=Sampler(1.0, slow=False),
        flush_interval=0.01,
    ).start()
    for request_id, question, answer, ts in TRAFFIC:
        monitor.push(request_id, {"question": question}, answer, timestamp=ts)
    monitor.stop()
    return db


def promote(*args: str) -> int:
    return main(["promote", *args])


def test_promoted_failures_run_as_regression_tests_at_once(
    pytester: pytest.Pytester, monitored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = promote(
        str(monitored), "--to", "datasets", "--alert", "hallucination", "--note", "stale prices"
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.splitlines() == [
        "promoted 2 example(s) to datasets/regression.jsonl",
        "  prod-req-1: hallucination",
        "  prod-req-4: hallucination",
        "skipped 2 duplicate(s) by input:",
        "  req-2: same input as team-price",
        "  req-5: same input as prod-req-1",
    ]
    dataset = load_dataset(pytester.path / "datasets")
    promoted = dataset["prod-req-1"]
    assert promoted.partition == "regression" and promoted.input == {
        "question": "What does Team cost per seat?"
    }
    assert promoted.tags == ("production", "hallucination")
    assert promoted.metadata["must_not_mention"] == ["$27"]
    provenance = promoted.metadata["provenance"]
    assert provenance["request_id"] == "req-1" and provenance["root_cause"] == "stale prices"
    assert provenance["failing_output"] == "Team is $27 per agent."
    assert provenance["served_at"] == "1970-01-01T00:16:40+00:00"
    assert provenance["alerts"] == [
        {"type": "hallucination", "severity": "high", "message": "1 unsupported claim(s): $27"}
    ]

    # The fixed app passes the new regression tests; the old answer fails them.
    result = pytester.runpytest("-m", "regression", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, deselected=1)
    result.stdout.fnmatch_lines(["*regression*2*2*100.0%*"])
    pytester._monkeypatch.setenv("APP_ANSWER", "Team is $27, with 15% off.")
    result = pytester.runpytest("-m", "regression", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2, deselected=1)

    # Promoting again finds only duplicates, and says so with exit status 1.
    assert promote(str(monitored), "--to", "datasets", "--note", "x", "--alert", "hallucination")
    assert "promoted 0 example(s)" in capsys.readouterr().out


def test_selection_by_type_time_and_request_id(
    pytester: pytest.Pytester, monitored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def would(*args: str) -> list[str]:
        promote(str(monitored), "--to", "datasets", "--dry-run", *args)
        lines = capsys.readouterr().out.splitlines()
        return [line.split(":")[0].strip() for line in lines if line.startswith("  prod-")]

    assert would() == ["prod-req-1", "prod-req-3", "prod-req-4"]
    assert would("--alert", "constraint") == ["prod-req-3"]
    assert would("--since", "1500", "--until", "4000") == ["prod-req-3"]
    assert would("--request-id", "req-4", "--request-id", "req-6") == ["prod-req-4"]
    assert not (pytester.path / "datasets" / "regression.jsonl").exists()


def test_a_json_dataset_and_an_interactive_note(
    pytester: pytest.Pytester,
    monitored: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = pytester.path / "evals.json"
    target.write_text(json.dumps({"name": "evals", "examples": [GOLDEN]}))
    answers = iter(["the price table was out of date", "Team is $29 per agent per month."])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert promote(str(monitored), "--to", str(target), "--request-id", "req-1") == 0
    assert "req-1 (hallucination): What does Team cost per seat?" in capsys.readouterr().out
    promoted = load_dataset(target)["prod-req-1"]
    assert promoted.metadata["provenance"]["root_cause"] == "the price table was out of date"
    assert promoted.expected_output == "Team is $29 per agent per month."


def test_usage_errors_name_what_is_wrong(
    pytester: pytest.Pytester, monitored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not interactive (stdin is not a terminal under pytest) and no --note.
    assert promote(str(monitored), "--to", "datasets") == 2
    assert "pass --note" in capsys.readouterr().err
    assert promote("missing.db", "--to", "datasets", "--note", "x") == 2
    assert "missing.db: no such monitor database" in capsys.readouterr().err
    (pytester.path / "broken.jsonl").write_text("{not json\n")
    assert promote(str(monitored), "--to", "broken.jsonl", "--note", "x") == 2
    assert "broken.jsonl:1" in capsys.readouterr().err


def test_a_taken_id_gets_a_suffix(
    pytester: pytest.Pytester, monitored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = pytester.path / "datasets" / "golden.jsonl"
    taken = {**GOLDEN, "id": "prod-req-1", "input": {"question": "other"}}
    golden.write_text(golden.read_text() + json.dumps(taken) + "\n")
    assert promote(str(monitored), "--to", "datasets", "--note", "x", "--request-id", "req-1") == 0
    assert [ex.id for ex in load_dataset(pytester.path / "datasets")][-1] == "prod-req-1-2"


def test_a_write_that_does_not_load_is_undone(
    pytester: pytest.Pytester,
    monitored: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pytest_llmeval.errors import DatasetError

    # The module the command will use (pytester's runs may have re-imported it).
    module = importlib.import_module("pytest_llmeval.monitor.promote")

    regression = pytester.path / "datasets" / "regression.jsonl"
    regression.write_text(json.dumps({**GOLDEN, "id": "old", "partition": "regression"}) + "\n")
    before = regression.read_text()
    loads = iter([True, False])

    def load_once(path: Any) -> Any:
        if next(loads):
            return load_dataset(path)
        raise DatasetError(str(regression), "line 2: broken")

    monkeypatch.setattr(module, "load_dataset", load_once)
    assert promote(str(monitored), "--to", "datasets", "--note", "x") == 2
    assert "regression.jsonl: line 2: broken" in capsys.readouterr().err
    assert regression.read_text() == before


# Files that are not a monitor database (tests/test_dashboard.py tries them too).
NOT_A_MONITOR_DATABASE = pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"SQLite? no: a text file\n" * 20, "file is not a database"),
        (b"", "no monitor tables"),
        (None, "no monitor tables"),  # a SQLite file of another program
    ],
    ids=["not-sqlite", "empty", "no-monitor-schema"],
)


def not_a_monitor_database(path: Path, content: bytes | None) -> bytes:
    """Write the file; returns its bytes."""
    import sqlite3

    if content is None:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE users (name TEXT)")
        db.close()
    else:
        path.write_bytes(content)
    return path.read_bytes()


@NOT_A_MONITOR_DATABASE
def test_a_file_that_is_not_a_monitor_database_is_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    why: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "app.db"
    before = not_a_monitor_database(bad, content)
    assert promote(str(bad), "--to", "datasets", "--note", "x") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"llmeval promote: {bad}: not a monitor database ({why})"]
    assert bad.read_bytes() == before  # read only: nothing created in it
    assert not (tmp_path / "datasets").exists()


def test_a_stored_nan_is_refused_not_written_to_the_dataset(
    pytester: pytest.Pytester, monitored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sample stored with NaN in its input (by a version that let it through) is not
    promoted: a dataset is standard JSON."""
    import sqlite3

    with sqlite3.connect(monitored) as db:
        db.execute(
            'UPDATE samples SET input = \'{"question": "seat price?", "budget": NaN}\''
            " WHERE request_id = 'req-4'"
        )
    db.close()
    golden = (pytester.path / "datasets" / "golden.jsonl").read_text()
    assert promote(str(monitored), "--to", "datasets", "--note", "x") == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "llmeval promote: request req-4: its stored sample holds NaN or Infinity, which a "
        "dataset cannot (standard JSON); leave it out with --request-id or fix the database"
    ]
    assert not (pytester.path / "datasets" / "regression.jsonl").exists()
    assert (pytester.path / "datasets" / "golden.jsonl").read_text() == golden
    # The others are promoted when it is left out.
    assert promote(str(monitored), "--to", "datasets", "--note", "x", "--request-id", "req-1") == 0
