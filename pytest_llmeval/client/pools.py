"""What the clients of one run share, and the thread pool they all use.

:class:`Pools` belongs to a run (the plugin makes one per pytest run, in its
``RunContext``): the bound on requests in flight per endpoint (limits.py), the threads that wait on
blocking calls for async code (``off_loop``), and the run's clients, so that a Ctrl-C
stops them all and the run's end closes them. Nothing of it outlives the run, so an
in-process pytest run (pytester) inside another shares none of the outer run's.

:class:`DaemonPool` is the thread pool behind every thread of ours. Its work runs in a
copy of the submitter's context (as ``asyncio.to_thread`` does), so the running test's
record and the run's settings reach a helper called from one of these threads.
"""

from __future__ import annotations

import contextvars
import functools
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .limits import Limiter, LimitStats

if TYPE_CHECKING:
    from .llm import LLMClient

T = TypeVar("T")
P = ParamSpec("P")
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
        self._limiters: dict[tuple[str, int, bool], Limiter] = {}
        self._waiting: DaemonPool | None = None
        # Each client of the run, and the event it watches: set by a Ctrl-C.
        self._clients: weakref.WeakKeyDictionary[LLMClient, threading.Event] = (
            weakref.WeakKeyDictionary()
        )
        self._interrupted = False

    def slots(self, base_url: str, ceiling: int, adaptive: bool = False) -> Limiter:
        """The bound on requests in flight to ``base_url`` (and the pace of its sends),
        shared by the run's clients, sync and async."""
        key = (base_url, ceiling, adaptive)
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = self._limiters[key] = Limiter(base_url, ceiling, adaptive=adaptive)
                if self._interrupted:
                    limiter.interrupt()
            return limiter

    def limits(self) -> list[LimitStats]:
        """What each endpoint's limiter did so far (for the run's summary)."""
        with self._lock:
            return [limiter.stats for limiter in self._limiters.values()]

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

    def interrupt(self) -> None:
        """Stop every client of the run from sending anything more (a Ctrl-C)."""
        with self._lock:
            self._interrupted = True
            events = list(self._clients.values())
            limiters = list(self._limiters.values())
        for event in events:
            event.set()
        for limiter in limiters:  # its waiters, sync and async, stop waiting
            limiter.interrupt()

    def close(self) -> None:
        """The run has ended: its waiting threads exit, its clients are closed."""
        with self._lock:
            waiting = self._waiting  # kept: work submitted after the end is refused
            clients = list(self._clients)
        if waiting is not None:
            waiting.shutdown(wait=False)
        for client in clients:
            client.close()
