"""The power plan before a run (runs/plan.py) and ``llmeval plan``: MDE80 from the
baseline's draw-to-draw variance checked against a direct computation, the fewest draws
reaching δ, the cases where draws cannot help, the expected calls and cost, and a
simulation showing that a drop of the planned MDE80 is detected about 80% of the time."""

from __future__ import annotations

import json
import math
import re
import shlex
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pytest_llmeval.cli import main
from pytest_llmeval.runs.plan import plan, plan_lines
from pytest_llmeval.settings import RegressionSettings
from pytest_llmeval.stats import compare

ROOT = Path(__file__).resolve().parent.parent
DELTAS = {"pass_rate": 0.05, "judge": 0.3, "tool_calls": 0.05, "retrieval_recall": 0.05}


def settings(gate: str = "judge.golden", alpha: float = 0.05, **delta: float) -> RegressionSettings:
    gates = []
    for item in gate.split():
        metric, _, partition = item.partition(".")
        gates.append((metric, partition or None))
    return RegressionSettings(gate=tuple(gates), delta={**DELTAS, **delta}, alpha=alpha)


def verdict(*scores: float) -> dict[str, Any]:
    return {
        "kind": "rubric",
        "scores": list(scores),
        "model": "judge-1",
        "prompt_sha256": "s1",
        "scale": [1, 5],
        "parser": "judge-verdict/1",
    }


def record(
    example: str,
    draw: int | None,
    *scores: float,
    partition: str = "golden",
    status: str = "passed",
    calls: int = 2,
    usage: dict[str, Any] | None = None,
    cost: float | None = None,
    hits: int = 0,
) -> dict[str, Any]:
    suffix = "" if draw is None else f"-r{draw}"
    return {
        "example_id": example,
        "partition": partition,
        "nodeid": f"t.py::test_answer[{example}{suffix}]",
        "draw": draw,
        "status": status,
        "judge": [verdict(*scores)] if scores else [],
        "llm_calls": calls,
        "cache_hits": hits,
        "cost_usd": cost,
        "usage": usage or {},
    }


def judged(draws: dict[str, list[float]], partition: str = "golden") -> list[dict[str, Any]]:
    """A run whose example i was judged draws[i][j] in its draw j + 1."""
    return [
        record(example, j + 1 if len(scores) > 1 else None, score, partition=partition)
        for example, scores in draws.items()
        for j, score in enumerate(scores)
    ]


# Twelve examples drawn three times: some agree with themselves, some do not.
PATTERNS = [[4, 4, 4], [4, 5, 4], [3, 4, 5], [2, 2, 3], [5, 5, 5], [1, 3, 2]]
THREE = {f"g{i:02d}": [float(s) for s in PATTERNS[i % 6]] for i in range(12)}


def direct_mde(draw_scores: dict[str, list[float]], r: int, alpha_prime: float) -> float:
    """MDE80 as the module docstring writes it, computed here from scratch."""
    within = statistics.fmean(statistics.variance(v) for v in draw_scores.values())
    k = statistics.fmean(1 / len(v) for v in draw_scores.values())
    n = len(draw_scores)
    sd = math.sqrt(within * (k + 1 / r))
    t = scipy_stats.t.ppf(1 - alpha_prime / 2, n - 1) + scipy_stats.t.ppf(0.8, n - 1)
    return float(t * sd / math.sqrt(n))


@pytest.mark.parametrize("r", [1, 2, 3, 5])
def test_mde80_is_the_noise_floor_of_the_baseline_and_r_candidate_draws(r: int) -> None:
    result = plan(judged(THREE), settings(), draws={"golden": r})
    (c,) = result.comparisons
    assert (c.n, c.draws, c.baseline_draws) == (12, r, 3)
    assert c.within == pytest.approx(
        statistics.fmean(statistics.variance(v) for v in THREE.values())
    )
    assert c.mde80 == pytest.approx(direct_mde(THREE, r, 0.05))
    assert result.draws == {"golden": r}  # draws given are draws kept


def test_auto_picks_the_fewest_draws_that_reach_delta() -> None:
    mdes = [direct_mde(THREE, r, 0.05) for r in range(1, 6)]
    assert mdes == sorted(mdes, reverse=True)  # more draws, smaller MDE80
    delta = (mdes[1] + mdes[2]) / 2  # 3 draws reach it, 2 do not
    result = plan(judged(THREE), settings(judge=delta))
    (c,) = result.comparisons
    assert (result.draws, c.draws, c.needed, c.status) == ({"golden": 3}, 3, 3, "ok")
    assert c.mde80 == pytest.approx(mdes[2])
    assert (
        c.line()
        == f"golden judge: 12 examples x 3 draws: MDE80 {mdes[2]:.3f} <= delta {delta:g}, ok"
    )
    # The same δ with one draw fixed: underpowered, and says what would reach it.
    fixed = plan(judged(THREE), settings(judge=delta), draws={"golden": 1}).comparisons[0]
    assert fixed.status == "underpowered" and fixed.needed == 3
    assert fixed.line() == (
        f"golden judge: 12 examples x 1 draw: MDE80 {mdes[0]:.3f} > delta {delta:g}, "
        f"underpowered: 3 draws per example would reach {delta:g}"
    )
    # A δ one draw reaches: one draw.
    assert plan(judged(THREE), settings(judge=mdes[0] + 0.01)).draws == {"golden": 1}


