"""Batched fixtures: an async function of ``example`` computed for many tests at once.

``@batched`` turns ``async def answer(example, assistant)`` into a fixture named
``answer``. The first test that needs it computes it, concurrently, for a window of the
tests this process is about to run that need it too (after ``-m``, ``-k``, deselection;
under xdist, the tests queued on this worker); the others then get their value at once.
Each example's calls and verdicts land in its own test's record, and an exception raised
for one example is raised in that example's test alone.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine
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
    SETTINGS_KEY,
)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# Arguments filled per example rather than shared across the window.
PER_EXAMPLE = ("example", "llmeval_record", DRAW)
WINDOW_PER_SLOT = 4  # a window is this many times the concurrency: -x never pays for more
AUTO_CONCURRENCY = 64  # examples at once under llmeval_concurrency = auto
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
    examples at once (default: ``llmeval_concurrency``)."""

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


# What a batched function may raise for one example: errors, and pytest's outcomes.
_CAUGHT = (Exception, pytest.skip.Exception, pytest.fail.Exception, pytest.xfail.Exception)


@dataclass
class Batches:
    """The batched fixtures' values in this process, by (spec, test node id), kept until
    the test's teardown."""

    config: pytest.Config
    concurrency: int | None  # None: auto
    outcomes: dict[tuple[Spec, str], Any] = field(default_factory=dict)
    scratch: dict[str, Record] = field(default_factory=dict)  # node id -> calls so far
    _order: dict[str, int] = field(default_factory=dict)
    _running: dict[tuple[Spec, str], asyncio.Task[None]] = field(default_factory=dict)
    _limits: dict[Spec, asyncio.Semaphore] = field(default_factory=dict)
    _waited: dict[str, float] = field(default_factory=dict)  # node id -> window's wall time
    _absorbed: dict[str, int] = field(default_factory=dict)  # node id -> steps already moved

    def value(self, spec: Spec, request: pytest.FixtureRequest) -> Any:
        __tracebackhide__ = True
        item = request.node
        assert isinstance(item, pytest.Item)
        if (spec, item.nodeid) not in self.outcomes:
            shared = self._shared(spec, request)
            window = self._window(spec, item, list(shared))
            start = time.perf_counter()
            _run(self._compute(spec, window, shared))
            # This test's setup computed the whole window: its own time counts only its
            # example's share (added by _one), not the other examples'.
            self._waited[item.nodeid] = time.perf_counter() - start
        request.addfinalizer(lambda: self._forget(item.nodeid))
        self._absorb(item)
        outcome = self.outcomes[spec, item.nodeid]
        if isinstance(outcome, _Raised):
            raise outcome.error
        return outcome

    # -- which tests, with which arguments ------------------------------------------------

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

    def _window(self, spec: Spec, first: pytest.Item, shared: list[str]) -> list[pytest.Item]:
        """The tests this process runs next (from ``first``) that need ``spec`` with the
        same shared fixtures, not yet computed: at most a window's worth."""
        size = WINDOW_PER_SLOT * self._concurrency(spec)
        window = [first]
        for item in self._upcoming(first):
            if len(window) >= size:
                break
            if (
                item is not first
                and (spec, item.nodeid) not in self.outcomes
                and _spec_of(item, spec.name) is spec
                and all(_same_instance(item, first, name) for name in shared)
            ):
                window.append(item)
        return window

    def _concurrency(self, spec: Spec) -> int:
        return spec.concurrency or self.concurrency or AUTO_CONCURRENCY

    def _upcoming(self, item: pytest.Item) -> list[pytest.Item]:
        items = item.session.items
        if hasattr(self.config, "workerinput"):  # xdist: only what this worker was given
            return [items[i] for i in _queued_on_worker(self.config)]
        if not self._order:
            self._order = {it.nodeid: i for i, it in enumerate(items)}
        start = self._order.get(item.nodeid)
        return [] if start is None else items[start:]

    # -- computing --------------------------------------------------------------------------

    async def _compute(self, spec: Spec, window: list[pytest.Item], shared: dict[str, Any]) -> None:
        self._running.clear()
        self._limits.clear()  # semaphores belong to this event loop
        await asyncio.gather(*(self._settle(spec, item, shared) for item in window))

    async def _settle(self, spec: Spec, item: pytest.Item, shared: dict[str, Any]) -> None:
        """Compute ``spec`` for ``item`` unless done or under way; its outcome (a value or
        what it raised) is kept, never raised here."""
        key = (spec, item.nodeid)
        if key not in self.outcomes:
            if key not in self._running:
                self._running[key] = asyncio.ensure_future(self._one(spec, item, shared))
            await self._running[key]

    async def _get(self, spec: Spec, item: pytest.Item, shared: dict[str, Any]) -> Any:
        __tracebackhide__ = True
        await self._settle(spec, item, shared)
        outcome = self.outcomes[spec, item.nodeid]
        if isinstance(outcome, _Raised):
            raise outcome.error
        return outcome

    async def _one(self, spec: Spec, item: pytest.Item, shared: dict[str, Any]) -> None:
        __tracebackhide__ = True
        example = item.stash[EXAMPLE_KEY]
        record = self.scratch.get(item.nodeid)
        if record is None:
            record = Record(
                example_id=example.id,
                partition=example.partition,
                draw=item.stash.get(DRAW_KEY, None),  # a draw's calls have keys of their own
                limits=example.limits,
            )
            owner = item.stash.get(RECORD_KEY, None)
            if owner is not None:
                # The test being set up: what its earlier batched fixtures did is in its
                # record already, and this fixture's trajectory (and limits) go on from it.
                record.steps = list(owner.steps)
                self._absorbed[item.nodeid] = len(owner.steps)
            self.scratch[item.nodeid] = record
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
                    args[name] = await self._get(dependency, item, shared)
                else:
                    args[name] = shared[name]
            limit = self._limits.setdefault(spec, asyncio.Semaphore(self._concurrency(spec)))
            async with limit:
                start = time.perf_counter()
                try:
                    self.outcomes[spec, item.nodeid] = await spec.func(**args)
                finally:
                    record.elapsed_s = (record.elapsed_s or 0.0) + time.perf_counter() - start
        except _CAUGHT as exc:
            self.outcomes[spec, item.nodeid] = _Raised(exc)

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
        for key in [k for k in self.outcomes if k[1] == nodeid]:
            del self.outcomes[key]
        self.scratch.pop(nodeid, None)
        self._absorbed.pop(nodeid, None)


def batches(config: pytest.Config) -> Batches:
    """This process's batched fixture values (created on first use)."""
    found = config.stash.get(BATCHES_KEY, None)
    if found is None:
        found = config.stash[BATCHES_KEY] = Batches(config, config.stash[SETTINGS_KEY].concurrency)
    return found


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


def _run(work: Coroutine[Any, Any, None]) -> None:
    """Run a batch to completion: in this thread, or, when an event loop already runs
    here (an async fixture asked for a batched one), in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # outside the except block: a batch's errors carry no context
        asyncio.run(work)
        return
    # A daemon thread (after a Ctrl-C the process does not wait for the batch to end),
    # which runs the batch in this context: the run's and the test's.
    pool = DaemonPool(1, "llmeval-batch")
    try:
        pool.submit(asyncio.run, work).result()
    finally:
        pool.shutdown(wait=False)
