"""The context of one run: its threshold overrides, its default embedder, its pools.

The plugin makes a :class:`RunContext` in ``pytest_configure``, keeps it in
``config.stash``, makes it current with :func:`activate` and, in ``pytest_unconfigure``,
restores the one before (:func:`deactivate`) and closes it. The core's helpers
(``thresholds.resolve``, ``default_embedder``, ``off_loop``, a new ``LLMClient``) ask
:func:`current_run` for it, so they need no pytest; outside a run a default context
applies (the built-in thresholds, the local embedder, pools of their own).

Current is a ContextVar rather than a module global: an in-process run (pytester) inside
another binds its own and hands the outer one back by resetting its token, with nothing
saved or restored by hand, and asyncio tasks and the threads of our pools (which run
work in a copy of the submitter's context) see the run that started them. A thread a
test starts itself sees the default context unless it runs in a copy of the test's
context (``contextvars.copy_context().run``, or ``asyncio.to_thread``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .client.pools import Pools

if TYPE_CHECKING:
    from .embeddings import Embedder


@dataclass(eq=False)
class RunContext:
    """What the core's helpers need to know of the run they are called in.

    ``thresholds`` maps ``metric`` or ``metric.partition`` to a threshold (ini's
    ``llmeval_thresholds``); ``embedder_factory`` builds the run's default embedder on
    first use (None: the local model)."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    embedder_factory: Callable[[], Embedder] | None = None
    pools: Pools = field(default_factory=Pools)
    _embedder: Embedder | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def embedder(self) -> Embedder | None:
        """The run's default embedder, built on first use and then kept (None: none
        configured)."""
        if self.embedder_factory is None:
            return None
        with self._lock:
            if self._embedder is None:
                self._embedder = self.embedder_factory()
            return self._embedder

    def close(self) -> None:
        """The run has ended: its pools' threads exit and its clients are closed."""
        self.pools.close()


# Outside a run (a script, a notebook): the built-in thresholds, the local embedder, and
# pools of their own for the clients made there.
_OUTSIDE = RunContext()
_current: ContextVar[RunContext | None] = ContextVar("llmeval_run", default=None)


def current_run() -> RunContext:
    """The run this code is called in, or the default context outside one."""
    return _current.get() or _OUTSIDE


def activate(run: RunContext) -> Token[RunContext | None]:
    """Make ``run`` current in this context; :func:`deactivate` with the token returned
    makes the one before current again."""
    return _current.set(run)


def deactivate(token: Token[RunContext | None]) -> None:
    _current.reset(token)