def test_no_draws_up_to_the_cap_reach_delta_then_the_cap_and_the_examples_needed() -> None:
    result = plan(judged(THREE), settings(judge=0.1), repeat_max=4)
    (c,) = result.comparisons
    assert (result.draws, c.status, c.needed) == ({"golden": 4}, "underpowered", None)
    assert c.mde80 == pytest.approx(direct_mde(THREE, 4, 0.05))
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert c.n_needed == math.ceil((z * (c.sd_d or 0) / 0.1) ** 2)
    assert c.line().endswith(
        f"underpowered: no number of draws up to 4 reaches 0.1: about {c.n_needed} examples "
        "are needed"
    )


def test_the_baseline_term_is_a_floor_draws_cannot_go_below() -> None:
    """Only the candidate's term shrinks with r: with the baseline drawn once per example
    for some, twice for others, its own noise stays."""
    uneven = {i: v[:2] if int(i[1:]) % 2 else v for i, v in THREE.items()}
    c = plan(judged(uneven), settings(), draws={"golden": 1000}).comparisons[0]
    within = statistics.fmean(statistics.variance(v) for v in uneven.values())
    floor = within * statistics.fmean(1 / len(v) for v in uneven.values())
    assert (c.sd_d or 0) ** 2 == pytest.approx(floor + within / 1000)


def test_within_variance_unknown_when_the_baseline_drew_each_example_once() -> None:
    once = {i: v[:1] for i, v in THREE.items()}
    result = plan(judged(once), settings(judge=0.01))
    (c,) = result.comparisons
    assert (c.status, c.within, c.mde80, c.needed, result.draws) == (
        "unknown",
        None,
        None,
        None,
        {"golden": 1},
    )
    assert c.line() == (
        "golden judge: 12 examples x 1 draw: within-example variance unknown (1 draw per "
        "example in the baseline): run the baseline with --llmeval-repeat 2 or more to plan draws"
    )


def test_draws_that_always_agree_and_too_few_examples_ask_for_no_draws() -> None:
    steady = {i: [v[0]] * 3 for i, v in THREE.items()}
    c = plan(judged(steady), settings(judge=0.01)).comparisons[0]
    assert (c.status, c.within, c.draws) == ("no_noise", 0.0, 1)
    assert c.line() == (
        "golden judge: 12 examples x 1 draw: the baseline's 3 draws of each example always "
        "agree: more draws would not help"
    )
    few = {i: v for i, v in list(THREE.items())[:5]}
    c = plan(judged(few), settings(judge=0.01)).comparisons[0]
    assert (c.status, c.draws, c.n_min) == ("too_few", 1, 6)
    assert c.line() == (
        "golden judge: 5 examples: fewer than the 6 examples any verdict needs at this "
        "alpha: draws would not help"
    )


def test_pass_rate_draws_are_one_sample_each_and_the_family_sets_alpha_prime() -> None:
    """pass_rate and judge gated on two partitions: m = 4, MDE80 at alpha/4; a partition
    runs the most draws any of its comparisons needs."""
    flaky = [
        record(
            f"r{i}",
            j + 1,
            4.0,
            partition="regression",
            status="failed" if (i + j) % 3 == 0 else "passed",
        )
        for i in range(10)
        for j in range(3)
    ]
    runs = judged(THREE) + flaky
    result = plan(runs, settings("pass_rate judge", judge=0.9, pass_rate=0.9))
    assert [(c.metric, c.partition) for c in result.comparisons] == [
        ("pass_rate", "golden"),
        ("pass_rate", "regression"),
        ("judge", "golden"),
        ("judge", "regression"),
    ]
    assert result.m == 4
    rate = next(
        c for c in result.comparisons if c.partition == "regression" and c.metric == "pass_rate"
    )
    outcomes = {f"r{i}": [float((i + j) % 3 != 0) for j in range(3)] for i in range(10)}
    assert rate.within == pytest.approx(
        statistics.fmean(statistics.variance(v) for v in outcomes.values())
    )
    assert rate.mde80 == pytest.approx(direct_mde(outcomes, rate.draws, 0.05 / 4))
    golden = [c for c in result.comparisons if c.partition == "golden"]
    assert result.draws["golden"] == max(c.needed or 1 for c in golden)
    judge_golden = golden[1]
    assert judge_golden.mde80 == pytest.approx(direct_mde(THREE, result.draws["golden"], 0.05 / 4))


