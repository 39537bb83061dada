"""Which live requests get evaluated.

A base rate of the traffic, stratified by hour of day: each hour keeps its own credit
that grows by ``rate`` per request and pays 1 per sample, drawn at a random point, so in
every stratum the base-rate share of the requests *not sampled for another reason* stays
within one sample of ``rate`` (a quiet night hour is not starved by a busy afternoon, as
it can be by plain coin flips). On top of that, and not charged to the credit, every
request that matches a configured pattern, that errored, or that was slower than the p95
observed so far is sampled too (with probability 1), so the share of the hour's traffic
as a whole that is sampled is higher, and its base-rate share lower, than ``rate``.

Each decision comes with its inclusion probability (``probability``): 1 for a forced
sample, ``rate`` for a base-rate one. Window aggregates weight a sample by its inverse,
so an always-sampled kind of request is not over-represented.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

Reason = Literal["base", "pattern", "error", "slow"]
REASONS: tuple[Reason, ...] = ("base", "pattern", "error", "slow")

LATENCY_HISTORY = 2048  # the p95 is taken over this many recent latencies
LATENCY_REFRESH = 256  # ...and recomputed after this many more


def local_hour(ts: float) -> int:
    """The hour of day of ``ts`` on this machine's clock."""
    return time.localtime(ts).tm_hour


@dataclass
class Stratum:
    seen: int = 0
    eligible: int = 0  # not sampled for another reason: what the base rate applies to
    sampled: int = 0  # by the base rate only
    forced: int = 0  # sampled for a pattern, an error or slowness
    credit: float = 0.0
    threshold: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "eligible": self.eligible,
            "sampled": self.sampled,
            "forced": self.forced,
            "base_share": _share(self.sampled, self.eligible),
            "sampled_share": _share(self.sampled + self.forced, self.seen),
        }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class Sampler:
    """Decides, for each served request, whether it is evaluated and why.

    Safe to call from many threads; ``seed`` makes the choices repeatable."""

    def __init__(
        self,
        rate: float = 0.05,
        *,
        always: Iterable[str | re.Pattern[str] | Callable[[str], bool]] = (),
        errors: bool = True,
        slow: bool = True,
        slow_after: int = 100,
        seed: int | None = None,
        stratum: Callable[[float], int] = local_hour,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"the sampling rate must be between 0 and 1, not {rate}")
        self.rate = rate
        self._patterns = [p if callable(p) else re.compile(p, re.IGNORECASE).search for p in always]
        self.errors = errors
        self.slow = slow
        self.slow_after = slow_after  # latencies seen before "slower than p95" applies
        self._stratum = stratum
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._strata: dict[int, Stratum] = {}
        self._latencies: list[float] = []
        self._next_latency = 0
        self._since_refresh = 0
        self.p95: float | None = None
        self.counts: dict[Reason, int] = dict.fromkeys(REASONS, 0)

    def decide(
        self,
        text: str,
        *,
        ts: float,
        latency_s: float | None = None,
        error: bool = False,
    ) -> Reason | None:
        """The reason to sample this request, or None. ``text`` is what the patterns are
        matched against (the request's input as text)."""
        forced: Reason | None = None
        if self.errors and error:
            forced = "error"
        elif self._patterns and any(match(text) for match in self._patterns):
            forced = "pattern"
        key = self._stratum(ts)
        with self._lock:
            if latency_s is not None:
                if forced is None and self.slow and self.p95 is not None and latency_s > self.p95:
                    forced = "slow"
                self._observe(latency_s)
            stratum = self._strata.get(key)
            if stratum is None:
                stratum = self._strata[key] = Stratum(threshold=self._random.random())
            stratum.seen += 1
            reason = forced
            if forced is not None:
                stratum.forced += 1
            else:
                stratum.eligible += 1
                stratum.credit += self.rate
                if stratum.credit >= stratum.threshold:
                    stratum.credit -= 1.0
                    stratum.sampled += 1
                    # Where in the next 1/rate requests the next sample falls.
                    stratum.threshold = self._random.random()
                    reason = "base"
            if reason is not None:
                self.counts[reason] += 1
            return reason

    def probability(self, reason: Reason) -> float:
        """The probability with which a request sampled for ``reason`` was drawn: 1 when
        it was forced (a pattern, an error, slowness), else the base rate."""
        return self.rate if reason == "base" else 1.0

    def _observe(self, latency: float) -> None:
        if len(self._latencies) < LATENCY_HISTORY:
            self._latencies.append(latency)
        else:
            self._latencies[self._next_latency] = latency
            self._next_latency = (self._next_latency + 1) % LATENCY_HISTORY
        self._since_refresh += 1
        due = len(self._latencies) >= self.slow_after and (
            self.p95 is None or self._since_refresh >= LATENCY_REFRESH
        )
        if due:
            ordered = sorted(self._latencies)
            self.p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            self._since_refresh = 0

    def strata(self) -> dict[int, dict[str, Any]]:
        """Per stratum (hour of day): requests ``seen``; ``eligible``, those not sampled
        for another reason; ``sampled`` by the base rate and ``forced``; ``base_share``,
        sampled / eligible (within one sample of the rate); ``sampled_share``, the share
        of all requests sampled for any reason."""
        with self._lock:
            return {k: s.to_json() for k, s in sorted(self._strata.items())}

    def totals(self) -> dict[str, Any]:
        """The same counts and shares over every stratum."""
        with self._lock:
            total = Stratum()
            for s in self._strata.values():
                total.seen += s.seen
                total.eligible += s.eligible
                total.sampled += s.sampled
                total.forced += s.forced
            return total.to_json()
