"""The bar a run is judged by, against its baseline's: every way the candidate's is lower.
A hard partition's example that a test of the baseline ran and the same test did not
(deleted, moved to a soft partition, renamed or not selected; with -k, -m or tags, a hard
partition the run ran none of is not compared), a partition made soft, a minimum pass
rate or an applied threshold lowered, a hard partition's reducer or flaky mode made
laxer, the judge's allowed position bias raised, a regression gate dropped, delta raised,
alpha lowered, strict or regression_fails turned off. Each lowering has a key; under
``llmeval_bar_locked`` one whose key is not in ``llmeval_bar_accept`` fails the run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from ..partitions import PARTITIONS
from ..records import Record, RecordJSON
from ..settings import Settings
from ..shards import shard_of
from ..thresholds import DEFAULTS, applied


class LoweringJSON(TypedDict):
    key: str
    message: str
    accepted: bool


class BarJSON(TypedDict):
    """The report's ``bar``: the lowerings against the baseline, and whether they fail
    the run (locked, one of them not accepted)."""

    locked: bool
    blocks: bool
    lowered: list[LoweringJSON]


@dataclass(frozen=True)
class Lowering:
    key: str  # what llmeval_bar_accept names: "example:golden-01", "min_pass_rate:distribution"
    message: str
    accepted: bool = False

    def to_json(self) -> LoweringJSON:
        return {"key": self.key, "message": self.message, "accepted": self.accepted}


def lowered(
    baseline: Sequence[RecordJSON],
    baseline_settings: Settings | None,
    records: Sequence[Record],
    settings: Settings,
    *,
    filtered: bool = False,
) -> list[Lowering]:
    """How this run's bar is lower than the baseline's (``baseline_settings`` None: a
    baseline that recorded no options, whose examples alone are compared; ``filtered``:
    the run selected with -k, -m or tags, so a hard partition it ran none of is not
    compared)."""
    if settings.shard is not None:  # a shard's bar is its share of the baseline's
        index, count = settings.shard
        baseline = [
            r for r in baseline if shard_of(r.get("dataset"), r["example_id"], count) == index
        ]
    found = _examples(baseline, baseline_settings or settings, records, filtered=filtered)
    if baseline_settings is not None:
        found += _options(baseline_settings, settings)
    return [Lowering(key, message, accepted=key in settings.bar_accept) for key, message in found]


def blocks(lowerings: Sequence[Lowering], settings: Settings) -> bool:
    return settings.bar_locked and any(not low.accepted for low in lowerings)


def bar_json(lowerings: Sequence[Lowering], settings: Settings) -> BarJSON:
    return {
        "locked": settings.bar_locked,
        "blocks": blocks(lowerings, settings),
        "lowered": [low.to_json() for low in lowerings],
    }


def bar_lines(lowerings: Sequence[Lowering], settings: Settings) -> list[str]:
    """The summary's section: one line per lowering, then what it does to the run."""
    if not lowerings:
        return []
    lines = [f"bar lowered against the baseline ({len(lowerings)}):"]
    for low in lowerings:
        lines.append(f"  {low.key}: {low.message}{' (accepted)' if low.accepted else ''}")
    if blocks(lowerings, settings):
        lines.append("bar: BLOCK (llmeval_bar_locked; accept a lowering in llmeval_bar_accept)")
    elif settings.bar_locked:
        lines.append("bar: every lowering accepted (llmeval_bar_accept)")
    else:
        lines.append("bar: not locked (llmeval_bar_locked = yes would block)")
    return lines