def test_selected_examples_set_n_and_the_partitions() -> None:
    result = plan(judged(THREE), settings(), draws={"golden": 2}, selected={"golden": 40})
    (c,) = result.comparisons
    assert c.n == 40
    assert c.mde80 == pytest.approx(
        direct_mde(THREE, 2, 0.05) * math.sqrt(12 / 40) * _t_ratio(40, 12)
    )
    # A partition the run does not select is not planned.
    assert plan(judged(THREE), settings(), selected={"distribution": 30}).comparisons == ()


def _t_ratio(n: int, n0: int) -> float:
    def t(df: int) -> float:
        return float(scipy_stats.t.ppf(0.975, df) + scipy_stats.t.ppf(0.8, df))

    return t(n - 1) / t(n0 - 1)


USAGE = {
    "app-1": {
        "calls": 1,
        "cache_hits": 0,
        "requests": 1,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "cost_usd": None,
    },
    "judge-1": {
        "calls": 1,
        "cache_hits": 0,
        "requests": 1,
        "prompt_tokens": 2000,
        "completion_tokens": 100,
        "cost_usd": None,
    },
}
PRICES = {"app-1": (0.15, 0.60), "judge-1": (0.40, 1.60)}
PER_CALL = {"app-1": (1000 * 0.15 + 500 * 0.60) / 1e6, "judge-1": (2000 * 0.40 + 100 * 1.60) / 1e6}


def test_expected_calls_and_cost_scale_with_examples_and_draws() -> None:
    runs = [
        record(i, j + 1, s, usage=USAGE, cost=0.002)
        for i, v in THREE.items()
        for j, s in enumerate(v)
    ]
    runs += [
        record(f"d{i}", None, 4.0, partition="distribution", usage=USAGE, cost=0.002)
        for i in range(20)
    ]
    per_draw = sum(PER_CALL.values())
    priced = plan(runs, settings(), draws={"golden": 2}, prices=PRICES)
    assert priced.draws == {"golden": 2, "distribution": 1}
    assert priced.calls == 2 * (12 * 2 + 20)
    assert priced.cost_usd == pytest.approx(per_draw * (12 * 2 + 20))
    assert (
        plan_lines(priced)[-1]
        == f"expected: 88 model calls, ${per_draw * 44:.2f} at the price table's rates"
    )
    recorded = plan(runs, settings(), draws={"golden": 2})
    assert (recorded.cost_source, recorded.cost_usd) == ("recorded", pytest.approx(0.002 * 44))
    assert (
        plan_lines(recorded)[-1]
        == "expected: 88 model calls, $0.09 at the baseline's recorded cost"
    )
    # Calls replayed from a cache that kept no token counts, and no recorded cost.
    bare = [record(i, None, 4.0, hits=2) for i in THREE]
    assert plan_lines(plan(bare, settings(), prices=PRICES))[-1] == (
        "expected: 24 model calls, cost unknown (the baseline's calls carry no token counts "
        "or prices)"
    )
    assert plan_lines(plan(bare, settings()))[-1] == (
        "expected: 24 model calls, cost unknown (no price table, and the baseline recorded no cost)"
    )


def test_plan_json_is_standard() -> None:
    result = plan(judged(THREE), settings(judge=0.5))
    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert document["draws"] == result.draws and document["m"] == 1
    assert document["comparisons"][0]["mde80"] == result.comparisons[0].mde80
    with pytest.raises(ValueError, match="repeat_max 0"):
        plan(judged(THREE), settings(), repeat_max=0)


# -- the command line ----------------------------------------------------------------------


def write_report(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"format": "pytest-llmeval-report", "records": records}))
    return str(path)


