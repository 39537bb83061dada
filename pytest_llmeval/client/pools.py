"""What the clients of one run share, and the thread pool they all use.

:class:`Pools` belongs to a run (the plugin makes one per pytest run, in its
``RunContext``): the bound on requests in flight per endpoint and key (limits.py), the async
clients of each event loop (one connection pool per endpoint and loop), the threads that wait on
blocking calls for async code (``off_loop``), and the run's clients, so that a Ctrl-C
stops them all and the run's end closes them. Nothing of it outlives the run, so an
in-process pytest run (pytester) inside another shares none of the outer run's.

:class:`DaemonPool` is the thread pool behind every thread of ours. Its work runs in a
copy of the submitter's context (as ``asyncio.to_thread`` does), so the running test's
record and the run's settings reach a helper called from one of these threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import math
import queue
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from .limits import Cap, Limiter, LimitStats

if TYPE_CHECKING:
    from .llm import LLMClient

T = TypeVar("T")
P = ParamSpec("P")


class AsyncClosable(Protocol):
    async def close(self) -> None: ...


A = TypeVar("A", bound=AsyncClosable)
Loop = asyncio.AbstractEventLoop
WAITING_THREADS = 256  # off_loop's: they only wait, so many cost little


class DaemonPool(ThreadPoolExecutor):
    """A thread pool whose threads are daemons. concurrent.futures' pools join their
    threads at interpreter exit, so after a Ctrl-C the process waited for every request in
    flight (up to the timeout, and then for its retries); these threads are abandoned.
    Its own submit and shutdown (it is a ThreadPoolExecutor only to its callers)."""

    def __init__(self, max_workers: int, name: str) -> None:
        super().__init__(max_workers, name)
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._work.put((future, call))
            if not self._idle.acquire(blocking=False) and len(self._workers) < self._max_workers:
                thread = threading.Thread(
                    target=self._worker, name=f"{self._name}_{len(self._workers)}", daemon=True
                )
                self._workers.append(thread)
                thread.start()
        return future

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                self._work.put(None)  # wake the next worker: the pool is shut
                return
            future, call = item
            del item
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, call
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            self._work.put(None)
        if wait:
            for thread in self._workers:
                thread.join()


class Pools:
    """The limits, waiting threads and clients of one run; :meth:`close` at its end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiters: dict[tuple[str, str | None], Limiter] = {}
        self._waiting: DaemonPool | None = None
        # Each client of the run, and the event it watches: set by a Ctrl-C.
        self._clients: weakref.WeakKeyDictionary[LLMClient, threading.Event] = (
            weakref.WeakKeyDictionary()
        )
        self._interrupted = False
        # The futures that tasks sleeping before a retry await (see sleep), by loop.
        self._sleepers: set[tuple[Loop, asyncio.Future[None]]] = set()
        # What belongs to one event loop (an async client per endpoint: its connection
        # pool), and the async generator that closes it when the loop shuts down.
        self._on_loop: dict[Loop, dict[Hashable, AsyncClosable]] = {}
        self._closers: dict[Loop, AsyncGenerator[None, None]] = {}

    def slots(
        self,
        base_url: str,
        api_key: str | None,
        ceiling: int,
        adaptive: bool = False,
        max_pause: float = math.inf,
    ) -> tuple[Limiter, Cap]:
        """The limiter of ``base_url`` with ``api_key`` (the provider's budgets are per
        key), shared by the run's clients of that endpoint and key, sync and async: its
        pacing by the provider's headers and its adaptive limit are theirs together.
        Its ceiling is the highest of theirs; each client's own ``ceiling`` is the
        returned :class:`Cap` on that client's requests in flight (the app's and the
        judge's max_concurrency apply to each apart, their sum to neither). Whether it
        adapts, and ``max_pause``, are the first client's (one run's settings)."""
        key = (base_url, api_key)
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = Limiter(base_url, ceiling, adaptive=adaptive, max_pause=max_pause)
                self._limiters[key] = limiter
                if self._interrupted:
                    limiter.interrupt()
        return limiter, limiter.cap(ceiling)

    def limits(self) -> list[LimitStats]:
        """What each endpoint's limiter did so far (nothing shows it yet: for a summary,
        or a test)."""
        with self._lock:
            return [limiter.stats for limiter in self._limiters.values()]

    async def on_loop(self, key: Hashable, make: Callable[[], A]) -> A:
        """The object ``make`` builds for ``key`` on the running event loop, made once
        per loop; its ``close()`` is awaited on that loop when the loop shuts its async
        generators down (the end of ``asyncio.run``, of pytest-asyncio's loops), or
        at the run's end (:meth:`close`). A loop closed without shutting down (a bare
        ``loop.close()``) is forgotten, and what it had cannot be closed."""
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._on_loop.get(loop, {}).get(key)
        if made is not None:
            return made  # type: ignore[return-value]  # make's, for this key
        new = make()  # outside the lock: building a client takes a while
        with self._lock:
            made = self._on_loop.get(loop, {}).get(key)
            if made is not None:  # made meanwhile (only this loop's thread makes its own)
                closer = None
            else:
                for old in [old for old in self._on_loop if old.is_closed()]:
                    self._forget(old)
                made = new
                closer = self._own(loop, key, made)
        if made is not new:
            await new.close()
            return made  # type: ignore[return-value]
        if closer is not None:
            await closer.asend(None)  # now the loop knows of it: it closes it at the end
        return new

    def _own(
        self, loop: Loop, key: Hashable, made: AsyncClosable
    ) -> AsyncGenerator[None, None] | None:
        """Under the lock: ``made`` belongs to ``loop``; its closer, when new."""
        owned = self._on_loop.get(loop)
        closer = None
        if owned is None:
            owned = self._on_loop[loop] = {}
            closer = self._closers[loop] = self._closed_with(loop, owned)
        owned[key] = made
        return closer

    async def _closed_with(
        self, loop: Loop, owned: dict[Hashable, AsyncClosable]
    ) -> AsyncGenerator[None, None]:
        """Suspended at its ``yield`` until its loop closes its async generators (or the
        run's end closes it): then it closes what the loop owns, there, on its loop."""
        try:
            yield
        finally:
            with self._lock:
                self._forget(loop)
                closing = list(owned.values())
            for made in closing:
                with contextlib.suppress(Exception):
                    await made.close()

    def _forget(self, loop: Loop) -> None:
        """Under the lock."""
        self._on_loop.pop(loop, None)
        self._closers.pop(loop, None)

    def waiting(self) -> DaemonPool:
        """Threads that only wait on blocking calls made for async code (a batched
        fixture): their own pool, so that a judge call waiting on its samples (which run
        on a client's pool) never holds a thread those samples need."""
        with self._lock:
            if self._waiting is None:
                self._waiting = DaemonPool(WAITING_THREADS, "llmeval-wait")
            return self._waiting

    def add(self, client: LLMClient) -> threading.Event:
        """Count ``client`` among the run's; returns the event it watches, which
        :meth:`interrupt` sets: from then on it sends nothing more."""
        with self._lock:
            return self._clients.setdefault(client, threading.Event())

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds on the running loop, or raise KeyboardInterrupt as
        soon as :meth:`interrupt` is called (from any thread)."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        sleeper = (loop, woken)
        with self._lock:
            if self._interrupted:
                raise KeyboardInterrupt
            self._sleepers.add(sleeper)
        try:
            await asyncio.wait((woken,), timeout=delay)
        finally:
            with self._lock:
                self._sleepers.discard(sleeper)
        if woken.done():
            raise KeyboardInterrupt

    def interrupt(self) -> None:
        """Stop every client of the run from sending anything more (a Ctrl-C)."""
        with self._lock:
            self._interrupted = True
            events = list(self._clients.values())
            limiters = list(self._limiters.values())
            sleepers = list(self._sleepers)
        for event in events:
            event.set()
        for limiter in limiters:  # its waiters, sync and async, stop waiting
            limiter.interrupt()
        for loop, woken in sleepers:
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody sleeps
                loop.call_soon_threadsafe(_wake, woken)

    def close(self) -> None:
        """The run has ended: its waiting threads exit, its clients are closed."""
        with self._lock:
            waiting = self._waiting  # kept: work submitted after the end is refused
            clients = list(self._clients)
            closers = list(self._closers.items())
        if waiting is not None:
            waiting.shutdown(wait=False)
        for client in clients:
            client.close()
        for loop, closer in closers:
            _close_on(loop, closer)
        with self._lock:
            for loop in [loop for loop in self._on_loop if loop.is_closed()]:
                self._forget(loop)


def _close_on(loop: Loop, closer: AsyncGenerator[None, None]) -> None:
    """Run ``closer``'s end on its loop, from outside it: a loop running in another
    thread is asked to; an idle one runs it here. A loop running in this thread closes
    it itself when it shuts down; a closed loop can no longer."""
    try:
        here: Loop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if loop.is_closed() or here is not None:
        return
    closing = _aclose(closer)
    try:
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(closing, loop)
        else:
            loop.run_until_complete(closing)
            return
    except RuntimeError:  # it closed meanwhile
        closing.close()
        return
    with contextlib.suppress(Exception):  # best effort: the loop stopped meanwhile
        future.result(timeout=5)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _aclose(closer: AsyncGenerator[None, None]) -> None:
    await closer.aclose()
