"""A bar that cannot be lowered quietly: against a baseline, the session and ``llmeval
gate`` list every way the candidate's bar is lower, and with ``llmeval_bar_locked`` a
lowering blocks unless ``llmeval_bar_accept`` names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_plugin import rows, suite

import pytest_llmeval.stats.regression  # noqa: F401  (numpy outside pytester's runs)
from pytest_llmeval.cli import main
from pytest_llmeval.records import Record
from pytest_llmeval.runs.bar import lowered
from pytest_llmeval.settings import OPTIONS, Settings, build

SUITE = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    pass
"""

LOWERED = [
    "bar lowered against the baseline (2):",
    "  example:golden-01: golden example not in this run (deleted, renamed or not selected)",
    "  min_pass_rate:distribution: minimum pass rate 85% -> 70%",
]


def readme_block() -> list[str]:
    """The README's output block of the locked bar."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    after = readme[readme.index("For the pull request above (`tests/test_bar.py`):") :]
    return after.split("```\n", 2)[1].splitlines()


def section(lines: list[str]) -> list[str]:
    start = lines.index("bar lowered against the baseline (2):")
    return lines[start : start + 4]


def test_a_deleted_golden_example_and_a_lowered_minimum_are_listed_and_block_when_locked(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    data = rows(golden=3, distribution=6)
    suite(pytester, data, SUITE)
    assert pytester.runpytest("--llmeval-save-baseline=base.json").ret == 0
    # The pull request: golden-01 deleted, distribution's minimum from 85% to 70%.
    kept = [row for row in data if row["id"] != "golden-01"]
    suite(pytester, kept, SUITE, ini="llmeval_min_pass_rate = distribution:0.7")
    flags = ["--llmeval-baseline=base.json", "--llmeval-report=run.json"]

    result = pytester.runpytest(*flags)
    assert result.ret == 0
    assert section(result.outlines) == [
        *LOWERED,
        "bar: not locked (llmeval_bar_locked = yes would block)",
    ]
    bar = json.loads((pytester.path / "run.json").read_text())["bar"]
    assert (bar["locked"], bar["blocks"]) == (False, False)
    assert [low["key"] for low in bar["lowered"]] == [
        "example:golden-01",
        "min_pass_rate:distribution",
    ]

    locked = pytester.runpytest(*flags, "-o", "llmeval_bar_locked=yes", "--llmeval-markdown=run.md")
    assert locked.ret == 1
    assert section(locked.outlines)[-1].startswith("bar: BLOCK")
    assert "llmeval: FAIL (bar lowered (2))" in locked.outlines
    assert section(locked.outlines) == readme_block()
    md = (pytester.path / "run.md").read_text().splitlines()
    start = md.index("❌ **bar lowered against the baseline: BLOCK (llmeval_bar_locked)**")
    assert md[start + 1 : start + 3] == [
        "- `example:golden-01`: golden example not in this run (deleted, renamed or not selected)",
        "- `min_pass_rate:distribution`: minimum pass rate 85% -> 70%",
    ]
    # The gate on its report (which recorded the lock) says the same and exits the same.
    capsys.readouterr()
    assert main(["gate", "run.json", "--baseline", "base.json"]) == 1
    gated = capsys.readouterr().out.splitlines()
    assert section(gated) == section(locked.outlines)
    assert gated[-1] == "llmeval: FAIL (bar lowered (2))"

    accepted = pytester.runpytest(
        *flags,
        "-o",
        "llmeval_bar_locked=yes",
        "-o",
        "llmeval_bar_accept=example:golden-01 min_pass_rate:distribution",
    )
    assert accepted.ret == 0
    assert section(accepted.outlines) == [
        LOWERED[0],
        LOWERED[1] + " (accepted)",
        LOWERED[2] + " (accepted)",
        "bar: every lowering accepted (llmeval_bar_accept)",
    ]


def test_a_run_that_selects_one_partition_is_not_said_to_lower_the_others(
    pytester: pytest.Pytester,
) -> None:
    suite(pytester, rows(golden=2, regression=2), SUITE)
    assert pytester.runpytest("--llmeval-save-baseline=base.json").ret == 0
    result = pytester.runpytest("--llmeval-baseline=base.json", "-m", "golden")
    assert result.ret == 0
    assert not any(line.startswith("bar lowered") for line in result.outlines)


def settings(**values: str) -> Settings:
    defaults = {name: default for name, _, default in OPTIONS}
    return build(
        lambda name: values.get(name, defaults[name]),
        lambda name: None,
        rootpath=Path("."),
        datasets_dir="",
    )


def test_every_kind_of_lowering_has_its_key() -> None:
    base = settings(
        hard_partitions="golden regression adversarial",
        thresholds="token_f1:0.5",
        gate="pass_rate judge.distribution",
        alpha="0.05",
        strict="yes",
    )
    now = settings(
        hard_partitions="golden regression",
        thresholds="judge:1 token_f1.distribution:0.3",
        gate="pass_rate",
        delta="pass_rate:0.1",
        alpha="0.01",
        min_pass_rate="distribution:0.5",
        reducer="golden:any",
        flaky="regression:ignore",
        max_position_bias="0.5",
    )
    records = [Record("golden-00", "golden", "t::test_a[golden-00]")]
    baseline = [r.to_json() for r in records]
    found = {low.key: low.message for low in lowered(baseline, base, records, now)}
    assert found == {
        "hard:adversarial": "adversarial is no longer a hard partition",
        "min_pass_rate:distribution": "minimum pass rate 85% -> 50%",
        # judge: from the defaults (4 on golden, 3 elsewhere) to 1 everywhere
        "threshold:judge": "threshold lowered: golden 4 -> 1, regression 3 -> 1, "
        "adversarial 3 -> 1, distribution 3 -> 1",
        "threshold:token_f1": "threshold lowered: distribution 0.5 -> 0.3",
        "reducer:golden": "reducer all -> any",
        "flaky:regression": "flaky fail -> ignore",
        "max_position_bias": "judge position bias allowed 0.3 -> 0.5",
        "gate:judge.distribution": "regression gate dropped",
        "delta:pass_rate": "delta raised 0.05 -> 0.1",
        "alpha": "alpha lowered 0.05 -> 0.01",
        "strict": "strict regression turned off",
    }
    assert lowered(baseline, now, records, now) == []
    # token_f1's override removed: back to the default 0.8, a raise, not a lowering.
    assert lowered(baseline, settings(thresholds="token_f1:0.5"), records, settings()) == []


def test_examples_deleted_moved_or_no_longer_tested_are_lowerings() -> None:
    hard = settings()
    baseline = [
        Record(e, p, f"t.py::{test}[{e}]").to_json()
        for e, p, test in (
            ("golden-00", "golden", "test_answer"),
            ("golden-00", "golden", "test_grounded"),
            ("golden-01", "golden", "test_answer"),
            ("golden-02", "golden", "test_answer"),
            ("regression-00", "regression", "test_answer"),
        )
    ]
    records = [
        Record("golden-00", "golden", "t.py::test_answer[golden-00]"),
        Record("golden-01", "distribution", "t.py::test_answer[golden-01]"),
    ]
    found = {low.key: low.message for low in lowered(baseline, hard, records, hard)}
    assert found == {
        "example:golden-00": "golden example no longer run by test_grounded",
        "example:golden-01": "moved from golden to distribution",
        "example:golden-02": "golden example not in this run (deleted, renamed or not selected)",
        # A whole hard partition gone is the largest lowering of all...
        "example:regression-00": "regression example not in this run (deleted, renamed "
        "or not selected)",
    }
    # ... unless the run selected (-m golden): then what it did not select is not compared.
    filtered = lowered(baseline, hard, records, hard, filtered=True)
    assert "example:regression-00" not in {low.key for low in filtered}


def test_a_shards_bar_is_its_share_of_the_baselines(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=4), SUITE, ini="llmeval_bar_locked = yes")
    assert pytester.runpytest("--llmeval-save-baseline=base.json").ret == 0
    for index in (1, 2):
        result = pytester.runpytest(f"--llmeval-shard={index}/2", "--llmeval-baseline=base.json")
        assert result.ret == 0
        assert not any(line.startswith("bar lowered") for line in result.outlines)


def test_a_url_is_recorded_without_its_credentials() -> None:
    recorded = settings(judge_base_url="https://u:sk-SECRET@gw.example/v1?key=sk-2").options
    assert recorded["judge_base_url"] == "https://gw.example/v1"
    assert settings(base_url="http://127.0.0.1:8000/v1").options["base_url"] == (
        "http://127.0.0.1:8000/v1"
    )
