"""Batched fixtures: an async function of ``example`` computed for many tests at once.

``@batched`` turns ``async def answer(example, assistant)`` into a fixture named
``answer``. The first test that needs it starts it for a window of the tests this process
is about to run that need it too (after ``-m``, ``-k``, deselection; under xdist, the tests
queued on this worker), together with the other batched fixtures those tests use
(``score(answer)``: each example's score starts as soon as its own answer is ready). The
examples run as tasks on one event loop per run, in a thread of its own; a test waits for
its own example alone, and as the tests take their values, the next examples start, so
that the work stays one window ahead of the test being run, never more (what ``-x`` pays
for). Each example's calls and verdicts land in its own test's record, and an exception
raised for one example is raised in that example's test alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import pytest

from ..client.pools import DaemonPool
from ..errors import LLMEvalWarning
from ..records import Record, bind
from .collection import DRAW
from .keys import (
    BATCHES_KEY,
    DRAW_KEY,
    EXAMPLE_KEY,
    QUEUE_UNREADABLE_KEY,
    RECORD_KEY,
    RUN_KEY,
    SETTINGS_KEY,
)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# Arguments filled per example rather than shared across the window.
PER_EXAMPLE = ("example", "llmeval_record", DRAW)
# With a concurrency of N, the examples started ahead of the test being run (itself
# included) are at most this many times N: enough that N stay in flight while the tests
# take their values, and all that -x or --maxfail pays for beyond the tests that ran.
WINDOW_PER_SLOT = 4
# With llmeval_concurrency = auto, no bound per fixture: the endpoints' adaptive limits
# pace the requests, and the window is WINDOW_PER_SLOT x the app's llmeval_max_concurrency
# (the limit's ceiling), at most this. As the window refills test by test (it does not
# drain as a batch would), about twice the ceiling the limit is likely to reach keeps the
# endpoint busy: 512 is twice the default ceiling (256). More would only raise what -x
# pays for and the values held in memory.
AUTO_WINDOW = 512
CLOSE_TIMEOUT_S = 2.0  # at the run's end, how long cancelled examples get to unwind
DEFAULT_EXECUTOR_THREADS = 32  # asyncio.to_thread in batched code: as asyncio's default
_SCOPE_NODES: dict[str, type[pytest.Collector]] = {
    "package": pytest.Package,
    "module": pytest.Module,
    "class": pytest.Class,
}


@dataclass(frozen=True, eq=False)
class Spec:
    """One batched fixture: its function, arguments and concurrency (None: the ini's)."""

    name: str
    func: Callable[..., Awaitable[Any]]
    params: tuple[str, ...]
    concurrency: int | None


@overload
def batched(func: F, /) -> F: ...
@overload
def batched(*, concurrency: int | None = None) -> Callable[[F], F]: ...
def batched(func: F | None = None, /, *, concurrency: int | None = None) -> Any:
    """Make an ``async def`` function of ``example`` (and of session-, package- or
    module-scoped fixtures, other batched fixtures, and ``llmeval_record``) a fixture whose
    values are computed concurrently for the tests that need it, at most ``concurrency``
    examples at once (default: ``llmeval_concurrency``; with ``auto``, no bound of the
    fixture's own: the endpoints' limits pace its requests)."""

    def wrap(func: F) -> F:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@batched needs an async def function; {func.__name__} is not one")
        params = tuple(inspect.signature(func).parameters)
        if "example" not in params:
            raise TypeError(f"@batched function {func.__name__} must take an 'example' argument")
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        spec = Spec(func.__name__, func, params, concurrency)

        def fixture(request: pytest.FixtureRequest, **_: Any) -> Any:
            __tracebackhide__ = True
            return batches(request.config).value(spec, request)

        # pytest reads the arguments from the signature: the function's own, so that the
        # examples are parametrized and the fixtures set up as for a plain fixture.
        fixture.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                for name in ("request", *(p for p in params if p != "request"))
            ]
        )
        fixture.__name__ = func.__name__
        fixture.__doc__ = func.__doc__
        fixture.__module__ = func.__module__
        fixture._llmeval_batched = spec  # type: ignore[attr-defined]
        return pytest.fixture(name=func.__name__)(fixture)  # type: ignore[return-value]

    return wrap if func is None else wrap(func)


