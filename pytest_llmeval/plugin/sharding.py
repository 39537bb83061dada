"""``--llmeval-shard I/N``: the eval tests of one shard of the examples
(``pytest_llmeval.shards``), the other tests in shard 1 only."""

from __future__ import annotations

import pytest

from ..shards import shard_of
from .keys import EXAMPLE_KEY, SETTINGS_KEY, SHARD_TESTS_KEY


@pytest.hookimpl(trylast=True)  # after -k, -m and the tags: a shard splits what they selected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the eval tests whose example falls in shard I. Every eval test of the whole
    selection is kept by name for the report, so that ``llmeval merge`` can name a test
    that no shard ran."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or settings.shard is None:
        return
    index, count = settings.shard
    config.stash[SHARD_TESTS_KEY] = sorted(i.nodeid for i in items if EXAMPLE_KEY in i.stash)
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        example = item.stash.get(EXAMPLE_KEY, None)
        where = 1 if example is None else shard_of(example.dataset_info[0], example.id, count)
        (kept if where == index else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A shard may hold no test (few examples, many shards): its job has nothing to do,
    # which is no failure; the merged run says when no shard held any.
    settings = session.config.stash.get(SETTINGS_KEY, None)
    if settings is not None and settings.shard and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
