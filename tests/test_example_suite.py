"""The example suite behaves as the README says: v1 passes, a wrong golden answer or the
v2 prompt fails the gates, and xdist changes nothing."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pytest_llmeval import load_dataset
from pytest_llmeval.embeddings import default_embedder

M = "\N{MINUS SIGN}"
HOLIDAY = "It is the holiday season"  # the v2 prompt's addition (example_suite/app.py)
JUDGE_PROMPTS = {
    "rubric": "on the 1-5 scale",
    "pairwise": "comparing two responses",
    "grounding": "against a context document",
}

SUITE = Path(__file__).resolve().parent.parent / "example_suite"


@pytest.fixture(scope="module", autouse=True)
def local_model() -> None:
    """Load the local embedding model before the in-process runs. pytester drops the
    modules that a run imports, and torch cannot be imported twice in one process; loaded
    here, it stays, and every run shares the one model."""
    default_embedder().embed(["warm up"])


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
            "golden rule: PASS, all 6 golden examples passed (36 tests)",
            "distribution (soft): PASS, pass rate * >= minimum 85.0%",
            "soft failures (7):",
        ]
    )
    # Against the committed baseline of v1: every judge score is the same (all d = 0).
    result.stdout.fnmatch_lines(
        [
            "regression against the baseline */baseline-v1.json:",
            "alpha 0.05 over 1 gated comparison (Holm); CIs at 95%; δ judge 0.3",
            "*",
            f"judge   distribution     4.627      4.627  0.000  [[]{M}0.279, 0.279]  1.000  51  "
            "    —  NO_CHANGE",
            "regression: PROCEED, no blocking verdict (1 comparison)",
        ],
        consecutive=True,
    )


def test_golden_gate_selects_only_golden(pytester: pytest.Pytester, suite: Path) -> None:
    result = pytester.runpytest(str(suite), "-m", "golden")
    assert result.ret == pytest.ExitCode.OK
    assert verdicts(result) == ["golden rule: PASS, all 6 golden examples passed (36 tests)"]


def cached_replies(suite: Path) -> dict[str, tuple[str, str]]:
    """Cache key -> (who asked: the app or which judge prompt, the recorded reply)."""
    replies = {}
    for path in (suite / "llmeval-cache").glob("*/*.json"):
        entry = json.loads(path.read_text())
        system = entry["request"]["messages"][0]["content"]
        asker = next((k for k, text in JUDGE_PROMPTS.items() if text in system), "app")
        replies[entry["key"]] = (asker, entry["response"]["choices"][0]["message"]["content"])
    return replies


def test_one_wrong_golden_answer_fails_and_is_named(pytester: pytest.Pytester, suite: Path) -> None:
    victim = next(ex for ex in load_dataset(suite / "datasets") if ex.partition == "golden")
    for path in (suite / "llmeval-cache").glob("*/*.json"):
        entry = json.loads(path.read_text())
        system, question = entry["request"]["messages"]
        if question["content"] == victim.input["question"] and HOLIDAY not in system["content"]:
            entry["response"]["choices"][0]["message"]["content"] = (
                "I'm not sure, please check our website.\n\n— Brightdesk Support"
            )
            path.write_text(json.dumps(entry))
    result = pytester.runpytest(str(suite), "-m", "golden")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"golden rule: FAIL, 1 of 6 golden examples did not pass*: {victim.id}*"]
    )


# The examples re-recorded: a golden one (the app under both prompt versions, the rubric
# and the pairwise judge), a distribution one and a calibration one (the grounding judge).
# The similarity tests are left out: they ask no model (local embeddings), and would cost
# each of the two runs a torch import.
RECORDED_SAMPLE = (
    "(golden-refund-window or distribution-starter-price or calibration-team-price-wrong)"
    " and not similarity and not means_the_reference"
)


def cache_entries(suite: Path) -> dict[str, str]:
    """Cache file -> its entry as canonical JSON (keys sorted), without the two fields
    that differ on every recording: when it was recorded and how long the call took."""
    entries = {}
    for path in (suite / "llmeval-cache").glob("*/*.json"):
        entry = json.loads(path.read_text())
        del entry["created_at"], entry["latency_s"]
        entries[path.name] = json.dumps(entry, sort_keys=True, ensure_ascii=False)
    return entries


def test_the_committed_cache_is_what_the_demo_server_records(suite: Path) -> None:
    """The one documented command regenerates the cache, byte for byte but for the time
    of recording and the latency. Run on a sample of the suite (``-k``, through
    ``PYTEST_ADDOPTS``, which the command's pytest runs inherit) that asks every kind of
    request the cache holds (the whole suite took three times as long)."""
    committed = cached_replies(suite)
    committed_entries = cache_entries(suite)
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    subprocess.run(
        [sys.executable, str(suite / "demo_server.py"), "record"],
        cwd=suite,
        env={**os.environ, "PYTEST_ADDOPTS": f"{addopts} -k {shlex.quote(RECORDED_SAMPLE)}"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    recorded = cache_entries(suite)  # the command emptied the cache first: the sample's
    assert recorded and {name: committed_entries.get(name) for name in recorded} == recorded
    sample = cached_replies(suite)
    assert {key: committed.get(key) for key in sample} == sample
    # The sample asks for every kind of entry: both prompt versions' answers, each judge.
    versions = {
        HOLIDAY in json.loads(text)["request"]["messages"][0]["content"]
        for text in recorded.values()
    }
    assert versions == {False, True}
    assert set(Counter(asker for asker, _ in sample.values())) == {*JUDGE_PROMPTS, "app"}
    askers = Counter(asker for asker, _ in committed.values())
    assert askers["app"] == 100  # 50 questions, two prompt versions
    assert askers["grounding"] == 13  # the calibration set's responses
    assert askers["rubric"] > 50 and askers["pairwise"] > 0


def test_v2_prompt_fails_the_gates_the_same_way_under_xdist(
    pytester: pytest.Pytester, suite: Path
) -> None:
    # Without the embedding tests, which ask no model and would cost each xdist worker
    # the import of torch and sentence-transformers (v1's runs include them).
    asking = ("--prompt-version", "v2", "-k", "not similarity and not means_the_reference")
    serial = pytester.runpytest(str(suite), *asking)
    parallel = pytester.runpytest(str(suite), *asking, "-n", "2")
    assert serial.ret == parallel.ret == pytest.ExitCode.TESTS_FAILED
    assert verdicts(serial) == verdicts(parallel)
    assert [line.split(":")[1].split(",")[0].strip() for line in verdicts(serial)] == [
        "FAIL",
        "FAIL",
        "FAIL",
        "FAIL",
    ]
    # And the statistics block it against the committed baseline of v1.
    for result in (serial, parallel):
        result.stdout.fnmatch_lines(
            [
                f"judge   distribution     4.627      2.314  {M}2.314  [[]{M}2.869, {M}1.758]  "
                "<0.001  51  0.790  REGRESSION",
                f"  judge[distribution]: Candidate is worse by 2.31 (95% CI {M}2.87 to {M}1.76); "
                "unlikely to be noise (p<0.001). Blocking.",
                "regression: BLOCK, judge[distribution] REGRESSION",
            ],
            consecutive=True,
        )
