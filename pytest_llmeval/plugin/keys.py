"""The plugin's stash keys (per config and per item) and the attributes it sets on
reports, in one place so that every module of the plugin names them alike."""

from __future__ import annotations

from contextvars import Token
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..context import RunContext
from ..records import Record
from ..settings import Settings

if TYPE_CHECKING:
    # Named in the keys' string annotations only.
    from ..dataset import Dataset, Example  # noqa: F401
    from .batching import Batches  # noqa: F401
    from .controller import Controller  # noqa: F401

SETTINGS_KEY = pytest.StashKey[Settings]()
CONTROLLER_KEY = pytest.StashKey["Controller"]()
RUN_KEY = pytest.StashKey[RunContext]()  # the run's thresholds, embedder, pools
RUN_TOKEN_KEY = pytest.StashKey[Token[RunContext | None]]()  # resets the current run at its end
DATASETS_KEY = pytest.StashKey[dict[Path, "Dataset"]]()
EXAMPLE_KEY = pytest.StashKey["Example"]()
DRAW_KEY = pytest.StashKey[int | None]()  # the test's draw of its example (1..k), or None
DRAWS_KEY = pytest.StashKey[dict[str, int]]()  # llmeval_repeat = auto: the plan's, per partition
RECORD_KEY = pytest.StashKey[Record]()
PREVIOUS_RECORD_KEY = pytest.StashKey[Record | None]()
REPORT_ATTR = "llmeval_record"  # the record's JSON form, on each eval test's teardown report
SOFT_ATTR = "llmeval_soft"  # set on the call report of a failure in a soft partition
ERROR_ATTR = "llmeval_error"  # the class of an error: a lost model call, a broken test
SELECTION_ATTR = "llmeval_selection"  # a worker's selected eval tests, on its first report
SELECTION_SENT_KEY = pytest.StashKey[bool]()
SHARD_TESTS_KEY = pytest.StashKey[list[str]]()  # --llmeval-shard: every shard's eval tests
SHARD_TESTS_ATTR = "llmeval_shard_tests"  # the same, from a worker, on its first report
TEST_FILES_KEY = pytest.StashKey[tuple[str, ...]]()
BATCHES_KEY = pytest.StashKey["Batches"]()  # this process's batched fixture values
QUEUE_UNREADABLE_KEY = pytest.StashKey[bool]()  # said once: xdist's queue has another shape