def _examples(
    baseline: Sequence[RecordJSON], hard: Settings, records: Sequence[Record], *, filtered: bool
) -> list[tuple[str, str]]:
    """Each hard-partition example a test of the baseline ran and the same test did not
    run now (one lowering per example)."""
    ran = {(_test(r.nodeid), r.example_id) for r in records}
    now = {r.example_id: r.partition for r in records}
    partitions = {r.partition for r in records}
    found: dict[str, str] = {}
    for entry in baseline:
        partition, example = str(entry["partition"]), str(entry["example_id"])
        if not hard.is_hard(partition) or example in found:
            continue
        if filtered and partition not in partitions:
            continue
        test = _test(str(entry.get("nodeid") or ""))
        if example in now and now[example] != partition:
            found[example] = f"moved from {partition} to {now[example]}"
        elif example not in now:
            found[example] = (
                f"{partition} example not in this run (deleted, renamed or not selected)"
            )
        elif (test, example) not in ran:
            found[example] = f"{partition} example no longer run by {test}"
    return [(f"example:{example}", message) for example, message in found.items()]


def _test(nodeid: str) -> str:
    """A test's function name, without its file, class or parameters."""
    return nodeid.rsplit("::", 1)[-1].split("[", 1)[0]


# Reducers and flaky modes, strictest first: a lowering is a step down.
_REDUCERS = {"all": 3, "majority": 2, "mean": 2, "any": 1}
_FLAKY = {"fail": 3, "warn": 2, "ignore": 1}


def _options(base: Settings, now: Settings) -> list[tuple[str, str]]:
    found = []
    for partition in PARTITIONS:
        if base.is_hard(partition) and not now.is_hard(partition):
            found.append((f"hard:{partition}", f"{partition} is no longer a hard partition"))
        elif not now.is_hard(partition) and now.minimum(partition) < base.minimum(partition):
            found.append(
                (
                    f"min_pass_rate:{partition}",
                    f"minimum pass rate {_rate(base.minimum(partition))} -> "
                    f"{_rate(now.minimum(partition))}",
                )
            )
    found += _thresholds(base, now)
    for partition in (p for p in PARTITIONS if base.is_hard(p) and now.is_hard(p)):
        for kind, ranks, mode in (
            ("reducer", _REDUCERS, Settings.reducer_of),
            ("flaky", _FLAKY, Settings.flaky_mode),
        ):
            before, after = mode(base, partition), mode(now, partition)
            if ranks.get(after, 0) < ranks.get(before, 0):
                found.append((f"{kind}:{partition}", f"{kind} {before} -> {after}"))
    if now.max_position_bias > base.max_position_bias:
        found.append(
            (
                "max_position_bias",
                f"judge position bias allowed {base.max_position_bias:g} -> "
                f"{now.max_position_bias:g}",
            )
        )
    for metric, part in base.regression.gate:
        gates = now.regression.gate
        if (metric, None) not in gates and (metric, part) not in gates:
            gate = f"{metric}.{part}" if part else metric
            found.append((f"gate:{gate}", "regression gate dropped"))
    for metric, delta in base.regression.delta.items():
        if now.regression.delta.get(metric, delta) > delta:
            found.append(
                (f"delta:{metric}", f"delta raised {delta:g} -> {now.regression.delta[metric]:g}")
            )
    if now.regression.alpha < base.regression.alpha:
        found.append(
            ("alpha", f"alpha lowered {base.regression.alpha:g} -> {now.regression.alpha:g}")
        )
    if base.regression.strict and not now.regression.strict:
        found.append(("strict", "strict regression turned off"))
    if base.regression.fails and not now.regression.fails:
        found.append(("regression_fails", "a blocking regression no longer fails the session"))
    return found


def _thresholds(base: Settings, now: Settings) -> list[tuple[str, str]]:
    """Per metric, the partitions whose applied threshold (llmeval_thresholds, else the
    default) is lower now."""
    metrics = sorted(set(DEFAULTS) | {k.split(".")[0] for k in (*base.thresholds, *now.thresholds)})
    found = []
    for metric in metrics:
        steps = []
        for partition in PARTITIONS:
            before = applied(base.thresholds, metric, partition)
            after = applied(now.thresholds, metric, partition)
            if before is not None and (after is None or after < before):
                shown = "none" if after is None else f"{after:g}"
                steps.append(f"{partition} {before:g} -> {shown}")
        if steps:
            found.append((f"threshold:{metric}", f"threshold lowered: {', '.join(steps)}"))
    return found


def _rate(value: float) -> str:
    return f"{value:.0%}"
