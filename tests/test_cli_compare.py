"""``llmeval compare`` on hand-written reports: usage errors, refusals, standard JSON.
(The end-to-end case, reports written by real runs, is in test_regression_run.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.cli import main


def report(path: Path, ids: list[str], *, judged: bool = True) -> str:
    """A report of passed golden tests, each judged 4 (or not judged)."""
    verdict = {
        "kind": "rubric",
        "scores": [4],
        "model": "judge-1",
        "prompt_sha256": "s1",
        "scale": [1, 5],
        "parser": "judge-verdict/1",
    }
    records = [
        {
            "example_id": i,
            "partition": "golden",
            "status": "passed",
            "nodeid": f"t::{i}",
            "judge": [verdict] if judged else [],
        }
        for i in ids
    ]
    path.write_text(json.dumps({"format": "pytest-llmeval-report", "records": records}))
    return str(path)


def strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in the output: not standard JSON")

    return json.loads(text, parse_constant=refuse)


IDS = [f"q{i}" for i in range(12)]


@pytest.mark.parametrize("bad", ["judge:0", "judge:-0.3", "judge:nan", "judge:inf"])
def test_a_bad_delta_is_a_usage_error_even_when_no_report_has_the_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    base = report(tmp_path / "base.json", IDS, judged=False)
    assert main(["compare", base, base]) == 0  # no judge scores: only pass_rate compared
    capsys.readouterr()
    assert main(["compare", base, base, "--delta", bad]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("llmeval compare: llmeval_delta: ")


def test_a_baseline_of_other_examples_is_refused_on_the_default_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = report(tmp_path / "base.json", [f"old-{i}" for i in IDS])
    cand = report(tmp_path / "cand.json", IDS)
    assert main(["compare", base, cand]) == 1
    out = capsys.readouterr().out.splitlines()
    reason = (
        "the baseline shares 0 of 12 gated examples of golden with this run, fewer than "
        "half: they are not runs of the same dataset; save a new baseline"
    )
    assert f"  judge[golden]: Refused: {reason}. Blocking." in out
    assert out[-1] == (
        "regression: BLOCK, pass_rate[golden] and judge[golden] REFUSED (the baseline shares "
        "0 of 12 gated examples of golden with this run, fewer than half)"
    )


def test_json_is_standard_and_an_undefined_mde_is_null(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = report(tmp_path / "base.json", IDS)
    assert main(["compare", base, base, "--json"]) == 0
    document = strict_json(capsys.readouterr().out)
    assert document["decision"] == "regression: PROCEED, no blocking verdict (2 comparisons)"
    for c in document["comparisons"]:
        assert (c["test"], c["mde80"], c["n_needed"]) == ("all_zero", None, None)


def test_a_duplicated_record_is_a_usage_error_naming_the_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = report(tmp_path / "base.json", IDS)
    cand = report(tmp_path / "cand.json", [*IDS, "q7"])
    assert main(["compare", base, cand]) == 2
    assert capsys.readouterr().err == (
        f"llmeval compare: {cand}: duplicate example id 'q7': two records of the test t::q7; "
        "a run records each test of an example once (was the report merged or edited?)\n"
    )
