"""The monitor: sampler, worker, storage, alerts, windows and drift."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval import max_length
from pytest_llmeval.monitor import (
    Alert,
    AlertSpec,
    Evaluation,
    Monitor,
    Sample,
    Sampler,
    Store,
    baseline_scores,
    constraints_evaluator,
    grounding_evaluator,
)
from pytest_llmeval.monitor.windows import aggregate, drift, quantile

HOUR = 3600.0
DAY0 = 1_800_000_000.0 - 1_800_000_000.0 % 86_400  # a midnight, UTC


def utc_hour(ts: float) -> int:
    return int(ts // HOUR) % 24


# --- the sampler -----------------------------------------------------------------------


def test_every_hour_keeps_its_rate_within_one_sample() -> None:
    sampler = Sampler(0.05, seed=7, slow=False, stratum=utc_hour)
    rng = random.Random(1)
    # Busy afternoons, quiet nights: 40 to 4,000 requests an hour.
    for hour in range(24):
        for _ in range(40 if hour < 6 else 4000 if 12 <= hour < 18 else 600):
            sampler.decide("q", ts=DAY0 + hour * HOUR + rng.random() * HOUR)
    strata = sampler.strata()
    assert len(strata) == 24
    for stats in strata.values():
        assert abs(stats["sampled"] - 0.05 * stats["seen"]) < 1
    assert sampler.counts["base"] == sum(s["sampled"] for s in strata.values())


def test_a_seed_repeats_the_choices_and_another_seed_does_not() -> None:
    def choices(seed: int) -> list[bool]:
        sampler = Sampler(0.1, seed=seed, stratum=utc_hour)
        return [sampler.decide("q", ts=DAY0 + i) is not None for i in range(2000)]

    assert choices(3) == choices(3)
    assert choices(3) != choices(4)


def test_patterns_errors_and_slow_requests_are_always_sampled() -> None:
    sampler = Sampler(
        0.0, always=[r"\brefund", lambda text: text.startswith("VIP")], seed=1, slow_after=100
    )
    assert sampler.decide("Can I get a REFUND?", ts=DAY0) == "pattern"
    assert sampler.decide("VIP: hello", ts=DAY0) == "pattern"
    assert sampler.decide("hello", ts=DAY0, error=True) == "error"
    assert sampler.decide("hello", ts=DAY0) is None
    # No p95 before 100 latencies; then anything slower than it.
    for i in range(99):
        assert sampler.decide("hello", ts=DAY0, latency_s=10.0 + i) is None
    assert sampler.p95 is None
    assert sampler.decide("hello", ts=DAY0, latency_s=0.5) is None
    assert sampler.p95 == pytest.approx(104.0)
    assert sampler.decide("hello", ts=DAY0, latency_s=105.0) == "slow"
    assert sampler.decide("hello", ts=DAY0, latency_s=50.0) is None
    assert Sampler(0.0, slow=False, errors=False).decide("x", ts=DAY0, error=True) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        Sampler(1.5)


def test_the_sampler_is_exact_under_many_threads() -> None:
    sampler = Sampler(0.25, seed=1, slow=False, stratum=lambda ts: 0)
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        for _ in range(5000):
            sampler.decide("q", ts=DAY0)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sampler.strata()[0]["seen"] == 40_000
    assert abs(sampler.strata()[0]["sampled"] - 10_000) < 1


# --- the worker ------------------------------------------------------------------------


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = DAY0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def everything(**options: Any) -> Sampler:
    return Sampler(1.0, slow=False, **options)


def monitor(tmp_path: Path, evaluators: Any, **options: Any) -> Monitor:
    options.setdefault("sampler", everything())
    options.setdefault("flush_interval", 0.01)
    return Monitor(tmp_path / "monitor.db", evaluators, **options)


def test_every_accepted_sample_is_evaluated_and_stored_after_stop(tmp_path: Path) -> None:
    async def slow_score(sample: Sample) -> float:
        await asyncio.sleep(0.01)
        return 4.0

    mon = monitor(tmp_path, {"score": slow_score}, concurrency=4).start()
    outcomes = [mon.push(f"r{i}", {"question": f"q{i}"}, "answer") for i in range(300)]
    stats = mon.stop()
    assert outcomes == ["accepted"] * 300
    assert (stats.accepted, stats.acknowledged, stats.evaluated, stats.in_flight) == (
        300,
        300,
        300,
        0,
    )
    store = Store(tmp_path / "monitor.db")
    samples = store.samples()
    assert [s.request_id for s in samples] == [f"r{i}" for i in range(300)]
    assert {s.status for s in samples} == {"evaluated"}
    assert samples[0].results["score"] == {"kind": "custom", "score": 4.0, "passed": None}
    assert samples[0].input == {"question": "q0"} and samples[0].reason == "base"


def test_a_full_queue_drops_without_waiting_and_counts_exactly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def blocked(sample: Sample) -> bool:
        release.wait()
        return True

    mon = monitor(tmp_path, {"blocked": blocked}, queue_size=50, concurrency=2).start()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def pusher(n: int) -> None:
        barrier.wait()
        mine = [mon.push(f"t{n}-{i}", "q", "a") for i in range(500)]
        outcomes.extend(mine)

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # returns although no evaluation has finished: push never waits
    assert outcomes.count("accepted") == 50 and outcomes.count("dropped") == 1950
    release.set()
    stats = mon.stop()
    assert (stats.pushed, stats.accepted, stats.dropped, stats.evaluated) == (2000, 50, 1950, 50)
    counts = Store(tmp_path / "monitor.db").counts()
    assert (counts["stored"], counts["evaluated"]) == (50, 50)
    assert (counts["pushed"], counts["accepted"], counts["dropped"]) == (2000, 50, 1950)
    assert "monitor queue full (50 in flight): dropped 1 sample(s)" in caplog.text
    assert mon.push("late", "q", "a") == "dropped"


def test_one_failing_evaluator_never_loses_the_others(tmp_path: Path) -> None:
    def broken(sample: Sample) -> float:
        raise RuntimeError("metric crashed")

    async def async_broken(sample: Sample) -> float:
        raise TimeoutError("judge timed out")

    async def fine(sample: Sample) -> Evaluation:
        return Evaluation("judge", score=5.0, passed=True)

    def wrong_type(sample: Sample) -> Any:
        return "five"

    mon = monitor(
        tmp_path,
        {"broken": broken, "async_broken": async_broken, "fine": fine, "wrong": wrong_type},
    ).start()
    mon.push("r1", "q", "a")
    mon.stop()
    results = Store(tmp_path / "monitor.db").samples()[0].results
    assert results["broken"]["error"] == "RuntimeError: metric crashed"
    assert results["async_broken"]["error"] == "TimeoutError: judge timed out"
    assert results["fine"]["score"] == 5.0
    assert "returned str" in results["wrong"]["error"]
    window = Store(tmp_path / "monitor.db").windows()[0]
    assert window["eval_errors"] == 3 and window["judge_mean"] == 5.0


def test_alerts_are_stored_and_every_callback_gets_them(tmp_path: Path) -> None:
    received: list[tuple[str, Alert]] = []

    def failing_callback(alert: Alert) -> None:
        raise RuntimeError("pager is down")

    async def async_callback(alert: Alert) -> None:
        received.append(("async", alert))

    kb = "The Team plan costs $29 per agent per month."
    mon = monitor(
        tmp_path,
        {
            "grounding": grounding_evaluator(kb),
            "constraints": constraints_evaluator(
                [max_length(40)], critical=["max_length"], severity="low"
            ),
        },
        on_alert=[failing_callback, lambda a: received.append(("sync", a)), async_callback],
    ).start()
    mon.push("ok", {"question": "price?"}, "Team is $29.")
    mon.push("bad", {"question": "price?"}, "Team is $27 per agent, which is a great deal.")
    mon.push("own", {"question": "I pay $27, right?"}, "Yes, $27.")  # the customer's own number
    stats = mon.stop()
    assert stats.alerts == 2
    alerts = Store(tmp_path / "monitor.db").alerts()
    assert [(a["type"], a["severity"], a["request_id"]) for a in alerts] == [
        ("hallucination", "high", "bad"),
        ("constraint", "high", "bad"),
    ]
    assert alerts[0]["message"] == "1 unsupported claim(s): $27"
    assert alerts[0]["details"] == {"evaluator": "grounding", "unsupported": ["$27"]}
    assert sorted(kind for kind, _ in received) == ["async", "async", "sync", "sync"]
    assert {a.id for _, a in received} == {1, 2}


def test_windows_aggregate_what_was_evaluated(tmp_path: Path) -> None:
    clock = Clock()
    scores = iter([5, 4, 3, 2, 1, 5, 5, 5])

    def judge(sample: Sample) -> Evaluation:
        return Evaluation("judge", score=float(next(scores)))

    def grounded(sample: Sample) -> Evaluation:
        return Evaluation("grounding", passed=sample.output != "wrong")

    mon = monitor(tmp_path, {"judge": judge, "grounded": grounded}, window=60, clock=clock).start()
    for i, output in enumerate(["ok", "wrong", "ok", "wrong", "ok"]):
        mon.push(f"a{i}", "q", output, timestamp=DAY0 + i)
    for i in range(3):
        mon.push(f"b{i}", "q", "ok", timestamp=DAY0 + 60 + i)
    clock.now = DAY0 + 61  # the first window is over: it closes once evaluated
    deadline = time.monotonic() + 5
    store = Store(tmp_path / "monitor.db")
    while not store.windows() and time.monotonic() < deadline:
        time.sleep(0.01)
    first = store.windows()
    assert len(first) == 1 and first[0]["partial"] is False
    mon.stop()
    windows = store.windows()
    assert [w["samples"] for w in windows] == [5, 3]
    assert windows[0]["judge_mean"] == 3.0
    assert windows[0]["judge_p10"] == pytest.approx(1.4)
    assert windows[0]["hallucination_rate"] == 0.4 and windows[0]["hallucination_n"] == 5
    assert windows[0]["constraint_pass_rate"] is None
    assert windows[1]["partial"] is True  # closed at stop, before its end
    assert windows[0]["pushed"] == 5 and windows[1]["accepted"] == 3


def test_aggregate_and_quantile_are_plain_functions() -> None:
    assert quantile([], 0.1) is None
    assert quantile([1, 2, 3, 4, 5], 0.1) == pytest.approx(1.4)
    results = [
        {"c": {"kind": "constraints", "passed": True}, "j": {"kind": "judge", "score": 2.0}},
        {"c": {"kind": "constraints", "passed": False}, "j": {"kind": "judge", "error": "x"}},
    ]
    found = aggregate(results)
    assert found["constraint_pass_rate"] == 0.5 and found["judge_n"] == 1
    assert found["eval_errors"] == 1 and found["hallucination_rate"] is None


# --- drift -----------------------------------------------------------------------------

# The judge's scores of the support assistant's v1 answers (example suite baseline).
LEVELS = [3, 4, 5]
WEIGHTS = [0.1, 0.2, 0.7]


def noise(rng: random.Random, n: int, weights: list[float] = WEIGHTS) -> list[float]:
    return [float(s) for s in rng.choices(LEVELS, weights, k=n)]


def test_noise_at_the_baseline_level_raises_no_drift_alert_over_many_windows() -> None:
    rng = random.Random(2026)
    baseline = noise(rng, 60)
    previous: list[float] = []
    verdicts = []
    for _ in range(300):
        window = noise(rng, 40)
        found = drift(baseline, window, previous, delta=0.3, alpha=0.001)
        assert found is not None
        verdicts.append(found["verdict"])
        assert not found["alert"], found["line"]
        previous = window
    assert "REGRESSION" not in verdicts


def test_an_injected_drop_raises_a_drift_alert_within_two_windows() -> None:
    for seed in range(50):
        rng = random.Random(seed)
        baseline = noise(rng, 60)
        before = noise(rng, 40)
        # 0.9 points lower on average (4.6 to 3.7): more 3s and 4s, fewer 5s.
        first, second = (noise(rng, 40, [0.5, 0.3, 0.2]) for _ in range(2))
        one = drift(baseline, first, before, delta=0.3, alpha=0.001)
        two = drift(baseline, second, first, delta=0.3, alpha=0.001)
        assert one is not None and two is not None
        assert one["alert"] or two["alert"], (seed, one["line"], two["line"])


def test_the_worker_raises_a_drift_alert_when_judge_scores_drop(tmp_path: Path) -> None:
    rng = random.Random(5)
    baseline = noise(rng, 60)
    drifted: list[Alert] = []
    clock = Clock()
    mon = monitor(
        tmp_path,
        {"judge": lambda s: Evaluation("judge", score=s.metadata["score"])},
        window=HOUR,
        baseline=baseline,
        clock=clock,
        on_alert=[drifted.append],
    ).start()
    for hour in range(6):
        weights = WEIGHTS if hour < 4 else [0.6, 0.3, 0.1]  # the drop: from 4 a.m.
        for i, score in enumerate(noise(rng, 40, weights)):
            ts = DAY0 + hour * HOUR + i * 60
            mon.push(f"{hour}-{i}", "q", "a", timestamp=ts, metadata={"score": score})
    clock.now = DAY0 + 6 * HOUR
    mon.stop()
    windows = Store(tmp_path / "monitor.db").windows()
    assert [w["drift"]["alert"] for w in windows] == [False] * 4 + [True, True]
    assert [a.type for a in drifted] == ["drift", "drift"]
    assert drifted[0].severity == "critical" and drifted[0].window_start == DAY0 + 4 * HOUR
    assert "REGRESSION" in windows[4]["drift"]["verdict"]


def test_baseline_scores_come_from_a_ci_report(tmp_path: Path) -> None:
    report = Path(__file__).parent.parent / "example_suite" / "baseline-v1.json"
    scores = baseline_scores(report, ["distribution"])
    assert len(scores) == 51 and sum(scores) / len(scores) == pytest.approx(4.627, abs=1e-3)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad\.json"):
        baseline_scores(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no judge scores"):
        baseline_scores(report, ["nowhere"])


# --- restarts --------------------------------------------------------------------------


def test_a_restart_evaluates_what_was_acknowledged_and_not_evaluated(tmp_path: Path) -> None:
    mon = monitor(tmp_path, {"x": lambda s: 1.0})
    for i in range(10):
        mon.push(f"r{i}", "q", "a")
    mon.stop()  # never started: stored, pending
    store = Store(tmp_path / "monitor.db")
    assert len(store.pending()) == 10
    stats = monitor(tmp_path, {"x": lambda s: 2.0}).start().stop()
    assert (stats.recovered, stats.evaluated) == (10, 10)
    assert store.pending() == [] and store.counts()["evaluated"] == 10


def test_evaluator_and_option_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one evaluator"):
        Monitor(tmp_path / "m.db", {})
    with pytest.raises(ValueError, match="positive"):
        Monitor(tmp_path / "m.db", {"x": lambda s: 1.0}, queue_size=0)
    spec = AlertSpec("custom", "low", "custom alert")
    mon = monitor(tmp_path, {"x": lambda s: Evaluation(alert=spec)}).start()
    mon.push("r", "q", "a")
    assert mon.stop().alerts == 1
    with pytest.raises(RuntimeError, match="already been started"):
        mon.start()


CHILD = """
import asyncio, sys, time
from pytest_llmeval.monitor import Monitor, Sampler

