"""Per-example samples and comparability metadata from the records of a run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.records import LLM_ERROR
from pytest_llmeval.runs.compare import compare_runs, decision, metadata, samples
from pytest_llmeval.runs.render import table_lines
from pytest_llmeval.runs.report import read_records
from pytest_llmeval.stats import holm


def record(example: str, status: str = "passed", **extra: Any) -> dict[str, Any]:
    return {
        "example_id": example,
        "partition": extra.pop("partition", "golden"),
        "status": status,
        "dataset": "support",
        "dataset_hash": "abc",
        "judge": [],
        **extra,
    }


def verdict(*scores: int | None, model: str = "judge-1", sha: str = "s1") -> dict[str, Any]:
    return {
        "kind": "rubric",
        "scores": list(scores),
        "model": model,
        "prompt_sha256": sha,
        "scale": [1, 5],
        "parser": "judge-verdict/1",
    }


def test_pass_rate_is_one_sample_per_example_and_lost_calls_are_missing() -> None:
    records = [
        record("a"),
        record("a"),  # both tests of a passed
        record("b"),
        record("b", "failed"),  # one failed: the example failed
        record("c", "error", failure_kind=f"{LLM_ERROR}timeout"),  # lost, not failed
        record("d", "error", failure_kind="assertion"),  # the app raised: a real failure
        record("e", "skipped"),
        record("f", "failed", partition="distribution"),
    ]
    assert samples(records, "pass_rate") == {
        "golden": {"a": [1.0], "b": [0.0], "c": [None], "d": [0.0]},
        "distribution": {"f": [0.0]},
    }


def test_judge_samples_gather_every_rubric_score_of_the_example() -> None:
    records = [
        record("a", judge=[verdict(4, None, 5), {"kind": "pairwise", "winner": "a"}]),
        record("a", judge=[verdict(3)]),
        record("b"),  # not judged: no sample
    ]
    assert samples(records, "judge") == {"golden": {"a": [4.0, None, 5.0, 3.0]}}
    with pytest.raises(ValueError, match="unknown gated metric 'bleu'"):
        samples(records, "bleu")


def test_metadata_names_what_must_match() -> None:
    records = [
        record("a", judge=[verdict(4)]),
        record("b", judge=[verdict(4, model="judge-2", sha="s2")]),
    ]
    assert metadata(records) == {
        "judge_model": ["judge-1", "judge-2"],
        "judge_prompt_sha256": ["s1", "s2"],
        "scale": [[1, 5]],
        "parser": ["judge-verdict/1"],
        "datasets": {"support": "abc"},
    }


def test_gated_metric_and_partition() -> None:
    from pytest_llmeval.settings import RegressionSettings

    settings = RegressionSettings(gate=(("judge", "golden"), ("pass_rate", None)))
    assert settings.gated("judge", "golden") and not settings.gated("judge", "distribution")
    assert settings.gated("pass_rate", "distribution")
    assert RegressionSettings().delta == {
        "judge": 0.3,
        "pass_rate": 0.05,
        "tool_calls": 0.05,
        "retrieval_recall": 0.05,
    }


def test_a_test_that_failed_before_the_judge_saw_its_answer_scores_the_minimum() -> None:
    judged = {"t::a", "t::b", "t::c"}
    records = [
        record("a", "failed", nodeid="t::a", failure_kind="assertion"),  # the app failed
        record("b", "error", nodeid="t::b", failure_kind=f"{LLM_ERROR}timeout"),  # lost
        record("c", nodeid="t::c", judge=[verdict(4)]),
        record("d", "failed", nodeid="t::d"),  # a test that never calls the judge
    ]
    assert samples(records, "judge", judged) == {"golden": {"a": [1.0], "b": [None], "c": [4.0]}}


def run_records(scores: dict[str, dict[str, int]], **extra: Any) -> list[dict[str, Any]]:
    """partition -> id -> judge score, as records that passed."""
    return [
        record(i, partition=p, nodeid=f"t::{i}", judge=[verdict(s, **extra)])
        for p, by_id in scores.items()
        for i, s in by_id.items()
    ]


def test_compare_runs_applies_holm_across_the_gated_family() -> None:
    from pytest_llmeval.settings import RegressionSettings

    ids = [f"x{i}" for i in range(100)]  # enough for identical runs to show NO_CHANGE
    base = {p: dict.fromkeys(ids, 4) for p in ("golden", "adversarial", "distribution")}
    cand = {
        "golden": dict.fromkeys(ids, 4),
        "adversarial": {i: 3 if n < 8 else 4 for n, i in enumerate(ids)},
        "distribution": {i: 2 if n < 50 else 4 for n, i in enumerate(ids)},
    }
    for name, by_id in cand.items():
        cand[name] = {f"{name}-{i}": s for i, s in by_id.items()}
        base[name] = {f"{name}-{i}": s for i, s in base[name].items()}
    settings = RegressionSettings(gate=(("judge", None),))
    results = compare_runs(run_records(base), run_records(cand), settings)
    assert [(c.partition, c.m) for c in results] == [
        ("golden", 3),
        ("adversarial", 3),
        ("distribution", 3),
    ]
    raw = [c.p_raw for c in results]
    assert [c.p_adj for c in results] == holm([p or 1.0 for p in raw])
    assert [c.verdict for c in results] == ["NO_CHANGE", "SIGNIFICANT_BUT_TRIVIAL", "REGRESSION"]
    assert [c.ci_level for c in results] == [1 - 0.05 / 3] * 3


def test_compare_runs_refuses_judge_scores_from_another_judge() -> None:
    from pytest_llmeval.settings import RegressionSettings

    scores = {"distribution": {f"x{i}": 4 for i in range(100)}}
    results = compare_runs(run_records(scores), run_records(scores, sha="s2"), RegressionSettings())
    assert [(c.metric, c.verdict, c.blocks) for c in results] == [
        ("pass_rate", "NO_CHANGE", False),
        ("judge", "REFUSED", True),
    ]
    assert results[1].mismatches == ("judge_prompt_sha256",)
    assert decision(results) == (
        True,
        "regression: BLOCK, judge[distribution] REFUSED (the judge prompt differs)",
    )


def test_a_changed_dataset_compares_the_shared_examples_and_warns() -> None:
    from pytest_llmeval.settings import RegressionSettings

    base = run_records({"distribution": {f"x{i}": 4 for i in range(40)}})
    cand = run_records({"distribution": {f"x{i}": 4 for i in range(10, 60)}})
    for r in cand:
        r["dataset_hash"] = "def"
    (result,) = compare_runs(base, cand, RegressionSettings(gate=(("judge", None),)))
    assert result.n == 30 and result.missing_frac == 0.0
    assert result.warnings[:2] == (
        "dataset 'support' changed (hash abc -> def): only the shared example ids are compared",
        "compared on the 30 examples both runs evaluated: 10 only in the baseline, 20 only in "
        "this run",
    )


def test_duplicate_scores_off_the_scale_are_errors_not_verdicts() -> None:
    from pytest_llmeval.settings import RegressionSettings

    base = run_records({"distribution": {"x": 4}})
    cand = run_records({"distribution": {"x": 7}})
    with pytest.raises(ValueError, match="outside"):
        compare_runs(base, cand, RegressionSettings())


def test_a_duplicated_record_is_an_error_naming_the_id() -> None:
    from pytest_llmeval.settings import RegressionSettings

    scores = {"distribution": {f"x{i}": 4 for i in range(10)}}
    run = run_records(scores)
    twice = [*run, run_records({"distribution": {"x3": 5}})[0]]  # t::x3 recorded again
    with pytest.raises(ValueError, match=r"^this run: duplicate example id 'x3': two records "):
        compare_runs(run, twice, RegressionSettings())
    with pytest.raises(ValueError, match=r"^the baseline: duplicate example id 'x3'"):
        compare_runs(twice, run, RegressionSettings())
    # Two tests of one example are two records, not a duplicate.
    other_test = [{**r, "nodeid": "u::" + r["example_id"]} for r in run]
    assert compare_runs(run, [*run, *other_test], RegressionSettings())


def test_a_baseline_sharing_fewer_than_half_of_the_examples_is_refused() -> None:
    from pytest_llmeval.settings import RegressionSettings

    base = run_records({"golden": {f"old-{i}": 4 for i in range(12)}})
    cand = run_records({"golden": {f"new-{i}": 4 for i in range(12)}})
    results = compare_runs(base, cand, RegressionSettings())
    assert [(c.metric, c.verdict, c.blocks, c.n, c.n_candidate) for c in results] == [
        ("pass_rate", "REFUSED", True, 0, 12),
        ("judge", "REFUSED", True, 0, 12),
    ]
    reason = (
        "the baseline shares 0 of 12 gated examples of golden with this run, fewer than "
        "half: they are not runs of the same dataset; save a new baseline"
    )
    assert results[1].line == f"Refused: {reason}. Blocking."
    lines = table_lines(results)  # not verbose: the reason is on the default output
    assert lines[2].split() == [
        "pass_rate", "golden", "—", "—", "—", "—", "—", "0", "—", "REFUSED"
    ]  # fmt: skip
    assert lines[-2:] == [
        f"  pass_rate[golden]: Refused: {reason}. Blocking.",
        f"  judge[golden]: Refused: {reason}. Blocking.",
    ]
    assert decision(results) == (
        True,
        "regression: BLOCK, pass_rate[golden] and judge[golden] REFUSED (the baseline "
        "shares 0 of 12 gated examples of golden with this run, fewer than half)",
    )
    assert decision(results, fails=False)[0] is False
    # 5 of 12 shared is under half; 6 of 12 is compared (with a warning, under -v).
    for shared, verdict in ((5, "REFUSED"), (6, "INSUFFICIENT_DATA")):
        mixed = run_records(
            {"golden": {f"{'old' if i < shared else 'new'}-{i}": 4 for i in range(12)}}
        )
        assert {c.verdict for c in compare_runs(base, mixed, RegressionSettings())} == {verdict}
    # A run that selected a few of the baseline's examples (-k) shares all of its own.
    few = run_records({"golden": {f"old-{i}": 4 for i in range(3)}})
    assert {c.verdict for c in compare_runs(base, few, RegressionSettings())} == {
        "INSUFFICIENT_DATA"
    }


def test_a_bad_delta_is_an_error_even_for_a_metric_the_runs_lack() -> None:
    from pytest_llmeval.settings import RegressionSettings

    run = [record(f"x{i}", partition="distribution") for i in range(10)]  # no judge verdicts
    for bad in (0.0, -0.3, math.nan, math.inf):
        settings = RegressionSettings(delta={"pass_rate": 0.05, "judge": bad})
        with pytest.raises(ValueError, match=r"llmeval_delta: judge:\S+ is not a positive number"):
            compare_runs(run, run, settings)


def test_the_decision_line_says_why_an_inconclusive_comparison_blocks_in_strict_mode() -> None:
    from pytest_llmeval.stats.regression import compare

    base = {f"x{i}": [4.0] for i in range(8)}
    worse = {f"x{i}": [4.0 if i % 2 else 3.0] for i in range(8)}
    options: dict[str, Any] = {"kind": "ordinal", "scale": (1, 5), "delta": 0.3}
    result = compare(base, worse, metric="judge", partition="golden", strict=True, **options)
    assert (result.verdict, result.blocks) == ("INSUFFICIENT_DATA", True)
    assert decision([result]) == (
        True,
        "regression: BLOCK, judge[golden] INSUFFICIENT_DATA (strict: the interval reaches "
        "\N{MINUS SIGN}δ)",
    )


def test_the_table_shows_an_undefined_mde_as_a_dash() -> None:
    from pytest_llmeval.stats.regression import compare

    same = {f"x{i}": [4.0] for i in range(8)}
    (line,) = table_lines(
        [
            compare(
                same,
                same,
                metric="judge",
                partition="golden",
                kind="ordinal",
                scale=(1, 5),
                delta=0.3,
            )
        ]
    )[2:3]
    assert line.split()[-2:] == ["—", "INSUFFICIENT_DATA"]


def test_read_records_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    with pytest.raises(ValueError, match=r"cannot read .*run\.json"):
        read_records(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"run\.json is not standard JSON"):
        read_records(path)
    path.write_text('{"format": "pytest-llmeval-report", "records": [], "x": NaN}')
    with pytest.raises(ValueError, match=r"run\.json is not standard JSON: NaN is not a number"):
        read_records(path)
    duplicated = [record("a", nodeid="t::a"), record("a", nodeid="t::a")]
    path.write_text(json.dumps({"format": "pytest-llmeval-report", "records": duplicated}))
    with pytest.raises(ValueError, match=r"run\.json: duplicate example id 'a'"):
        read_records(path)
    path.write_text(json.dumps({"format": "pytest-llmeval-report", "records": [{"x": 1}]}))
    with pytest.raises(ValueError, match="'records' must be a list of records with example_id"):
        read_records(path)
    path.write_text(json.dumps({"format": "pytest-llmeval-report", "records": [record("a")]}))
    assert read_records(path) == [record("a")]


def test_the_table_shows_every_comparison_and_the_line_of_each_verdict_that_matters() -> None:
    from pytest_llmeval.stats.regression import compare

    same = {f"x{i}": [4.0] for i in range(60)}
    worse = {f"x{i}": [2.0 if i < 30 else 4.0] for i in range(60)}
    options: dict[str, Any] = {"kind": "ordinal", "scale": (1, 5), "delta": 0.3, "m": 2}
    results = [
        compare(same, same, metric="judge", partition="golden", **options),
        compare(same, worse, metric="judge", partition="distribution", **options),
    ]
    lines = table_lines(results)
    assert lines[0] == "alpha 0.05 over 2 gated comparisons (Holm); CIs at 97.5%; δ judge 0.3"
    assert lines[1].split() == [
        "metric", "partition", "baseline", "candidate", "Δ", "CI", "p", "adj", "n", "MDE80",
        "verdict",
    ]  # fmt: skip
    assert lines[2].split()[-1] == "NO_CHANGE" and lines[2].split()[4] == "0.000"
    assert lines[3].split()[2:5] == ["4.000", "3.000", "\N{MINUS SIGN}1.000"]
    assert lines[3].split()[-1] == "REGRESSION"
    assert len(lines) == 5 and lines[4].startswith("  judge[distribution]: Candidate is worse")
    assert decision(results, fails=False) == (
        False,
        "regression: would BLOCK (judge[distribution] REGRESSION); llmeval_regression_fails = no",
    )
    assert table_lines([]) == [
        "no gated metric to compare (llmeval_gate, and the partitions of this run)"
    ]


def metric(name: str, score: float, passed: bool) -> dict[str, Any]:
    return {"name": name, "score": score, "threshold": 1.0, "passed": passed, "details": {}}


def test_pipeline_metrics_are_samples_of_their_examples() -> None:
    records = [
        record("a", metrics=[metric("tool_calls", 1.0, True)]),
        record("b", "failed", metrics=[metric("tool_calls", 0.5, False)]),  # half found: 0
        record("b", metrics=[metric("retrieval_recall", 0.5, False)]),
        record("c"),  # no such metric: not a sample
    ]
    assert samples(records, "tool_calls") == {"golden": {"a": [1.0], "b": [0.0]}}
    assert samples(records, "retrieval_recall") == {"golden": {"b": [0.5]}}


def test_a_tool_order_regression_is_blocked_by_the_statistics() -> None:
    from pytest_llmeval.settings import RegressionSettings

    def run(wrong: int) -> list[dict[str, Any]]:
        return [
            record(f"r{i}", partition="regression", metrics=[metric("tool_calls", 1.0, i >= wrong)])
            for i in range(40)
        ]

    settings = RegressionSettings(gate=(("tool_calls", "regression"),))
    (same,) = compare_runs(run(0), run(0), settings)  # type: ignore[arg-type]
    (worse,) = compare_runs(run(0), run(12), settings)  # type: ignore[arg-type]
    assert (same.metric, same.partition, same.blocks) == ("tool_calls", "regression", False)
    assert (worse.verdict, worse.down, worse.up, worse.blocks) == ("REGRESSION", 12, 0, True)
    assert decision([worse])[0]


def test_a_test_stopped_before_its_tool_calls_were_checked_counts_as_wrong() -> None:
    """An agent stopped at max_steps never reaches assert_tool_calls: a 0, not a
    missing example (a call lost after retries is missing)."""
    from pytest_llmeval.settings import RegressionSettings

    def run(stopped: int, lost: int = 0) -> list[dict[str, Any]]:
        records = []
        for i in range(40):
            if i < stopped:
                records.append(record(f"r{i}", "failed", failure_kind="max_steps"))
            elif i < stopped + lost:
                records.append(record(f"r{i}", "error", failure_kind=f"{LLM_ERROR}timeout"))
            else:
                records.append(record(f"r{i}", metrics=[metric("tool_calls", 1.0, True)]))
            records[-1].update(partition="regression", nodeid=f"t::test[r{i}]")
        return records

    assert samples(run(1, 1), "tool_calls", {"t::test[r0]", "t::test[r1]"})["regression"]["r0"] == [
        0.0
    ]
    settings = RegressionSettings(gate=(("tool_calls", "regression"),))
    (worse,) = compare_runs(run(0), run(10), settings)  # type: ignore[arg-type]
    assert (worse.verdict, worse.n, worse.down) == ("REGRESSION", 40, 10)
    (lost,) = compare_runs(run(0), run(0, lost=10), settings)  # type: ignore[arg-type]
    assert lost.n == 30 and not lost.blocks
