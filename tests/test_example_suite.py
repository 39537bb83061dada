"""The example suite behaves as the README says: v1 passes, a wrong golden answer or the
v2 prompt fails the gates, and xdist changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parent.parent / "example_suite"


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
    result = pytester.runpytest(str(suite))
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "golden rule: PASS, all 6 golden examples passed (18 tests)",
            "distribution (soft): PASS, pass rate * >= minimum 85.0%",
            "soft failures (2):",
        ]
    )


def test_golden_gate_selects_only_golden(pytester: pytest.Pytester, suite: Path) -> None:
    result = pytester.runpytest(str(suite), "-m", "golden")
    assert result.ret == pytest.ExitCode.OK
    assert verdicts(result) == ["golden rule: PASS, all 6 golden examples passed (18 tests)"]


def test_one_wrong_golden_answer_fails_and_is_named(pytester: pytest.Pytester, suite: Path) -> None:
    answers = suite / "answers" / "v1.jsonl"
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    victim = next(r for r in rows if r["id"].startswith("golden-"))
    victim["output"] = "I'm not sure, please check our website. — Brightdesk Support"
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = pytester.runpytest(str(suite), "-m", "golden")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"golden rule: FAIL, 1 of 6 golden examples did not pass*: {victim['id']}"]
    )


def test_v2_prompt_fails_the_gates_the_same_way_under_xdist(
    pytester: pytest.Pytester, suite: Path
) -> None:
    serial = pytester.runpytest(str(suite), "--prompt-version", "v2")
    parallel = pytester.runpytest(str(suite), "--prompt-version", "v2", "-n", "2")
    assert serial.ret == parallel.ret == pytest.ExitCode.TESTS_FAILED
    assert verdicts(serial) == verdicts(parallel)
    assert [line.split(":")[1].split(",")[0].strip() for line in verdicts(serial)] == [
        "FAIL",
        "FAIL",
        "FAIL",
        "FAIL",
    ]