async def slow(sample):
    await asyncio.sleep(0.02)
    return 3.0

mon = Monitor(sys.argv[1], {"score": slow}, sampler=Sampler(1.0, slow=False),
              concurrency=2, flush_interval=0.01).start()
for i in range(5000):
    mon.push(f"r{i}", {"question": f"q{i}"}, "answer")
    if i % 50 == 0:
        print(mon.stats().acknowledged, flush=True)
        time.sleep(0.005)
time.sleep(60)
"""


def test_killing_the_worker_process_loses_no_acknowledged_sample(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    db = tmp_path / "monitor.db"
    (tmp_path / "child.py").write_text(CHILD)
    command = [sys.executable, str(tmp_path / "child.py"), str(db)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        acknowledged = 0
        for line in child.stdout:
            acknowledged = int(line)
            if acknowledged >= 1000:
                break
        child.send_signal(signal.SIGKILL)  # mid-run: pushing, evaluating, writing

    store = Store(db)
    stored, pending = store.counts()["stored"], len(store.pending())
    evaluated_before = store.counts()["evaluated"]
    assert stored >= acknowledged >= 1000
    assert pending > 0 and evaluated_before > 0  # killed with work in hand
    stats = monitor(tmp_path, {"score": lambda s: 5.0}).start().stop()
    assert stats.recovered == pending and stats.evaluated == pending
    samples = store.samples()
    assert len(samples) == stored and {s.status for s in samples} == {"evaluated"}
    # What was evaluated before the kill kept its result; the rest got the new one.
    scores = [s.results["score"]["score"] for s in samples]
    assert scores.count(3.0) == evaluated_before and scores.count(5.0) == pending
    assert [s.request_id for s in samples] == [f"r{i}" for i in range(stored)]


def test_a_request_that_errored_is_sampled_but_not_judged(tmp_path: Path) -> None:
    mon = monitor(
        tmp_path,
        {"grounding": grounding_evaluator("kb"), "length": constraints_evaluator([max_length(5)])},
        sampler=Sampler(0.0, slow=False),
    ).start()
    assert mon.push("ok", "q", "fine answer, too long") == "skipped"
    assert mon.push("err", "q", None, error="upstream timeout") == "accepted"
    assert mon.stop().alerts == 0
    sample = Store(tmp_path / "monitor.db").samples()[0]
    assert (sample.reason, sample.error) == ("error", "upstream timeout")
    assert sample.results["length"]["details"] == {"skipped": "the request has no output"}


# --- stratified sampling: weights, shares, false alarms ---------------------------------


def test_the_base_rate_holds_among_requests_not_sampled_for_another_reason() -> None:
    """Half the hour's 2,000 requests are refunds, always sampled: the base rate keeps 5%
    of the other half (within one sample), which is 2.5% of the hour's traffic."""
    sampler = Sampler(0.05, always=[r"refund"], seed=3, slow=False, stratum=utc_hour)
    for i in range(2000):
        sampler.decide("refund, please" if i % 2 else "hello", ts=DAY0 + i)
    hour = sampler.strata()[0]
    assert (hour["seen"], hour["eligible"], hour["forced"]) == (2000, 1000, 1000)
    assert abs(hour["sampled"] - 0.05 * hour["eligible"]) < 1
    assert hour["base_share"] == pytest.approx(0.05, abs=0.001)
    assert hour["sampled"] / hour["seen"] == pytest.approx(0.025, abs=0.001)
    assert hour["sampled_share"] == pytest.approx(0.525, abs=0.001)
    assert sampler.totals() == hour
    assert (sampler.probability("base"), sampler.probability("pattern")) == (0.05, 1.0)