@dataclass(frozen=True)
class _Raised:
    error: BaseException


@dataclass(frozen=True, eq=False)
class _Work:
    """Examples of one test to start on the loop: each spec's future, the window's shared
    fixtures, and the record its fixtures write into (made on the main thread)."""

    item: pytest.Item
    futures: list[tuple[Spec, Future[Any]]]
    shared: dict[str, Any]
    record: Record


@dataclass(eq=False)
class _Window:
    """The examples started for the tests that share one set of fixtures (those of the
    test that started it), kept one window ahead of the test being run."""

    first: pytest.Item
    shared: dict[str, Any]
    size: int  # examples started ahead, the test being run included
    ahead: deque[str] = field(default_factory=deque)  # started, not yet reached, in run order
    frontier: int | None = None  # index (in session.items) of the last test looked at


@dataclass
class Batches:
    """This process's batched fixtures: the examples started (by test node id), their
    outcomes, what they recorded, until each test's teardown."""

    config: pytest.Config
    concurrency: int | None  # None: auto
    auto_window: int
    scratch: dict[str, Record] = field(default_factory=dict)  # node id -> calls so far
    # The main thread's: each test's started examples, as futures, and their windows.
    _started: dict[str, dict[Spec, tuple[Future[Any], _Window]]] = field(default_factory=dict)
    # The loop's: the tasks computing them (an example's fixtures await each other's).
    _tasks: dict[str, dict[Spec, asyncio.Task[Any]]] = field(default_factory=dict)
    _limits: dict[Spec, asyncio.Semaphore] = field(default_factory=dict)
    _order: dict[str, int] = field(default_factory=dict)
    _waited: dict[str, float] = field(default_factory=dict)  # node id -> time its setup waited
    _absorbed: dict[str, int] = field(default_factory=dict)  # node id -> steps already moved
    _outbox: list[_Work] = field(default_factory=list)  # sent to the loop at once (one wake-up)
    _loop: _Loop | None = None
    _closed: bool = False
    # By fixture closure (pytest's FuncFixtureInfo, one per test function, shared by its
    # parametrized tests; kept here so that its id stays its own): the batched fixtures
    # its tests use, and the shared fixtures each needs. The window asks for each test.
    _closures: dict[int, tuple[object, list[Spec], dict[Spec, set[str]]]] = field(
        default_factory=dict
    )

    def value(self, spec: Spec, request: pytest.FixtureRequest) -> Any:
        __tracebackhide__ = True
        item = request.node
        assert isinstance(item, pytest.Item)
        if spec not in self._started.get(item.nodeid, {}):
            self._start_window(spec, request)
        request.addfinalizer(lambda: self._forget(item.nodeid))
        window = self._started[item.nodeid][spec][1]
        self._reached(window, item)
        try:
            self._top_up(window, item)
        finally:
            if self._outbox:
                self._running().call(self._begin, self._outbox)
                self._outbox = []
        outcome = self._wait(item)[spec]
        self._absorb(item)
        if isinstance(outcome, _Raised):
            raise outcome.error
        return outcome

    # -- which tests, with which arguments ------------------------------------------------

    def _start_window(self, spec: Spec, request: pytest.FixtureRequest) -> None:
        """A window from this test: the fixtures shared by its batched fixtures are
        resolved here, and this test's examples start."""
        item = request.node
        assert isinstance(item, pytest.Item)
        specs = _specs_of(item)
        if spec not in specs:  # asked for by name (request.getfixturevalue)
            specs.append(spec)
        shared: dict[str, Any] = {}
        for each in specs:
            shared.update(self._shared(each, request))
        window = _Window(item, shared, min(self._window_size(each) for each in specs))
        started = self._started.get(item.nodeid, {})
        self._start(item, [each for each in specs if each not in started], window)

    def _shared(self, spec: Spec, request: pytest.FixtureRequest) -> dict[str, Any]:
        """The fixtures every example of the window shares (not per example, not batched),
        of this spec and of the batched fixtures it depends on, resolved by the first test."""
        shared: dict[str, Any] = {}
        item = request.node
        assert isinstance(item, pytest.Item)
        for name in spec.params:
            if name in PER_EXAMPLE:
                continue
            dependency = _spec_of(item, name)
            if dependency is not None:
                shared.update(self._shared(dependency, request))
                continue
            definition = _definition(item, name)
            if definition is not None and definition.scope == "function":
                raise TypeError(
                    f"batched fixture {spec.name!r} depends on {name!r}, a function-scoped "
                    "fixture: a batch shares its fixtures across examples, so they must be "
                    "session-, package-, module- or class-scoped (or 'example', "
                    "'llmeval_record', or another batched fixture)"
                )
            shared[name] = request.getfixturevalue(name)
        return shared

    def _window_size(self, spec: Spec) -> int:
        concurrency = spec.concurrency or self.concurrency
        return WINDOW_PER_SLOT * concurrency if concurrency else self.auto_window

    def _reached(self, window: _Window, item: pytest.Item) -> None:
        """``item`` runs: it and the tests before it are no longer ahead."""
        ahead = window.ahead
        if ahead and ahead[0] == item.nodeid:  # the usual case: the tests run in order
            ahead.popleft()
        elif item.nodeid in ahead:
            while ahead.popleft() != item.nodeid:
                pass

    def _top_up(self, window: _Window, item: pytest.Item) -> None:
        """Start the examples of the tests after ``item`` (the one being run) that the
        window can compute, until it is one window ahead; nothing once the session stops
        (-x, --maxfail). It refills by a quarter of a window at a time: each start wakes
        the loop's thread, whose wake-ups slow the tests' own thread."""
        session = item.session
        refill = window.size - max(1, window.size // WINDOW_PER_SLOT)
        if len(window.ahead) + 1 > refill or session.shouldfail or session.shouldstop:
            return
        upcoming = self._upcoming(item)
        start = 0
        if window.frontier is not None:
            with contextlib.suppress(ValueError):  # else it ran, or xdist took it back
                start = upcoming.index(window.frontier) + 1
        items = session.items
        for position in range(start, len(upcoming)):
            if len(window.ahead) + 1 >= window.size:
                break
            window.frontier = upcoming[position]
            candidate = items[window.frontier]
            if candidate is not item:
                self._start(candidate, self._coverable(window, candidate), window)

    def _coverable(self, window: _Window, item: pytest.Item) -> list[Spec]:
        """The batched fixtures of ``item`` not started yet whose shared fixtures are the
        window's (the same instances as for the test that started it)."""
        started = self._started.get(item.nodeid, {})
        specs, needs = self._closure(item)
        return [
            spec
            for spec in specs
            if spec not in started
            and all(
                name in window.shared and _same_instance(item, window.first, name)
                for name in needs[spec]
            )
        ]

    def _closure(self, item: pytest.Item) -> tuple[list[Spec], dict[Spec, set[str]]]:
        info = getattr(item, "_fixtureinfo", None)
        found = self._closures.get(id(info))
        if found is None or found[0] is not info:
            specs = _specs_of(item)
            found = (info, specs, {spec: _needs(spec, item) for spec in specs})
            if info is not None:
                self._closures[id(info)] = found
        return found[1], found[2]

    def _upcoming(self, item: pytest.Item) -> Sequence[int]:
        """Indices (in session.items) of ``item`` and the tests this process runs next."""
        items = item.session.items
        if not self._order:
            self._order = {it.nodeid: i for i, it in enumerate(items)}
        index = self._order.get(item.nodeid)
        if index is None:
            return ()
        if hasattr(self.config, "workerinput"):  # xdist: only what this worker was given
            return [index, *_queued_on_worker(self.config)]
        return range(index, len(items))

    # -- computing --------------------------------------------------------------------------

    def _start(self, item: pytest.Item, specs: list[Spec], window: _Window) -> None:
        """Start ``item``'s examples of ``specs`` (on the run's loop, at the outbox's
        sending)."""
        if not specs:
            return
        if self._closed:
            raise RuntimeError(_STOPPED)
        started = self._started.setdefault(item.nodeid, {})
        work: list[tuple[Spec, Future[Any]]] = []
        for spec in specs:
            future: Future[Any] = Future()
            started[spec] = (future, window)
            work.append((spec, future))
        window.ahead.append(item.nodeid)
        self._outbox.append(_Work(item, work, window.shared, self._scratch(item)))

    def _begin(self, outbox: list[_Work]) -> None:
        """In the loop: a task per fixture of each example (or the one its dependent
        started), each settling its future; a future no task can settle gets the error."""
        for work in outbox:
            for spec, future in work.futures:
                try:
                    task = self._task(spec, work)
                except Exception as exc:  # else its test would wait for ever
                    if not future.done():
                        future.set_exception(exc)
                    continue
                task.add_done_callback(functools.partial(_settle, future))

    def _task(self, spec: Spec, work: _Work) -> asyncio.Task[Any]:
        tasks = self._tasks.setdefault(work.item.nodeid, {})
        task = tasks.get(spec)
        if task is None:
            task = tasks[spec] = asyncio.get_running_loop().create_task(self._one(spec, work))
        return task

    async def _get(self, spec: Spec, work: _Work) -> Any:
        __tracebackhide__ = True
        outcome = await self._task(spec, work)
        if isinstance(outcome, _Raised):
            raise outcome.error
        return outcome

    async def _one(self, spec: Spec, work: _Work) -> Any:
        """``spec``'s value for ``item``'s example, or what computing it raised (pytest's
        outcomes, KeyboardInterrupt and SystemExit included), to be raised in that test
        alone."""
        __tracebackhide__ = True
        item, shared, record = work.item, work.shared, work.record
        example = item.stash[EXAMPLE_KEY]
        bind(record)  # this task's calls and verdicts go to the example's record
        try:
            args: dict[str, Any] = {}
            for name in spec.params:
                dependency = _spec_of(item, name)
                if name == "example":
                    args[name] = example
                elif name == "llmeval_record":
                    args[name] = record
                elif name == DRAW:
                    args[name] = record.draw or 1
                elif dependency is not None:
                    args[name] = await self._get(dependency, work)
                else:
                    args[name] = shared[name]
            async with self._limit(spec):
                start = time.perf_counter()
                try:
                    return await spec.func(**args)
                finally:
                    record.elapsed_s = (record.elapsed_s or 0.0) + time.perf_counter() - start
        except (asyncio.CancelledError, GeneratorExit):
            raise  # the loop's, not the example's: the task (or its coroutine) ends
        except BaseException as exc:  # the test raises it, whatever it is
            return _Raised(exc)

    def _scratch(self, item: pytest.Item) -> Record:
        """The record the example's fixtures write into until its test absorbs it; made
        on the main thread when its first example starts, so what it goes on from does
        not depend on timing."""
        record = self.scratch.get(item.nodeid)
        if record is None:
            example = item.stash[EXAMPLE_KEY]
            record = Record(
                example_id=example.id,
                partition=example.partition,
                draw=item.stash.get(DRAW_KEY, None),  # a draw's calls have keys of their own
                limits=example.limits,
            )
            owner = item.stash.get(RECORD_KEY, None)
            if owner is not None:
                # Started by the test being set up: what its earlier fixtures did is in its
                # record already, and this fixture's trajectory (and limits) go on from it.
                # (Started ahead, a test has no record yet: its fixtures' steps come first.)
                record.steps = list(owner.steps)
                self._absorbed[item.nodeid] = len(record.steps)
            self.scratch[item.nodeid] = record
        return record

    def _limit(self, spec: Spec) -> contextlib.AbstractAsyncContextManager[Any]:
        """At most ``concurrency`` examples of ``spec`` at once; with auto, no bound of its
        own (the endpoints' limits pace the requests)."""
        concurrency = spec.concurrency or self.concurrency
        if concurrency is None:
            return contextlib.nullcontext()
        limit = self._limits.get(spec)
        if limit is None:
            limit = self._limits[spec] = asyncio.Semaphore(concurrency)
        return limit

    def _wait(self, item: pytest.Item) -> dict[Spec, Any]:
        """The outcomes of ``item``'s started examples, once all are ready: the test's
        record takes what they recorded only when none writes into it any more."""
        started = self._started[item.nodeid]
        pending = {future for future, _ in started.values() if not future.done()}
        waited = time.perf_counter()
        try:
            while pending:
                pending = wait_for_futures(pending, timeout=1.0).not_done
                if pending and not self._running().alive():
                    raise RuntimeError("batched fixtures: the event loop's thread has died")
        except KeyboardInterrupt:
            self._interrupt()
            raise
        # Its setup waited for other examples too: its record counts only its own (the
        # tasks' time, in the scratch record).
        self._waited[item.nodeid] = (
            self._waited.get(item.nodeid, 0.0) + time.perf_counter() - waited
        )
        return {spec: future.result() for spec, (future, _) in started.items()}

    def _interrupt(self) -> None:
        """Ctrl-C while a test waits: the run's clients send nothing more, every example
        under way is cancelled."""
        run = self.config.stash.get(RUN_KEY, None)
        if run is not None:
            run.pools.interrupt()
        if self._loop is not None:
            self._loop.cancel()

    def _absorb(self, item: pytest.Item) -> None:
        """Move what the batch recorded for this test's example into its record."""
        scratch = self.scratch.pop(item.nodeid, None)
        record = item.stash.get(RECORD_KEY, None)
        if record is None:
            return
        if scratch is not None:
            del scratch.steps[: self._absorbed.pop(item.nodeid, 0)]
            record.absorb(scratch)
        record.elapsed_s = (record.elapsed_s or 0.0) - self._waited.pop(item.nodeid, 0.0)

    def _forget(self, nodeid: str) -> None:
        self._started.pop(nodeid, None)
        self._tasks.pop(nodeid, None)  # its tasks are done: the loop starts none for it now
        self.scratch.pop(nodeid, None)
        self._absorbed.pop(nodeid, None)
        self._waited.pop(nodeid, None)

    # -- the run's event loop -----------------------------------------------------------------

    def _running(self) -> _Loop:
        if self._closed:
            raise RuntimeError(_STOPPED)
        if self._loop is None:
            self._loop = _Loop()
            self.config.add_cleanup(self.close)
        return self._loop

    def close(self) -> None:
        """The run has ended: examples still under way (-x, Ctrl-C) are cancelled, and the
        loop and its thread end (before the run's clients close: no example can build a
        new one after). Once: the plugin's unconfigure, then the config's cleanup."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            self._loop.close(CLOSE_TIMEOUT_S)


_STOPPED = "batched fixtures: the run is stopping: this test's example was not computed"
_CANCELLED = (
    "batched fixtures: this test's example was cancelled before it was computed (the run "
    "stopping, a Ctrl-C, or a CancelledError its own code raised)"
)


def _settle(future: Future[Any], task: asyncio.Task[Any]) -> None:
    """Pass a task's outcome to the future the main thread waits on."""
    if future.done():
        return
    if task.cancelled():
        # An error, not a cancelled future: a waiter of concurrent.futures.wait never
        # hears of a cancel() made without set_running_or_notify_cancel().
        future.set_exception(RuntimeError(_CANCELLED))
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(task.result())


class _Loop:
    """One event loop for the run, in a daemon thread (after a Ctrl-C the process does not
    wait for it). Each batch of work runs in a copy of the context it was started from:
    the run's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # asyncio.to_thread in batched code: daemon threads too, in the caller's context.
        self._executor = DaemonPool(DEFAULT_EXECUTOR_THREADS, "llmeval-batch-thread")
        self.loop.set_default_executor(self._executor)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llmeval-batches", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        while not self._closing and not self.loop.is_closed():
            # A task of the user's own that raised KeyboardInterrupt or SystemExit stops
            # the loop (asyncio re-raises them): that task is over, the others go on.
            with contextlib.suppress(BaseException):
                self.loop.run_forever()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, callback: Callable[..., None], *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args, context=contextvars.copy_context())

    def cancel(self) -> None:
        """Cancel every task under way (from any thread)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_cancel_all)

    def close(self, timeout: float) -> None:
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            ended = asyncio.run_coroutine_threadsafe(_shutdown(timeout), self.loop)
            with contextlib.suppress(Exception):
                ended.result(timeout + 1.0)
            self._closing = True
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if not self._thread.is_alive():  # else abandoned: a daemon, stuck in user code
            self.loop.close()


