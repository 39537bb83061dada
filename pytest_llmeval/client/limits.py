"""How many requests an endpoint gets at once, and when the next one may go.

One :class:`Limiter` per endpoint of a run (pools.py keeps them), shared by the sync
client's threads (:meth:`Limiter.acquire` blocks) and the async client's tasks
(:meth:`Limiter.acquire_async` awaits, never blocking the loop). Slots are granted first
come, first served, whichever kind of caller waits.

The bound on requests in flight is fixed (``adaptive=False``: the ceiling) or adapts as
TCP's congestion window does (AIMD): it starts at :data:`INITIAL_LIMIT`, grows fast while
no congestion was seen (slow start), then by one per round trip, and is cut on a 429 or
when latency rises well above its long-run level. It grows only while it is what holds
the requests back (not while the provider's budget does: paced sends hold their slots), so
a suite that never fills it does not inflate it.

One limiter serves an endpoint and API key, whichever clients use it (the app's and the
judge's share its pacing and its limit); each client's own ``max_concurrency`` is a
:class:`Cap` on that client's requests in flight within it, and the limiter's ceiling is
the highest of them.

Either way the provider's own signals pace the sends: ``retry-after`` on a 429 pauses the
whole endpoint, and ``x-ratelimit-remaining-*`` / ``-limit-*`` / ``-reset-*`` are mirrored
in a local bucket per budget (requests, tokens), so a send waits for the budget the
provider would refuse it for rather than spending a 429 to learn so. A pause, or a wait
for a reset, lasts at most ``max_pause`` (the clients' retry_max_delay); a header saying
"inf" or "nan" says nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# The adaptive limit's start (or the ceiling, when lower).
INITIAL_LIMIT = 16
# In slow start each request answered in time raises the limit by this much: the limit
# grows (1 + SLOW_START_GAIN)-fold per round trip, so an unbounded server is driven at the
# ceiling within a round trip or two.
SLOW_START_GAIN = 3.0
# Latency "well above" its usual level: the recent average over the long-run one.
LATENCY_RISE = 2.0
# Above this the limit holds (no growth) and slow start ends.
LATENCY_HOLD = 1.3
CUT_ON_429 = 0.5
CUT_ON_LATENCY = 0.7
SHORT_WEIGHT = 1 / 8  # the recent latency average (TCP's SRTT weight)
LONG_WEIGHT = 1 / 64  # the long-run one, which follows a lasting change in a while
# OpenAI's x-ratelimit-limit-* are per minute.
LIMIT_WINDOW_S = 60.0


@dataclass
class LimitStats:
    """What one endpoint's limiter did in the run (read under no lock: a snapshot)."""

    endpoint: str
    adaptive: bool
    ceiling: int
    limit: int  # the bound on requests in flight now
    peak: int  # the highest it reached
    peak_in_flight: int = 0
    rate_limited: int = 0  # 429s seen
    cuts: int = 0  # times the adaptive limit was cut (a 429 or latency)
    pauses: int = 0  # times a retry-after paused the whole endpoint
    paused_s: float = 0.0  # how long the endpoint was paused in all
    paced: int = 0  # sends held back for the provider's remaining budget


def parse_duration(text: str | None) -> float | None:
    """Seconds of an OpenAI reset header: "1s", "6m0s", "20ms", "1.5s", "1h2m3s", or a
    bare number of seconds. None when absent or unreadable."""
    if text is None:
        return None
    text = text.strip()
    try:
        seconds = _finite(float(text))
        return None if seconds is None else max(0.0, seconds)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return _finite(sum(float(n) * _UNITS[u] for n, u in parts))