# Refund answers score 3-4, everything else 4-5, at constant quality; half the traffic
# asks for a refund, and the CI suite's baseline has the traffic's mix.
def refund_traffic_score(rng: random.Random, refund: bool) -> float:
    return float(rng.choice([3, 4] if refund else [4, 5]))


def refund_window(
    rng: random.Random, sampler: Sampler, hour: int, n: int = 400, worse: float = 0.0
) -> tuple[list[float], list[float]]:
    """One hour's sampled judge scores and their weights (1 / inclusion probability);
    ``worse``: the chance that an answer, of either kind, scores 2 points lower."""
    scores, weights = [], []
    for i in range(n):
        refund = rng.random() < 0.5
        reason = sampler.decide("refund?" if refund else "hi", ts=DAY0 + hour * HOUR + i)
        if reason is not None:
            score = refund_traffic_score(rng, refund)
            scores.append(score - 2 if rng.random() < worse else score)
            weights.append(1 / sampler.probability(reason))
    return scores, weights


def refund_baseline() -> list[float]:
    """60 CI scores in the traffic's mix, exactly (a baseline that is itself off by
    chance shifts every window's comparison: that is the baseline's noise, not this)."""
    return [3.0] * 15 + [4.0] * 30 + [5.0] * 15


def test_always_sampled_requests_raise_no_false_drift_alarm_over_many_windows() -> None:
    rng = random.Random(2026)
    sampler = Sampler(0.05, always=[r"refund"], seed=1, slow=False, stratum=utc_hour)
    baseline = refund_baseline()
    previous: tuple[list[float], list[float]] = ([], [])
    pooled_unweighted = []
    for hour in range(300):
        scores, weights = refund_window(rng, sampler, hour)
        found = drift(
            baseline,
            scores,
            previous[0],
            delta=0.3,
            alpha=0.001,
            weights=weights,
            previous_weights=previous[1],
        )
        assert found is not None
        assert not found["alert"], (hour, found["line"])
        window = found["tests"]["window"]
        assert window["test"] == "weighted_welch_t"
        # The weighted mean estimates the traffic's 4.0; pooled as drawn it is about 3.5.
        assert window["mean_window"] == pytest.approx(4.0, abs=0.45)
        pooled_unweighted.append(sum(scores) / len(scores))
        previous = (scores, weights)
    assert sum(pooled_unweighted) / 300 == pytest.approx(3.55, abs=0.03)
    # As drawn, without the weights, every window would be a false alarm.
    unweighted = drift(baseline, previous[0], delta=0.3, alpha=0.001)
    assert unweighted is not None and unweighted["alert"]