def _cancel_all() -> None:
    for task in asyncio.all_tasks():
        task.cancel()


async def _shutdown(timeout: float) -> None:
    """Cancel the tasks still under way and give them ``timeout`` to unwind."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    await asyncio.get_running_loop().shutdown_asyncgens()


def batches(config: pytest.Config) -> Batches:
    """This process's batched fixtures (created on first use)."""
    found = config.stash.get(BATCHES_KEY, None)
    if found is None:
        settings = config.stash[SETTINGS_KEY]
        auto_window = min(WINDOW_PER_SLOT * settings.app.max_concurrency, AUTO_WINDOW)
        found = config.stash[BATCHES_KEY] = Batches(config, settings.concurrency, auto_window)
    return found


def _specs_of(item: pytest.Item) -> list[Spec]:
    """The batched fixtures ``item`` uses (its fixture closure's)."""
    found = []
    for name in item.fixturenames:  # type: ignore[attr-defined]
        spec = _spec_of(item, name)
        if spec is not None:
            found.append(spec)
    return found


def _needs(spec: Spec, item: pytest.Item) -> set[str]:
    """The shared fixtures ``spec`` (and the batched fixtures it depends on) takes."""
    names: set[str] = set()
    for name in spec.params:
        if name in PER_EXAMPLE:
            continue
        dependency = _spec_of(item, name)
        names |= {name} if dependency is None else _needs(dependency, item)
    return names


