"""A simulated day of production traffic for the Brightdesk support assistant, watched
by the pytest-llmeval monitor, and the feedback loop that follows.

1. About 11,000 requests are served over a day (quiet nights, busy afternoons). The
   replies are scripted, not a model's: until 14:00 they are the good prompt's answers
   (``../demo/v1.jsonl``, and ``production.jsonl`` for questions the eval datasets do not
   have); from 14:00 drift is injected, and half the replies come from a broken
   deployment (the holiday persona of ``../demo/v2.jsonl``, invented prices and features).
2. The monitor samples 10% of them (``--rate``), every refund or cancellation question,
   every error and every reply slower than the p95 so far, and evaluates each with the
   judge (the demo server's scripted judge, over HTTP on 127.0.0.1), the grounding check
   against the knowledge base and the reply constraints of the eval suite. Hourly
   windows, each sample weighted by 1 / its inclusion probability, are compared with the
   judge scores of the committed CI baseline (``../baseline-v1.json``). The drift test's
   power rests on the base-rate sample: the forced samples count for their share of the
   traffic only. At 5% the drift is still caught, but often an hour later.
3. Two of the afternoon's hallucinations are promoted into the regression set of a copy
   of the suite with ``llmeval promote``, and ``pytest -m regression`` runs them at once.
4. ``llmeval dashboard`` draws the day and the CI runs as one HTML page.

    python example_suite/monitoring/simulate.py            # writes ./monitoring-out/
    python example_suite/monitoring/simulate.py --out DIR --rate 0.05 --seed 1

No network and no API key: the judge and the app's answers come from the demo server.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = HERE.parent
sys.path.insert(0, str(SUITE))  # the suite's modules: app, reply checks, demo server

from app import KNOWLEDGE_BASE  # noqa: E402
from demo_server import make_reply, scripted_replies  # noqa: E402
from reply_checks import CRITERIA, TASK, reply_checks  # noqa: E402

from pytest_llmeval import Judge, load_dataset  # noqa: E402
from pytest_llmeval.cli import main as llmeval  # noqa: E402
from pytest_llmeval.client import ClientConfig, build_client  # noqa: E402
from pytest_llmeval.monitor import (  # noqa: E402
    Alert,
    Monitor,
    Sampler,
    Store,
    baseline_scores,
    constraints_evaluator,
    grounding_evaluator,
    judge_evaluator,
)
from pytest_llmeval.monitor.promote import failures  # noqa: E402
from pytest_llmeval.testing import FakeOpenAIServer  # noqa: E402

DAY = datetime(2026, 11, 23).timestamp()  # local midnight
HOUR = 3600.0
# Requests served in each hour of the day.
TRAFFIC = [40, 30, 25, 25, 30, 50, 120, 300, 600, 800, 900, 950]
TRAFFIC += [900, 950, 1000, 950, 850, 700, 500, 350, 250, 150, 90, 60]
DRIFT_FROM = 14  # o'clock: half the replies come from the broken deployment
ROOT_CAUSE = (
    "14:00 deployment served a stale prompt build: invented prices and features; "
    "rolled back at 23:00"
)


def scenario() -> tuple[list[dict[str, str]], dict[tuple[str, str], str]]:
    """The questions customers ask (with the good and the drifted reply), and the demo
    server's extra answers for the questions only production has."""
    replies = scripted_replies()
    dataset = load_dataset(SUITE / "datasets")
    questions = [
        {
            "question": ex.input["question"],
            "good": replies[("v1", ex.input["question"])],
            "drifted": replies[("v2", ex.input["question"])],
        }
        for ex in dataset
        # One-question examples: the simulated traffic is single questions.
        if ex.partition in ("golden", "distribution") and "question" in ex.input
    ]
    lines = (HERE / "production.jsonl").read_text(encoding="utf-8").splitlines()
    production = [json.loads(line) for line in lines]
    extra = {("v1", p["question"]): p["good"] for p in production}
    # Production-only questions are asked more often than any one dataset question.
    return questions + production * 6, extra


def serve_day(monitor: Monitor, clock: list[float], seed: int) -> Counter[str]:
    """Push a day of traffic through the monitor, moving the simulated clock."""
    rng = random.Random(seed)
    questions, _ = scenario()
    outcomes: Counter[str] = Counter()
    for hour, count in enumerate(TRAFFIC):
        for i in range(count):
            ts = DAY + hour * HOUR + (i + rng.random()) * HOUR / count
            clock[0] = ts
            asked = rng.choice(questions)
            drifted = hour >= DRIFT_FROM and hour < 23 and rng.random() < 0.5
            error = "upstream timeout" if rng.random() < 0.003 else None
            output = None if error else asked["drifted" if drifted else "good"]
            outcomes[
                monitor.push(
                    f"req-{hour:02d}{i:04d}",
                    {"question": asked["question"]},
                    output,
                    latency_s=rng.lognormvariate(0.0, 0.4) * (1.6 if drifted else 1.0),
                    error=error,
                    metadata={"prompt_version": "broken" if drifted else "v1"},
                    timestamp=ts,
                )
            ] += 1
        # Let the worker keep up, as the real hours would.
        while monitor.stats().in_flight > 200:
            time.sleep(0.01)
    clock[0] = DAY + 24 * HOUR
    return outcomes


def shown(path: Path) -> str:
    """A path as the reader would type it, from the current directory."""
    return os.path.relpath(path)