def test_a_real_drop_is_still_caught_with_always_sampled_requests() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        sampler = Sampler(0.05, always=[r"refund"], seed=seed, slow=False, stratum=utc_hour)
        baseline = refund_baseline()
        before = refund_window(rng, sampler, 0)
        # 0.9 points lower on average, in refunds and in the rest alike.
        first, second = (refund_window(rng, sampler, h, worse=0.45) for h in (1, 2))
        found = [
            drift(
                baseline,
                now[0],
                then[0],
                delta=0.3,
                alpha=0.001,
                weights=now[1],
                previous_weights=then[1],
            )
            for now, then in ((first, before), (second, first))
        ]
        assert any(f is not None and f["alert"] for f in found), seed


def test_aggregates_weight_each_sample_by_its_inverse_inclusion_probability() -> None:
    results = [
        {"j": {"kind": "judge", "score": 3.0}, "g": {"kind": "grounding", "passed": False}},
        {"j": {"kind": "judge", "score": 3.0}, "g": {"kind": "grounding", "passed": False}},
        {"j": {"kind": "judge", "score": 5.0}, "g": {"kind": "grounding", "passed": True}},
    ]
    # Two forced samples (weight 1) and one base-rate sample at 5% (weight 20).
    found = aggregate(results, [1.0, 1.0, 20.0])
    assert found["judge_mean"] == pytest.approx((3 + 3 + 100) / 22)
    assert found["hallucination_rate"] == pytest.approx(2 / 22)
    assert found["judge_n"] == 3 and found["judge_n_effective"] == pytest.approx(1.2, abs=0.05)
    # Weighted, 5 is 91% of the traffic: the p10 is near it (Kish n 1.2, so smoothed).
    assert found["judge_p10"] == pytest.approx(4.82, abs=0.01)
    assert aggregate(results)["judge_mean"] == pytest.approx(11 / 3)
    # Equal weights of any size are numpy's linear quantile.
    assert quantile([1, 2, 3, 4, 5], 0.1, [20.0] * 5) == pytest.approx(1.4)
    assert quantile([5, 1, 3], 0.5, [1, 1, 1]) == 3