def _definition(item: pytest.Item, name: str) -> Any:
    """The fixture definition ``name`` resolves to for ``item`` (None: not a fixture)."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.get(name) if info is not None else None
    return definitions[-1] if definitions else None


def _spec_of(item: pytest.Item, name: str) -> Spec | None:
    definition = _definition(item, name)
    return getattr(definition.func, "_llmeval_batched", None) if definition else None


def _same_instance(item: pytest.Item, first: pytest.Item, name: str) -> bool:
    """Whether ``item`` gets the same value of fixture ``name`` as ``first``: the same
    definition, and for a narrower scope than the session, the same package, module or
    class."""
    definition = _definition(item, name)
    if definition is None or definition is not _definition(first, name):
        return definition is None and _definition(first, name) is None
    node = _SCOPE_NODES.get(definition.scope)
    return node is None or item.getparent(node) is first.getparent(node)


def _queued_on_worker(config: pytest.Config) -> list[int]:
    """Indices of the tests an xdist worker has been given and not started: the next one
    and its queue. xdist has no public API for it: this reads its WorkerInteractor (the
    shape of pytest-xdist 3.7 and later, pyproject's floor), and says so, once, if that
    shape changed: batches would then hold one test each."""
    interactor = next((p for p in config.pluginmanager.get_plugins() if hasattr(p, "torun")), None)
    if interactor is None:
        return []
    if not hasattr(interactor.torun, "lock"):
        if not config.stash.get(QUEUE_UNREADABLE_KEY, False):
            config.stash[QUEUE_UNREADABLE_KEY] = True
            warnings.warn(
                LLMEvalWarning(
                    "batched fixtures: this pytest-xdist's worker queue cannot be read, so "
                    "each batch holds one test (slow, but correct); use pytest-xdist>=3.7"
                ),
                stacklevel=1,
            )
        return []
    with interactor.torun.lock() as queue:
        queued = [i for i in queue if isinstance(i, int)]
    upcoming = getattr(interactor, "nextitem_index", None)
    return ([upcoming] if isinstance(upcoming, int) else []) + queued