def _finite(value: float) -> float | None:
    """``value``, or None for inf and nan (float() reads "inf", "nan", "1e400"): no
    wait is forever."""
    return value if math.isfinite(value) else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds of ``retry-after-ms``, else of ``retry-after``; None when neither is a
    finite number (an HTTP date: the caller's own backoff applies)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = _finite(float(value) * scale)
        except ValueError:
            continue
        if seconds is not None:
            return max(0.0, seconds)
    return None


def _number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return _finite(float(value))
    except ValueError:
        return None


class _Budget:
    """A local mirror of one of the provider's buckets (requests, or tokens): the level
    it last reported, less what was sent since, refilled at the rate its limit implies
    (or at once at its reset, when no limit is given), never above its capacity: the most
    it was seen to hold (what it said was left, and what the request it answered took).
    A send costing more than that is due when the bucket is full and leaves it in debt,
    which later sends wait out."""

    def __init__(self) -> None:
        self.level: float | None = None  # None: the provider never said
        self.stamp = 0.0
        self.rate: float | None = None  # per second
        self.capacity = 0.0
        self.reset_at: float | None = None
        self.charged = 0.0  # all that was sent, for telling what a report left out

    def observe(
        self,
        remaining: float,
        limit: float | None,
        reset_s: float | None,
        now: float,
        since: float,
        admitted: float,
    ) -> None:
        """A report of ``remaining`` at ``now``; ``since`` was sent after the request it
        answers (the provider had not counted it); ``admitted`` is what that request
        took from the bucket (0 if refused), so the bucket held at least both."""
        if limit:
            self.rate = limit / LIMIT_WINDOW_S
        # Not the limit: a provider's bucket may hold less than a minute's worth, and
        # after a quiet spell a mirror that full would let a burst of 429s through.
        self.capacity = max(self.capacity, remaining + admitted)
        self.level = remaining - since
        self.stamp = now
        self.reset_at = None if reset_s is None else now + reset_s

    def _at(self, t: float) -> float:
        assert self.level is not None
        if self.rate:
            return min(self.capacity, self.level + self.rate * max(0.0, t - self.stamp))
        if self.reset_at is not None and t >= self.reset_at:
            return self.capacity
        return self.level

    def ready(self, cost: float, t: float) -> float:
        """The earliest time from ``t`` at which ``cost`` is in the bucket."""
        if self.level is None:
            return t
        t = max(t, self.stamp)  # a send reserved ahead of now took its share there
        level = self._at(t)
        # More than the capacity is never in the bucket: that send goes when it is full,
        # into debt. (A capacity of 0: the provider said only "none left", wait for more.)
        need = min(cost, self.capacity) if self.capacity > 0 else cost
        if level >= need - 1e-9:
            return t
        if self.rate:
            return t + (need - level) / self.rate
        if self.reset_at is not None and self.reset_at > t:
            return self.reset_at
        return t  # no way to tell when it refills: not ours to hold back

    def take(self, cost: float, t: float) -> float:
        """Spend ``cost`` at ``t``; returns the running total charged."""
        self.charged += cost
        if self.level is not None:
            t = max(t, self.stamp)
            self.level = self._at(t) - cost
            if self.reset_at is not None and t >= self.reset_at:
                self.reset_at = None
            self.stamp = t
        return self.charged


class _Latency:
    """Recent and long-run averages of one kind of request's latency."""

    def __init__(self, first: float) -> None:
        self.short = first
        self.long = first

    def add(self, latency: float) -> float:
        """Take a sample; returns how far the recent average is above the long-run one."""
        self.short += (latency - self.short) * SHORT_WEIGHT
        self.long += (latency - self.long) * LONG_WEIGHT
        return self.short / self.long if self.long > 0 else 1.0


@dataclass(eq=False)
class Cap:
    """One client's own bound on its requests in flight within its endpoint's limiter
    (changed under the limiter's lock)."""

    ceiling: int
    in_flight: int = 0

    @property
    def full(self) -> bool:
        return self.in_flight >= self.ceiling


@dataclass(eq=False)
class Ticket:
    """One request's slot, from acquire to release."""

    sent_at: float
    requests_mark: float  # the budgets' totals charged once this one was
    tokens_mark: float
    cap: Cap | None = None
    released: bool = False


@dataclass(eq=False)
class _Waiter:
    """A caller waiting for a slot: a thread (event) or a task (future on its loop)."""

    event: threading.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = None
    cap: Cap | None = None
    granted: bool = False  # given a slot
    queued: bool = False  # in the line for the provider's budget
    interrupted: bool = False

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
            return
        assert self.loop is not None and self.future is not None
        if asyncio._get_running_loop() is self.loop:
            self._settle()
        else:
            # Its loop may be closed: nobody waits any more.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        assert self.future is not None
        if self.future.done():
            return
        if self.interrupted:
            self.future.set_exception(KeyboardInterrupt())
        else:
            self.future.set_result(None)


class Limiter:
    """The bound on requests in flight to one endpoint and the pace of their sends."""

    def __init__(
        self,
        endpoint: str,
        ceiling: int,
        *,
        adaptive: bool = False,
        max_pause: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        ceiling = max(1, ceiling)
        self._clock = clock
        # The longest a retry-after or a reset holds the endpoint (a client's own wait
        # before a retry is capped as long: retry_max_delay).
        self._max_pause = max_pause
        self._lock = threading.Lock()
        self._adaptive = adaptive
        self._ceiling = ceiling
        self._limit = float(min(INITIAL_LIMIT, ceiling) if adaptive else ceiling)
        self._threshold = math.inf  # slow start below it (TCP's ssthresh)
        self._in_flight = 0
        self._waiters: deque[_Waiter] = deque()  # for a slot
        self._paced: deque[_Waiter] = deque()  # holding one, for the time to send
        self._paused_until = 0.0
        self._requests = _Budget()
        self._tokens = _Budget()
        self._tokens_per_request = 0.0  # a running average of the usage reported
        self._latency: dict[str, _Latency] = {}
        self._last_cut = -math.inf  # at most one cut per round trip: see _cut
        self._interrupted = threading.Event()
        self.stats = LimitStats(endpoint, adaptive, ceiling, int(self._limit), int(self._limit))

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def cap(self, ceiling: int) -> Cap:
        """A client's own bound on its requests in flight here; the limiter's ceiling
        rises to the highest of its clients' (a fixed limit is that ceiling)."""
        cap = Cap(max(1, ceiling))
        with self._lock:
            if cap.ceiling > self._ceiling:
                self._ceiling = self.stats.ceiling = cap.ceiling
                if not self._adaptive:
                    self._limit = float(cap.ceiling)
                elif not self.stats.cuts:  # the start a higher ceiling would have had
                    self._limit = max(self._limit, float(min(INITIAL_LIMIT, cap.ceiling)))
                self._grew()
                woken = self._grant()
            else:
                woken = []
        for waiter in woken:
            waiter.wake()
        return cap

    # --- waiting for a slot -----------------------------------------------------------

    def acquire(self, cap: Cap | None = None) -> Ticket:
        """Block until a slot is free (here, and within ``cap``) and the endpoint may be
        sent to; raises KeyboardInterrupt once :meth:`interrupt` was called."""
        waiter = _Waiter(event=threading.Event(), cap=cap)
        with self._lock:
            queued = self._enter(waiter)
        assert waiter.event is not None
        if queued:
            try:
                waiter.event.wait()
            except BaseException:
                self._abandon(waiter)
                raise
            if waiter.interrupted:
                raise KeyboardInterrupt
        try:
            while True:
                with self._lock:
                    ticket, delay, woken = self._pace(waiter)
                    if ticket is None:
                        waiter.event.clear()  # under the lock: no wake is lost
                for other in woken:
                    other.wake()
                if ticket is not None:
                    return ticket
                if delay is None:  # behind others: the one ahead wakes it
                    waiter.event.wait()
                elif self._interrupted.wait(delay):
                    raise KeyboardInterrupt
                if waiter.interrupted:
                    raise KeyboardInterrupt
        except BaseException:
            self._leave(waiter)
            raise

    async def acquire_async(self, cap: Cap | None = None) -> Ticket:
        """Await a free slot and the time the endpoint may be sent to."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop=loop, future=loop.create_future(), cap=cap)
        with self._lock:
            queued = self._enter(waiter)
        if queued:
            assert waiter.future is not None
            try:
                await waiter.future
            except BaseException:
                self._abandon(waiter)
                raise
        try:
            while True:
                with self._lock:
                    ticket, delay, woken = self._pace(waiter)
                    if ticket is None:  # what the one ahead, or an interrupt, sets
                        waiter.future = future = loop.create_future()
                for other in woken:
                    other.wake()
                if ticket is not None:
                    return ticket
                if delay is None:
                    await future
                else:  # the head: its time to send, unless an interrupt comes first
                    await asyncio.wait((future,), timeout=delay)
                    if future.done():
                        future.result()
        except BaseException:
            self._leave(waiter)
            raise

    def _enter(self, waiter: _Waiter) -> bool:
        """Take a slot at once, or queue ``waiter`` for one (True); under the lock."""
        if self._interrupted.is_set():
            raise KeyboardInterrupt
        # First come, first served, but a waiter held back by its own cap holds back
        # no one else.
        ahead = any(not _capped(other) for other in self._waiters)
        if not ahead and self._in_flight < self.limit and not _capped(waiter):
            self._take_slot(waiter.cap)
            return False
        self._waiters.append(waiter)
        return True

    def _take_slot(self, cap: Cap | None) -> None:
        self._in_flight += 1
        if cap is not None:
            cap.in_flight += 1
        if self._in_flight > self.stats.peak_in_flight:
            self.stats.peak_in_flight = self._in_flight

    def _free_slot(self, cap: Cap | None) -> None:
        self._in_flight -= 1
        if cap is not None:
            cap.in_flight -= 1

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter that gave up (cancelled, interrupted): its place, or the slot it was
        granted meanwhile, goes to the next."""
        with self._lock:
            if waiter.granted:
                self._free_slot(waiter.cap)
                woken = self._grant()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                woken = []
        for other in woken:
            other.wake()

    def _grant(self) -> list[_Waiter]:
        """Hand free slots to the first waiters whose cap lets them (a waiter whose
        event loop closed waits no more: dropped); under the lock (wake them after it)."""
        woken: list[_Waiter] = []
        kept: list[_Waiter] = []
        while self._waiters and self._in_flight < self.limit:
            waiter = self._waiters.popleft()
            if _gone(waiter):
                continue
            if _capped(waiter):
                kept.append(waiter)
                continue
            waiter.granted = True
            self._take_slot(waiter.cap)
            woken.append(waiter)
        self._waiters.extendleft(reversed(kept))
        return woken

    # --- when to send -----------------------------------------------------------------
    # A request holding a slot sends at once when nothing is in the way. Otherwise it
    # joins a line: only its head waits for the time the pause and the budgets allow,
    # then sends and hands the head to the next, so the sends keep their spacing (a
    # pause shifts the line, it does not release it at once) and new news counts.

    def _pace(self, waiter: _Waiter) -> tuple[Ticket | None, float | None, list[_Waiter]]:
        """Under the lock: (a ticket, None, whom to wake: the line's next head) when
        ``waiter`` may send now; else (None, seconds to wait, []) for the head of the
        line, or (None, None, []) for one behind it."""
        if self._interrupted.is_set():
            raise KeyboardInterrupt
        woken = self._sweep()
        if self._paced and self._paced[0] is not waiter:
            if not waiter.queued:
                waiter.queued = True
                self._paced.append(waiter)
                self.stats.paced += 1
            return None, None, woken
        now = self._clock()
        at = self._ready(now)
        if at > now:
            if not waiter.queued:
                waiter.queued = True
                self._paced.append(waiter)
                self.stats.paced += 1
            return None, at - now, woken
        if waiter.queued:
            waiter.queued = False
            self._paced.popleft()
        cost = self._tokens_per_request
        ticket = Ticket(
            now, self._requests.take(1.0, now), self._tokens.take(cost, now), waiter.cap
        )
        woken += self._sweep()
        if self._paced:
            woken.append(self._paced[0])
        return ticket, None, woken

    def _sweep(self) -> list[_Waiter]:
        """Under the lock: drop the waiters at the head of the line whose event loop
        closed (they will never send), giving their slots to others; whom to wake."""
        dropped = False
        while self._paced and _gone(self._paced[0]):
            gone = self._paced.popleft()
            gone.queued = False
            self._free_slot(gone.cap)
            dropped = True
        if not dropped:
            return []
        return ([self._paced[0]] if self._paced else []) + self._grant()

    def _ready(self, now: float) -> float:
        """When the next request may be sent: after any pause, once the mirrored
        budgets hold it."""
        cost = self._tokens_per_request
        at = max(now, self._paused_until)
        for _ in range(3):  # each budget's wait may push the other's
            at = max(at, self._requests.ready(1.0, at), self._tokens.ready(cost, at))
        return at

    def _leave(self, waiter: _Waiter) -> None:
        """A caller that gave up holding a slot (cancelled, interrupted): its place in
        the line and its slot go to the next."""
        with self._lock:
            head = None
            if waiter.queued:
                waiter.queued = False
                was_head = self._paced[0] is waiter
                self._paced.remove(waiter)
                if was_head and self._paced:
                    head = self._paced[0]
            self._free_slot(waiter.cap)
            woken = ([head] if head is not None else []) + self._grant() + self._sweep()
        for other in woken:
            other.wake()

    # --- what came back -----------------------------------------------------------------

    def release(
        self,
        ticket: Ticket,
        *,
        latency: float | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        lane: str = "",
    ) -> None:
        """The request is over: answered in ``latency`` seconds (a success), or failed
        with ``status`` (None: no answer), or never sent (neither). ``headers`` are the
        response's, on success and failure alike; ``lane`` names the kind of request
        whose latencies are comparable (an endpoint and model)."""
        now = self._clock()
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            self._free_slot(ticket.cap)
            if headers is not None:
                self._observe(headers, ticket, now, admitted=status != 429)
            if status == 429:
                self._rate_limited(headers, ticket, now)
            elif status is None and latency is not None:
                self._answered(lane, latency, ticket, now)
            woken = self._grant() + self._sweep()
        for waiter in woken:
            waiter.wake()

    def note_usage(self, total_tokens: int) -> None:
        """The tokens a request used: the cost the token budget charges a send."""
        with self._lock:
            if self._tokens_per_request == 0:
                self._tokens_per_request = float(total_tokens)
            else:
                self._tokens_per_request += (total_tokens - self._tokens_per_request) / 8

    def _observe(
        self, headers: Mapping[str, str], ticket: Ticket, now: float, admitted: bool
    ) -> None:
        for budget, name, mark, cost in (
            (self._requests, "requests", ticket.requests_mark, 1.0),
            (self._tokens, "tokens", ticket.tokens_mark, self._tokens_per_request),
        ):
            remaining = _number(headers, f"x-ratelimit-remaining-{name}")
            if remaining is None:
                continue
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{name}"))
            budget.observe(
                remaining,
                _number(headers, f"x-ratelimit-limit-{name}"),
                None if reset is None else min(reset, self._max_pause),
                now,
                budget.charged - mark,
                cost if admitted else 0.0,
            )

    def _rate_limited(self, headers: Mapping[str, str] | None, ticket: Ticket, now: float) -> None:
        self.stats.rate_limited += 1
        wait = None if headers is None else retry_after(headers)
        if wait is not None:
            wait = min(wait, self._max_pause)
        if wait is not None and now + wait > self._paused_until:
            self.stats.paused_s += now + wait - max(now, self._paused_until)
            self.stats.pauses += 1
            self._paused_until = now + wait
        self._cut(CUT_ON_429, ticket, now)

    def _answered(self, lane: str, latency: float, ticket: Ticket, now: float) -> None:
        seen = self._latency.get(lane)
        if seen is None:
            seen = self._latency[lane] = _Latency(latency)
        rise = seen.add(latency)
        if not self._adaptive:
            return
        if rise > LATENCY_RISE:
            self._cut(CUT_ON_LATENCY, ticket, now)
        elif rise > LATENCY_HOLD:
            self._threshold = min(self._threshold, self._limit)
        elif self._held_back():
            gain = SLOW_START_GAIN if self._limit < self._threshold else 1.0 / self._limit
            self._limit = min(float(self._ceiling), self._limit + gain)
            self._grew()

    def _held_back(self) -> bool:
        """Whether the limit is what holds requests back (under the lock, as one was
        just released): it was full, or others wait for a slot; not while sends wait
        for the provider's budget or a pause, holding their slots."""
        if self._paced:
            return False
        return self._in_flight + 1 >= self.limit or any(not _capped(w) for w in self._waiters)

    def _cut(self, factor: float, ticket: Ticket, now: float) -> None:
        """Cut the adaptive limit, once per round trip: the answers to requests sent
        before the last cut bring no news of it."""
        if not self._adaptive or ticket.sent_at < self._last_cut:
            return
        self._last_cut = now
        self._limit = max(1.0, self._limit * factor)
        self._threshold = self._limit
        self.stats.cuts += 1
        self.stats.limit = self.limit

    def _grew(self) -> None:
        self.stats.limit = self.limit
        self.stats.peak = max(self.stats.peak, self.stats.limit)

    # --- the run's end ----------------------------------------------------------------

    def interrupt(self) -> None:
        """A Ctrl-C: every waiter, and whoever comes later, gets KeyboardInterrupt."""
        with self._lock:
            self._interrupted.set()
            woken = list(self._waiters) + list(self._paced)
            self._waiters.clear()  # the line of paced ones empties as they leave
            for waiter in woken:
                waiter.interrupted = True
        for waiter in woken:
            waiter.wake()


def _gone(waiter: _Waiter) -> bool:
    """Whether ``waiter`` is a task of an event loop since closed: it waits no more."""
    return waiter.loop is not None and waiter.loop.is_closed()


def _capped(waiter: _Waiter) -> bool:
    return waiter.cap is not None and waiter.cap.full