def test_the_worker_weights_always_sampled_requests(tmp_path: Path) -> None:
    rng = random.Random(11)
    drifted: list[Alert] = []
    clock = Clock()
    mon = monitor(
        tmp_path,
        {"judge": lambda s: Evaluation("judge", score=s.metadata["score"])},
        sampler=Sampler(0.05, always=[r"refund"], seed=2, slow=False, stratum=utc_hour),
        window=HOUR,
        baseline=refund_baseline(),
        clock=clock,
        on_alert=[drifted.append],
    ).start()
    for hour in range(4):
        for i in range(400):
            refund = rng.random() < 0.5
            score = refund_traffic_score(rng, refund)
            ts = DAY0 + hour * HOUR + i * 9
            question = "I want a refund" if refund else "How much is Team?"
            mon.push(f"{hour}-{i}", question, "a", timestamp=ts, metadata={"score": score})
    clock.now = DAY0 + 4 * HOUR
    stats = mon.stop()
    assert drifted == []
    assert stats.base_share == pytest.approx(0.05, abs=0.002)
    assert stats.sampled_share == pytest.approx(0.525, abs=0.03)
    store = Store(tmp_path / "monitor.db")
    probabilities = {(s.reason, s.probability) for s in store.samples()}
    assert probabilities == {("pattern", 1.0), ("base", 0.05)}
    for window in store.windows():
        assert window["judge_mean"] == pytest.approx(4.0, abs=0.45)
        assert not window["drift"]["alert"]
        assert window["drift"]["tests"]["window"]["test"] == "weighted_welch_t"