def show_alert(alert: Alert) -> None:
    if alert.type == "drift":
        at = datetime.fromtimestamp(alert.window_start).strftime("%H:%M")
        print(f"  ALERT drift ({alert.severity}) in the window from {at}: {alert.message}")


def print_day(db: Path) -> None:
    store = Store(db, readonly=True)
    print("\nhour   pushed  sampled  judge mean  p10  hallucinations  constraints ok  drift")
    for w in store.windows():
        hour = datetime.fromtimestamp(w["start"]).strftime("%H:%M")
        mean = "-" if w["judge_mean"] is None else f"{w['judge_mean']:.2f}"
        p10 = "-" if w["judge_p10"] is None else f"{w['judge_p10']:.1f}"
        halluc = "-" if w["hallucination_rate"] is None else f"{w['hallucination_rate']:.0%}"
        ok = "-" if w["constraint_pass_rate"] is None else f"{w['constraint_pass_rate']:.0%}"
        drift = "ALERT" if w["drift"] and w["drift"]["alert"] else ""
        print(
            f"{hour}  {w['pushed']:>7}  {w['samples']:>7}  {mean:>10}  {p10:>3}"
            f"  {halluc:>14}  {ok:>14}  {drift}"
        )
    alerts = store.alerts()
    kinds = Counter((a["type"], a["severity"]) for a in alerts)
    print("\nalerts: " + ", ".join(f"{t} {s} {n}" for (t, s), n in sorted(kinds.items())))
    store.close()


def promote_two(db: Path, datasets: Path) -> list[str]:
    """Promote the first two hallucinations on questions the datasets do not have."""
    production = {
        p["question"]: p
        for p in map(json.loads, (HERE / "production.jsonl").read_text().splitlines())
    }
    store = Store(db, readonly=True)
    chosen: dict[str, str] = {}  # question -> request id
    for sample, _ in failures(store, alert_types={"hallucination"}):
        if sample.text in production and sample.text not in chosen:
            chosen[sample.text] = sample.request_id
        if len(chosen) == 2:
            break
    store.close()
    for question, request_id in chosen.items():
        args = ["promote", shown(db), "--to", shown(datasets), "--request-id", request_id]
        args += ["--note", ROOT_CAUSE, "--expected", production[question]["expected"]]
        print(f"\n$ llmeval {' '.join(args[:6])} --note ... --expected ...")
        if llmeval(args) != 0:
            raise SystemExit("llmeval promote failed")
    return list(chosen.values())


def run_regression(suite: Path, base_url: str, report: Path) -> int:
    """``pytest -m regression`` on the copy of the suite, answered by the demo server."""
    command = [sys.executable, "-m", "pytest", str(suite), "-m", "regression", "-q"]
    command += ["-p", "no:cacheprovider", "--llmeval-cache=use", f"--llmeval-base-url={base_url}"]
    command += [f"--llmeval-report={report}"]
    print(f"\n$ pytest {shown(suite)} -m regression")
    env = {**os.environ, "OPENAI_API_KEY": "demo-key"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    print(done.stdout.rstrip())
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("monitoring-out"), help="where to write (./monitoring-out)"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--rate", type=float, default=0.1, help="the base sampling rate (0.1)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    db = out / "monitor.db"
    _, extra = scenario()
    baseline = baseline_scores(SUITE / "baseline-v1.json", ["distribution"])

    with FakeOpenAIServer(make_reply(extra)) as server:
        config = ClientConfig(
            role="judge",
            model="judge-demo-1",
            base_url=server.base_url,
            api_key="demo-key",
            max_concurrency=32,
        )
        judge_client = build_client(config, out / "judge-cache", "off")
        clock = [DAY]
        monitor = Monitor(
            db,
            {
                "judge": judge_evaluator(Judge(judge_client), task=TASK, criteria=CRITERIA),
                "grounding": grounding_evaluator(KNOWLEDGE_BASE),
                "constraints": constraints_evaluator(
                    reply_checks(), critical=["no_system_prompt_leak"]
                ),
            },
            sampler=Sampler(args.rate, always=[r"\b(refund|cancel)"], seed=args.seed),
            window=HOUR,
            baseline=baseline,
            clock=lambda: clock[0],
            concurrency=32,
            on_alert=[show_alert],
        )
        print(f"serving a simulated day ({sum(TRAFFIC)} requests); drift from {DRIFT_FROM}:00")
        monitor.start()
        outcomes = serve_day(monitor, clock, args.seed)
        stats = monitor.stop()
        judge_client.close()
        print(
            f"pushed {stats.pushed}: {outcomes['accepted']} sampled and evaluated, "
            f"{outcomes['dropped']} dropped, {outcomes['skipped']} not sampled; "
            f"{stats.alerts} alerts"
        )
        print(
            f"the base rate took {stats.base_share:.1%} of the requests not sampled for "
            f"another reason; {stats.sampled_share:.1%} of all requests were sampled"
        )
        print_day(db)

        suite = out / "suite"
        shutil.copytree(SUITE, suite, ignore=shutil.ignore_patterns("__pycache__", "monitoring"))
        promote_two(db, suite / "datasets")
        status = run_regression(suite, server.base_url, out / "regression-run.json")

    runs = [str(SUITE / "baseline-v1.json"), str(out / "regression-run.json")]
    print(f"\n$ llmeval dashboard {shown(db)} --runs ... --out {shown(out / 'dashboard.html')}")
    drawn = llmeval(["dashboard", str(db), "--runs", *runs, "--out", str(out / "dashboard.html")])
    return status or drawn


if __name__ == "__main__":
    sys.exit(main())
