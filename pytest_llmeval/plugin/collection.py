"""Collection: one test per dataset example (the ``llmeval`` marker and
``Dataset.params()``), tags as keywords and ``--llmeval-tags``, and what is known of each
selected eval test before it runs."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import DatasetError, EmptySelectionWarning
from ..partitions import PARTITIONS
from ..records import draw_id
from .keys import DATASETS_KEY, DRAW_KEY, DRAWS_KEY, EXAMPLE_KEY, SETTINGS_KEY

if TYPE_CHECKING:
    from ..dataset import Dataset, Example


DRAW = "llmeval_draw"  # the parameter (and fixture) of a repeated test's draw number


def _marks() -> dict[str, list[pytest.MarkDecorator]]:
    return {p: [getattr(pytest.mark, p)] for p in PARTITIONS}


def params(examples: Sequence[Example]) -> list[Any]:
    """``pytest.param`` per example, id = example id, marked with its partition."""
    marks = _marks()
    return [pytest.param(ex, id=ex.id, marks=marks[ex.partition]) for ex in examples]


def drawn_params(examples: Sequence[Example], draws: Callable[[Example], int]) -> list[Any]:
    """``(example, draw)`` params: one per draw of each example (``golden-01-r2``); an
    example drawn once keeps its plain id."""
    marks = _marks()
    out = []
    for ex in examples:
        k = draws(ex)
        for draw in range(1, k + 1):
            shown = draw_id(ex.id, draw if k > 1 else None)
            out.append(pytest.param(ex, draw, id=shown, marks=marks[ex.partition]))
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("llmeval")
    if marker is None:
        return
    if "example" not in metafunc.fixturenames:
        pytest.fail(
            f"{metafunc.function.__name__} is marked llmeval but takes no 'example' argument",
            pytrace=False,
        )
    try:
        dataset = _dataset_for(metafunc, marker)
    except DatasetError as exc:
        problem: DatasetError | None = exc
    else:
        problem = None
    if problem is not None:  # outside the except block: one message, not two
        pytest.fail(f"llmeval dataset error: {problem}", pytrace=False)
    draws = _draw_counts(metafunc.config, marker, metafunc.function.__name__)
    repeated = any(draws(ex) > 1 for ex in dataset.examples)
    params = drawn_params(dataset.examples, draws) if repeated else dataset.params()
    if inspect.iscoroutinefunction(metafunc.function) and _needs_asyncio_mark(metafunc):
        params = [
            pytest.param(*p.values, id=p.id, marks=[*p.marks, pytest.mark.asyncio]) for p in params
        ]
    if repeated:
        # pytest-repeat's way: the draw is a parameter of its own, which a test may ask
        # for by name; each draw is a test, with its own id, record and cache keys.
        if DRAW not in metafunc.fixturenames:
            metafunc.fixturenames.append(DRAW)
        metafunc.parametrize(("example", DRAW), params)
    else:
        metafunc.parametrize("example", params)


def _draw_counts(config: pytest.Config, marker: pytest.Mark, test: str) -> Callable[[Example], int]:
    """How many draws each example of the test gets: the marker's ``repeat=``, else its
    partition's llmeval_repeat (or the plan's, with llmeval_repeat = auto)."""
    fixed = marker.kwargs.get("repeat")
    if fixed is not None:
        if isinstance(fixed, bool) or not isinstance(fixed, int) or fixed < 1:
            pytest.fail(
                f"{test}: llmeval marker's repeat={fixed!r} is not a whole number >= 1",
                pytrace=False,
            )
        return lambda example: int(fixed)
    planned = config.stash.get(DRAWS_KEY, None)
    settings = config.stash[SETTINGS_KEY]
    if planned is not None:
        return lambda example: planned.get(example.partition, 1)
    return lambda example: settings.draws(example.partition)


def _needs_asyncio_mark(metafunc: pytest.Metafunc) -> bool:
    # pytest-asyncio only runs coroutine tests carrying its marker (in strict mode); an
    # eval test is async on purpose, so mark it unless the user already did.
    return (
        metafunc.config.pluginmanager.hasplugin("asyncio")
        and metafunc.definition.get_closest_marker("asyncio") is None
    )


def _dataset_for(metafunc: pytest.Metafunc, marker: pytest.Mark) -> Dataset:
    from ..dataset import load_dataset

    kwargs = dict(marker.kwargs)
    if marker.args:
        kwargs.setdefault("dataset", marker.args[0])
    unknown = set(kwargs) - {"dataset", "partition", "tags", "repeat"}
    if "dataset" not in kwargs or unknown:
        pytest.fail(
            "usage: @pytest.mark.llmeval(dataset='path', partition=None, tags=None, repeat=None)"
            + (f"; unknown argument(s) {sorted(unknown)}" if unknown else ""),
            pytrace=False,
        )
    path = _resolve(Path(str(kwargs["dataset"])), metafunc)
    cache = metafunc.config.stash[DATASETS_KEY]
    if path not in cache:
        cache[path] = load_dataset(path)
    dataset = cache[path]
    partitions, tags = _as_list(kwargs.get("partition")), _as_list(kwargs.get("tags"))
    for partition in partitions or ():
        if partition not in PARTITIONS:
            pytest.fail(
                f"{metafunc.function.__name__}: llmeval marker asks for unknown partition "
                f"{partition!r}; valid: {', '.join(PARTITIONS)}",
                pytrace=False,
            )
    if partitions is not None or tags is not None:
        dataset = dataset.filter(partitions=partitions, tags=tags)
        if not len(dataset):
            metafunc.definition.warn(
                EmptySelectionWarning(
                    f"{metafunc.function.__name__}: no example of {path} matches "
                    f"partition={partitions} tags={tags}; the test will be skipped"
                )
            )
    return dataset


def _resolve(path: Path, metafunc: pytest.Metafunc) -> Path:
    """Relative paths: the test file's folder first, then the llmeval_datasets_dir."""
    if path.is_absolute():
        return path
    candidates = [metafunc.definition.path.parent / path]
    datasets_dir = metafunc.config.stash[SETTINGS_KEY].datasets_dir
    if datasets_dir is not None:
        candidates.append(datasets_dir / path)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise DatasetError(str(path), "not found; looked in " + ", ".join(map(str, candidates)))


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect, so tags are keywords
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "pytest_llmeval.dataset" not in sys.modules:
        return  # no example can exist without the dataset module
    from ..dataset import Example

    wanted = set(config.stash[SETTINGS_KEY].tags)
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        example = (
            next((v for v in callspec.params.values() if isinstance(v, Example)), None)
            if callspec is not None
            else None
        )
        if example is not None and callspec is not None:
            item.stash[EXAMPLE_KEY] = example
            item.stash[DRAW_KEY] = _draw_of(item, example, callspec.params.get(DRAW))
            item.extra_keyword_matches.update(example.tags)
            if wanted and wanted.isdisjoint(example.tags):
                dropped.append(item)
                continue
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _draw_of(item: pytest.Item, example: Example, draw: int | None) -> int | None:
    """The item's draw, or None when its example is drawn once."""
    if draw is None:
        return None
    marker = item.get_closest_marker("llmeval")
    if marker is None:
        return None
    return draw if _draw_counts(item.config, marker, item.name)(example) > 1 else None


# What is known of an eval test before it runs, in the order of Record's first fields
# (example id, partition, node id, dataset name and hash, tags, cluster, draw): its record's
# start, and what the controller records for a test that never reports back (a crashed
# worker, an interrupted run). A tuple, as it travels from each xdist worker.
Selected = tuple[str, str, str, str | None, str | None, list[str], str | None, int | None]


def known_before_run(nodeid: str, example: Example, draw: int | None) -> Selected:
    name, digest = example.dataset_info
    return (
        example.id,
        example.partition,
        nodeid,
        name,
        digest,
        list(example.tags),
        example.cluster,
        draw,
    )


def selection(items: list[pytest.Item]) -> list[Selected]:
    return [
        known_before_run(item.nodeid, example, item.stash.get(DRAW_KEY, None))
        for item in items
        if (example := item.stash.get(EXAMPLE_KEY, None)) is not None
    ]
