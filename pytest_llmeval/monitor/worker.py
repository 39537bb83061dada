"""The monitor: sample live requests, evaluate them in the background, store and alert.

``push`` is called by the app on every served request, from any thread. It asks the
sampler, then appends to a bounded in-memory intake under a lock and returns: it never
waits for I/O, the event loop or an evaluation. A full queue (``queue_size`` samples
accepted and not yet evaluated) drops the sample, counts it, and logs a warning.

A background thread runs an asyncio loop. Every ``flush_interval`` it writes the intake
to SQLite in one transaction (from then on a sample is *acknowledged*: a crash or a kill
loses nothing, and a restart evaluates what was pending), hands the stored samples to
``concurrency`` evaluation tasks, stores their evaluations and alerts, calls the alert
callbacks, and closes the windows that are over: their aggregates, and the drift test
against the baseline. ``stop()`` drains everything that was accepted before it returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .evaluators import Alert, Evaluation, Evaluator, as_evaluation, kind_of
from .sampler import Sampler
from .store import Sample, Store, input_text
from .windows import aggregate, drift, inverse_probability, judge_scores

log = logging.getLogger("pytest_llmeval.monitor")

Outcome = Literal["accepted", "dropped", "skipped"]
AlertCallback = Callable[[Alert], Any]
DROP_LOG_EVERY = 10.0  # seconds between "queue full" warnings


@dataclass(frozen=True)
class MonitorStats:
    """Counters since this monitor started (``recovered``: pending samples of an earlier
    run, evaluated by this one). The sampler's shares: ``base_share``, the base-rate
    samples among the requests not sampled for another reason (within one sample of the
    rate in every hour); ``sampled_share``, the requests sampled for any reason among
    all (None before the first request)."""

    pushed: int
    skipped: int
    accepted: int
    dropped: int
    acknowledged: int
    evaluated: int
    alerts: int
    windows_closed: int
    recovered: int
    in_flight: int
    base_share: float | None = None
    sampled_share: float | None = None


class Monitor:
    """Evaluates a sample of live traffic; see the module docstring.

    ``evaluators`` maps a name to an evaluator (see ``evaluators.py``). ``baseline`` is a
    list of judge scores (``baseline_scores(report)``) for the drift test; ``window`` is
    the aggregation interval in seconds; ``clock`` gives the current time (the default
    is the wall clock; a simulation passes its own)."""

    def __init__(
        self,
        db: str | Path,
        evaluators: Mapping[str, Evaluator],
        *,
        sampler: Sampler | None = None,
        queue_size: int = 10_000,
        concurrency: int = 16,
        window: float = 3600.0,
        baseline: Sequence[float] = (),
        drift_delta: float = 0.3,
        drift_alpha: float = 0.001,
        on_alert: Sequence[AlertCallback] = (),
        clock: Callable[[], float] = time.time,
        flush_interval: float = 0.05,
        evaluation_timeout: float = 300.0,
        durable: bool = False,
    ) -> None:
        if not evaluators:
            raise ValueError("a monitor needs at least one evaluator")
        if queue_size < 1 or concurrency < 1 or window <= 0:
            raise ValueError("queue_size, concurrency and window must be positive")
        self.store = Store(db, durable=durable)
        self.evaluators = dict(evaluators)
        self.sampler = sampler or Sampler()
        self.queue_size = queue_size
        self.concurrency = concurrency
        self.window = float(window)
        self.baseline = [float(s) for s in baseline]
        self.drift_delta = drift_delta
        self.drift_alpha = drift_alpha
        self.on_alert = list(on_alert)
        self.clock = clock
        self.flush_interval = flush_interval
        self.evaluation_timeout = evaluation_timeout

        # Shared with the callers of push(): guarded by _lock.
        self._lock = threading.Lock()
        self._intake: list[dict[str, Any]] = []
        self._traffic: dict[float, list[int]] = {}  # window -> [pushed, accepted, dropped]
        self._open: dict[float, int] = {}  # window -> samples accepted, not yet stored evaluated
        self._counts = dict.fromkeys(("pushed", "skipped", "accepted", "dropped"), 0)
        self._in_flight = 0
        self._stopping = False
        self._dropped_unlogged = 0
        self._last_drop_log = -math.inf

        # The worker thread's own.
        self._acknowledged = self._evaluated = self._alerts = self._closed_count = 0
        self._recovered = 0
        self._closed: set[float] = set()
        self._dirty: set[float] = set()
        self._done: list[tuple[Sample, dict[str, Any], list[Alert]]] = []
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="llmeval-monitor")

    # --- the caller's side ----------------------------------------------------------------

    def push(
        self,
        request_id: str,
        input: Any,
        output: str | None,
        *,
        latency_s: float | None = None,
        error: str | None = None,
        context: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: float | None = None,
    ) -> Outcome:
        """Offer one served request. Returns at once: ``accepted`` (queued for
        evaluation), ``skipped`` (not sampled) or ``dropped`` (sampled, queue full)."""
        ts = self.clock() if timestamp is None else timestamp
        text = input_text(input)
        reason = self.sampler.decide(text, ts=ts, latency_s=latency_s, error=error is not None)
        start = math.floor(ts / self.window) * self.window
        with self._lock:
            traffic = self._traffic.get(start)
            if traffic is None:
                traffic = self._traffic[start] = [0, 0, 0]
                self._open.setdefault(start, 0)
            traffic[0] += 1
            self._counts["pushed"] += 1
            if reason is None:
                self._counts["skipped"] += 1
                return "skipped"
            if not self._stopping and self._in_flight < self.queue_size:
                traffic[1] += 1
                self._counts["accepted"] += 1
                self._in_flight += 1
                self._open[start] += 1
                self._intake.append(
                    {
                        "request_id": str(request_id),
                        "ts": ts,
                        "window_start": start,
                        "reason": reason,
                        "probability": self.sampler.probability(reason),
                        "input": input if isinstance(input, Mapping) else {"text": input},
                        "output": output,
                        "context": context,
                        "latency_s": latency_s,
                        "error": error,
                        "metadata": dict(metadata or {}),
                    }
                )
                return "accepted"
            traffic[2] += 1
            self._counts["dropped"] += 1
            self._dropped_unlogged += 1
            now = time.monotonic()
            if now - self._last_drop_log < DROP_LOG_EVERY:
                return "dropped"
            dropped, self._dropped_unlogged, self._last_drop_log = self._dropped_unlogged, 0, now
        # Logged outside the lock, and at most every DROP_LOG_EVERY seconds.
        why = "the monitor is stopping" if self._stopping else f"{self.queue_size} in flight"
        log.warning("monitor queue full (%s): dropped %d sample(s)", why, dropped)
        return "dropped"

    def stats(self) -> MonitorStats:
        with self._lock:
            counts, in_flight = dict(self._counts), self._in_flight
        shares = self.sampler.totals()
        return MonitorStats(
            **counts,
            base_share=shares["base_share"],
            sampled_share=shares["sampled_share"],
            acknowledged=self._acknowledged,
            evaluated=self._evaluated,
            alerts=self._alerts,
            windows_closed=self._closed_count,
            recovered=self._recovered,
            in_flight=in_flight,
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Monitor:
        """Start the worker thread; samples pending in the database from an earlier run
        are evaluated first."""
        if self._thread is not None:
            raise RuntimeError("this monitor has already been started")
        self._thread = threading.Thread(target=self._run, name="llmeval-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> MonitorStats:
        """Stop accepting, evaluate and store everything accepted, close the windows.

        With ``timeout`` (seconds) it may return before that: what is left stays pending
        in the database and is evaluated by the next monitor on it. Raises the worker's
        error if it failed."""
        with self._lock:
            self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the monitor did not drain within {timeout} s")
        else:  # never started: store what was accepted, to be evaluated later
            self._write(self._take_intake(), [])
        self._executor.shutdown(wait=True)
        self.store.close()
        if self._failure is not None:
            raise RuntimeError("the monitor's worker failed") from self._failure
        return self.stats()

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the worker thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # kept for stop() to raise; the app goes on
            log.exception("the monitor's worker failed")
            self._failure = exc

    async def _main(self) -> None:
        queue: asyncio.Queue[Sample] = asyncio.Queue()
        self._closed = {w["start"] for w in self.store.windows()}
        for sample in self.store.pending():
            queue.put_nowait(sample)
            self._recovered += 1
            with self._lock:
                self._in_flight += 1
                self._open[sample.window_start] = self._open.get(sample.window_start, 0) + 1
        with self._lock:
            for start in self.store.window_starts():
                self._open.setdefault(start, 0)
        workers = [asyncio.create_task(self._evaluate_from(queue)) for _ in range(self.concurrency)]
        callbacks: set[asyncio.Task[Any]] = set()
        while True:
            with self._lock:
                stopping = self._stopping
            for alert in self._flush(queue) + self._close_windows(final=False):
                task = asyncio.create_task(self._call_back(alert))
                callbacks.add(task)
                task.add_done_callback(callbacks.discard)
            with self._lock:
                drained = not self._intake and self._in_flight == 0
            if stopping and drained and not self._done:
                break
            await asyncio.sleep(self.flush_interval)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, *callbacks, return_exceptions=True)
        for alert in self._close_windows(final=True):
            await self._call_back(alert)

    def _take_intake(self) -> tuple[list[dict[str, Any]], dict[float, list[int]]]:
        with self._lock:
            intake, self._intake = self._intake, []
            traffic, self._traffic = self._traffic, {}
        return intake, traffic

    def _write(
        self,
        taken: tuple[list[dict[str, Any]], dict[float, list[int]]],
        done: list[tuple[Sample, dict[str, Any], list[Alert]]],
    ) -> list[Sample]:
        """One transaction: new samples, traffic counters, evaluations and their alerts."""
        intake, traffic = taken
        now = self.clock()
        with self.store.transaction() as db:
            ids = [Store.insert_sample(db, row) for row in intake]
            Store.add_traffic(db, {k: (v[0], v[1], v[2]) for k, v in traffic.items()})
            for sample, results, alerts in done:
                Store.save_evaluation(db, sample.id, results, now)
                for i, alert in enumerate(alerts):
                    alerts[i] = _with_id(alert, Store.insert_alert(db, alert.row()))
        self._acknowledged += len(ids)
        return [
            Sample(id=i, status="pending", results={}, **row)
            for i, row in zip(ids, intake, strict=True)
        ]

    def _flush(self, queue: asyncio.Queue[Sample]) -> list[Alert]:
        taken = self._take_intake()
        done, self._done = self._done, []
        if not (taken[0] or taken[1] or done):
            return []
        try:
            stored = self._write(taken, done)
        except sqlite3.Error:
            # Nothing of it was committed: put it back and try again next time.
            log.exception("the monitor could not write to %s; retrying", self.store.path)
            with self._lock:
                self._intake[:0] = taken[0]
                for start, counts in taken[1].items():
                    mine = self._traffic.setdefault(start, [0, 0, 0])
                    for i in range(3):
                        mine[i] += counts[i]
            self._done[:0] = done
            return []
        for sample in stored:
            queue.put_nowait(sample)
        with self._lock:
            for sample, _, _ in done:
                self._in_flight -= 1
                self._open[sample.window_start] -= 1
            # Late samples or traffic for a closed window: recompute its aggregates.
            late = {s.window_start for s, _, _ in done} | set(taken[1])
            self._dirty |= late & self._closed
        self._evaluated += len(done)
        alerts = [alert for _, _, alerts in done for alert in alerts]
        self._alerts += len(alerts)
        return alerts

    async def _evaluate_from(self, queue: asyncio.Queue[Sample]) -> None:
        while True:
            sample = await queue.get()
            evaluations = await asyncio.gather(
                *(self._evaluate(fn, sample) for fn in self.evaluators.values())
            )
            results, alerts = {}, []
            for name, evaluation in zip(self.evaluators, evaluations, strict=True):
                results[name] = evaluation.to_json()
                if evaluation.alert is not None:
                    spec = evaluation.alert
                    alerts.append(
                        Alert(
                            spec.type,
                            spec.severity,
                            spec.message,
                            ts=sample.ts,
                            window_start=sample.window_start,
                            request_id=sample.request_id,
                            sample_id=sample.id,
                            details={"evaluator": name, **spec.details},
                        )
                    )
            self._done.append((sample, results, alerts))

    async def _evaluate(self, evaluator: Evaluator, sample: Sample) -> Evaluation:
        """One evaluator on one sample; whatever it raises stays with it."""
        kind = kind_of(evaluator)
        try:
            if inspect.iscoroutinefunction(evaluator):
                value = await asyncio.wait_for(evaluator(sample), self.evaluation_timeout)
            else:
                call = contextvars.copy_context().run
                value = await asyncio.wait_for(
                    asyncio.get_running_loop().run_in_executor(
                        self._executor, call, evaluator, sample
                    ),
                    self.evaluation_timeout,
                )
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, self.evaluation_timeout)
            return as_evaluation(value, kind)
        except Exception as exc:
            return Evaluation(kind, error=f"{type(exc).__name__}: {exc}")

    async def _call_back(self, alert: Alert) -> None:
        for callback in self.on_alert:
            try:
                if inspect.iscoroutinefunction(callback):
                    await callback(alert)
                else:
                    await asyncio.get_running_loop().run_in_executor(
                        self._executor, callback, alert
                    )
            except Exception:
                log.exception("alert callback %r failed", callback)

    def _close_windows(self, *, final: bool) -> list[Alert]:
        """Close the windows that are over and fully evaluated (at stop: all of them),
        and recompute the closed ones that late samples changed. Returns drift alerts."""
        now = self.clock()
        with self._lock:
            due = sorted(
                start
                for start, open_ in self._open.items()
                if start not in self._closed
                and open_ == 0
                and (final or start + self.window <= now)
            )
            dirty, self._dirty = self._dirty, set()
        alerts = [self._close(start, now, partial=start + self.window > now) for start in due]
        for start in dirty - set(due):
            self._close(start, now, partial=False, test_drift=False)
        return [alert for alert in alerts if alert is not None]

    def _close(
        self, start: float, now: float, *, partial: bool, test_drift: bool = True
    ) -> Alert | None:
        results, weights = self._evaluations(start)
        aggregates = {**aggregate(results, weights), "partial": partial}
        traffic = self.store.traffic().get(start, {})
        aggregates.update({k: traffic.get(k, 0) for k in ("pushed", "accepted", "dropped")})
        found = None
        if test_drift and self.baseline:
            scores, score_weights = judge_scores(results, weights)
            previous, previous_weights = judge_scores(*self._evaluations(start - self.window))
            found = drift(
                self.baseline,
                scores,
                previous,
                delta=self.drift_delta,
                alpha=self.drift_alpha,
                weights=score_weights,
                previous_weights=previous_weights,
            )
        alert = None
        if found is not None and found["alert"]:
            alert = Alert(
                "drift",
                "critical",
                f"judge scores drifted: {found['line']}",
                ts=start + self.window,
                window_start=start,
                details=found,
            )
        with self.store.transaction() as db:
            Store.save_window(db, start, start + self.window, aggregates, found, now)
            if alert is not None:
                alert = _with_id(alert, Store.insert_alert(db, alert.row()))
        self._closed.add(start)
        self._closed_count += 1
        self._alerts += alert is not None
        return alert

    def _evaluations(self, start: float) -> tuple[list[dict[str, Any]], list[float]]:
        """A window's evaluations, and each sample's weight: 1 / its inclusion
        probability (the sampler's rate for a base-rate sample of a schema 1 file)."""
        stored = self.store.evaluations(start)
        weights = [inverse_probability(p, self.sampler.rate) for _, p in stored]
        return [results for results, _ in stored], weights


def _with_id(alert: Alert, alert_id: int) -> Alert:
    return replace(alert, id=alert_id)