# --- the store: schema 1 files, files that are not monitor databases, standard JSON --------

SCHEMA_1_SAMPLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE samples (
    id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, ts REAL NOT NULL,
    window_start REAL NOT NULL, reason TEXT NOT NULL, input TEXT NOT NULL, output TEXT,
    context TEXT, latency_s REAL, error TEXT, metadata TEXT NOT NULL, status TEXT NOT NULL,
    evaluated_at REAL, results TEXT
);
CREATE TABLE alerts (id INTEGER PRIMARY KEY, ts REAL NOT NULL, window_start REAL NOT NULL,
    type TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL,
    sample_id INTEGER REFERENCES samples (id), request_id TEXT, details TEXT NOT NULL);
CREATE TABLE traffic (window_start REAL PRIMARY KEY, pushed INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0, dropped INTEGER NOT NULL DEFAULT 0);
CREATE TABLE windows (start REAL PRIMARY KEY, end REAL NOT NULL, aggregates TEXT NOT NULL,
    drift TEXT, closed_at REAL NOT NULL);
"""


def schema_1_file(path: Path) -> Path:
    """A database as the monitor wrote it before inclusion probabilities were stored:
    a pattern sample scored 3 and a base-rate sample scored 5, both pending."""
    import sqlite3

    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1_SAMPLES)
    for i, (reason, score) in enumerate([("pattern", 3.0), ("base", 5.0)]):
        db.execute(
            "INSERT INTO samples (request_id, ts, window_start, reason, input, output, context,"
            " latency_s, error, metadata, status) VALUES (?, ?, ?, ?, ?, 'a', NULL, NULL, NULL,"
            " ?, 'pending')",
            (f"r{i}", DAY0 + i, DAY0, reason, '{"text": "q"}', f'{{"score": {score}}}'),
        )
    db.commit()
    db.close()
    return path


def test_a_schema_1_file_is_read_as_it_is_and_migrated_by_a_monitor(tmp_path: Path) -> None:
    path = schema_1_file(tmp_path / "monitor.db")
    readonly = Store(path, readonly=True)
    assert [s.probability for s in readonly.samples()] == [None, None]
    readonly.close()
    sampler = Sampler(0.1, slow=False)
    judge = {"judge": lambda s: Evaluation("judge", score=s.metadata["score"])}
    stats = Monitor(path, judge, sampler=sampler, flush_interval=0.01).start().stop()
    assert stats.recovered == 2
    store = Store(path, readonly=True)
    assert store.meta("schema_version") == "2"
    # The forced sample has probability 1; the base-rate one, not recorded, is taken at
    # the reading monitor's rate (weight 10).
    assert [s.probability for s in store.samples()] == [1.0, None]
    assert store.windows()[0]["judge_mean"] == pytest.approx((3 + 10 * 5) / 11)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not a database at all, just some text\n" * 10, "file is not a database"),
        (b"", "no monitor tables"),
        (None, "no monitor tables"),  # SQLite, someone else's tables
    ],
)
def test_a_file_that_is_not_a_monitor_database_is_named(
    tmp_path: Path, content: bytes | None, why: str
) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    if content is None:
        sqlite3.connect(path).execute("CREATE TABLE users (name TEXT)").connection.commit()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"other\.db: not a monitor database .*{why}"):
        Store(path, readonly=True)
    if content:  # (an empty file is an empty SQLite database: a monitor may start one)
        with pytest.raises(ValueError, match=r"other\.db: not a monitor database"):
            Monitor(path, {"x": lambda s: 1.0})
        assert path.read_bytes() == before
    with pytest.raises(ValueError, match="a folder, not a monitor database"):
        Store(tmp_path, readonly=True)


def test_a_newer_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "monitor.db"
    store = Store(path)
    with store.transaction() as db:
        db.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    store.close()
    with pytest.raises(ValueError, match="monitor schema 9, but this pytest-llmeval reads 1 and 2"):
        Store(path, readonly=True)


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity, as every other JSON reader does."""
    import json

    def refuse(constant: str) -> None:
        raise ValueError(f"not standard JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_the_store_writes_is_standard(tmp_path: Path) -> None:
    import math
    import sqlite3

    def nan_score(sample: Sample) -> float:
        return math.nan

    def odd_details(sample: Sample) -> Evaluation:
        return Evaluation("judge", score=4.0, details={"ratio": math.inf, "list": [math.nan]})

    mon = monitor(
        tmp_path,
        {"nan": nan_score, "odd": odd_details},
        baseline=[4.0, 5.0, 4.0, 5.0, 3.0, 5.0],  # 3 window samples: an unbounded CI
    ).start()
    for i in range(3):
        mon.push(f"r{i}", "q", "a", metadata={"latency_budget": math.inf})
    mon.stop()
    db = sqlite3.connect(tmp_path / "monitor.db")
    columns = [
        ("samples", "input"),
        ("samples", "metadata"),
        ("samples", "results"),
        ("alerts", "details"),
        ("windows", "aggregates"),
        ("windows", "drift"),
    ]
    for table, column in columns:
        for (text,) in db.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"):
            strict_json(text)
    store = Store(tmp_path / "monitor.db")
    sample = store.samples()[0]
    assert sample.metadata == {"latency_budget": None}
    assert sample.results["nan"]["error"] == (
        "ValueError: an evaluator returned nan; return a finite number"
    )
    assert sample.results["odd"]["details"] == {"ratio": None, "list": [None]}
    tests = store.windows()[0]["drift"]["tests"]["window"]
    assert None in tests["ci"]  # 3 samples: the interval is unbounded, stored as null
