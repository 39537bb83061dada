"""Per-example samples and comparability metadata from the records of a run."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llmeval.baseline import metadata, samples
from pytest_llmeval.records import LLM_ERROR


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
    assert RegressionSettings().delta == {"judge": 0.3, "pass_rate": 0.05}