def test_llmeval_plan_prints_the_plan_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_report(tmp_path / "base.json", judged(THREE))
    assert main(["plan", base, "--gate", "judge.golden", "--delta", "judge:0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = plan_lines(plan(judged(THREE), settings(judge=0.5)))
    assert out == [f"power plan of a run against the baseline {base}:", *expected]
    assert main(["plan", base, "--delta", "judge:0.5", "--repeat-max", "2", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["baseline"] == base and document["repeat_max"] == 2
    # --repeat as llmeval_repeat: the draws the run makes, planned as they are.
    for repeat, draws in (("2", 2), ("golden:3 distribution:1", 3), ("distribution:2", 1)):
        assert main(["plan", base, "--gate", "judge", "--repeat", repeat, "--json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["draws"] == {"golden": draws}
        assert document["comparisons"][0]["mde80"] == pytest.approx(direct_mde(THREE, draws, 0.05))


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--delta", "judge:0"], "llmeval plan: llmeval_delta: "),
        (["--alpha", "2"], "llmeval plan: llmeval_alpha: "),
        (["--gate", "nope"], "llmeval plan: llmeval_gate: "),
        (["--repeat-max", "0"], "llmeval plan: --repeat-max: '0' is not a whole number >= 1"),
        (["--prices", "app=x"], "llmeval plan: --prices: 'app=x' is not of the form"),
        (["--repeat", "golden:0"], "llmeval plan: --repeat: 'golden:0' is not auto, a number"),
        (["--repeat", "0"], "llmeval plan: --repeat: '0' is not auto, a number"),
    ],
)
def test_a_bad_value_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str], message: str
) -> None:
    base = write_report(tmp_path / "base.json", judged(THREE))
    assert main(["plan", base, *flag]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(message)
    assert main(["plan", str(tmp_path / "missing.json")]) == 2


# -- honesty: the planned MDE80 is detected about 80% of the time ---------------------------


def test_a_drop_of_the_planned_mde80_is_detected_about_80_percent_of_the_time() -> None:
    """n = 30 examples with example means spread by sd 0.8 and draws by sd 1.0 around
    them. The plan, from one baseline of 4 draws per example, picks r; then 300 runs
    (a baseline of 4 draws, a candidate of r draws lower by the planned MDE80 on every
    example) are compared through the public API."""
    rng = np.random.default_rng(15)
    n, k_base, between, within = 30, 4, 0.8, 1.0
    means = 3 + between * rng.standard_normal(n)
    ids = [f"e{i:02d}" for i in range(n)]

    def draws(k: int, shift: float = 0.0) -> dict[str, list[float | None]]:
        values = means[:, None] + shift + within * rng.standard_normal((n, k))
        return {i: [float(v) for v in row] for i, row in zip(ids, values, strict=True)}

    pilot = draws(k_base)
    result = plan(judged(pilot), settings(judge=0.42))
    (c,) = result.comparisons
    assert c.draws > 1 and c.mde80 is not None and c.mde80 <= 0.42  # one draw falls short
    detected = 0
    for _ in range(300):
        comparison = compare(
            draws(k_base),
            draws(c.draws, -c.mde80),
            kind="continuous",
            scale=(-100.0, 100.0),
            delta=0.42,
        )
        detected += (
            comparison.p_adj is not None
            and comparison.p_adj < 0.05
            and (comparison.effect or 0) < 0
        )
    print(f"planned r {c.draws}, MDE80 {c.mde80:.3f}: detected {detected} of 300")
    assert 0.7 <= detected / 300 <= 0.9, detected / 300


# -- the README's plan -----------------------------------------------------------------------

# The README's baseline: a support suite saved with --llmeval-repeat 3, except for its
# regression partition (drawn once), each draw judged once.
PATTERNS_BY_PARTITION = {
    "golden": (20, [[5, 5, 5], [4, 5, 4], [4, 4, 4], [5, 4, 5], [3, 3, 4], [4, 4, 4]]),
    "adversarial": (10, [[1, 3, 5], [2, 4, 3], [5, 3, 4], [1, 2, 2], [4, 4, 5]]),
    "distribution": (51, [[4, 4, 4], [4, 5, 4], [5, 5, 5], [3, 3, 4], [4, 4, 4], [5, 4, 5]]),
    "regression": (8, [[4]]),
}


def readme_baseline() -> list[dict[str, Any]]:
    return [
        record(
            f"{partition}-{i:02d}",
            j + 1 if len(patterns[0]) > 1 else None,
            float(score),
            partition=partition,
            usage=USAGE,
        )
        for partition, (count, patterns) in PATTERNS_BY_PARTITION.items()
        for i in range(count)
        for j, score in enumerate(patterns[i % len(patterns)])
    ]


def readme_block() -> tuple[str, list[str]]:
    """The command and the output block of the README's plan section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.partition("\n### A power plan before the run\n")[2].partition("\n## ")[0]
    found = re.search(r"```bash\n(.*?)\n```\n.*?```\n(.*?)```", section, re.S)
    assert found, "no command and output block in the README's plan section"
    return found.group(1), found.group(2).splitlines()


def test_the_readme_plan_is_this_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command, shown = readme_block()
    args = shlex.split(command)
    assert args[:3] == ["llmeval", "plan", "baseline.json"]
    (tmp_path / "baseline.json").write_text(
        json.dumps({"format": "pytest-llmeval-report", "records": readme_baseline()})
    )
    assert main(["plan", str(tmp_path / "baseline.json"), *args[3:]]) == 0
    out = capsys.readouterr().out.replace(str(tmp_path / "baseline.json"), "baseline.json")
    assert out.splitlines() == shown
