"""Merging the reports of a run's shards (``--llmeval-shard I/N``) into the records of one
run (``llmeval merge``): only shards of one run merge, and every test of the run is in
exactly one of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..records import RecordJSON
from .report import ReportJSON

# What must be the same in every shard: (where in the run metadata, as said).
_SAME_RUN = (("git_commit", "git commit"), ("plugin_version", "plugin version"))
# The options that decide verdicts: the same in every shard of a run. The others (where a
# job writes, its cache, endpoints, concurrency, retries, its shard) are each job's own.
VERDICT_OPTIONS = (
    "tags",
    "hard_partitions",
    "min_pass_rate",
    "thresholds",
    "time_budget",
    "time_budget_strict",
    "bar_locked",
    "bar_accept",
    "judge_samples",
    "judge_models",
    "judge_max_tokens",
    "max_position_bias",
    "repeat",
    "repeat_max",
    "reducer",
    "flaky",
    "embedding_model",
    "gate",
    "delta",
    "alpha",
    "strict",
    "regression_fails",
    "model",
    "temperature",
    "judge_model",
    "judge_temperature",
)


class MergeError(ValueError):
    """Shards that do not make one run; the message names what differs or is missing."""


def merge_shards(
    reports: Sequence[tuple[str, ReportJSON]],
) -> tuple[list[RecordJSON], dict[str, Any]]:
    """The records of the whole run and its metadata, from (name, report) of each shard.
    MergeError unless the shards come from one commit and plugin version, read each
    dataset alike, set the options that decide verdicts alike, are shards 1 to N of one
    N exactly once, selected the same tests and hold each of them exactly once."""
    if not reports:
        raise MergeError("no shard reports given")
    shards = [(name, _shard(name, report)) for name, report in reports]
    counts = sorted({shard["count"] for _, shard in shards})
    if len(counts) > 1:
        raise MergeError(f"the shards are of different counts: {_named(shards, 'count')}")
    count = counts[0]
    by_index: dict[int, list[str]] = {}
    for name, shard in shards:
        by_index.setdefault(shard["index"], []).append(name)
    twice = {i: names for i, names in by_index.items() if len(names) > 1}
    if twice:
        i, names = min(twice.items())
        raise MergeError(f"shard {i}/{count} is given twice: {', '.join(names)}")
    absent = [i for i in range(1, count + 1) if i not in by_index]
    if absent:
        listed = ", ".join(f"{i}/{count}" for i in absent)
        raise MergeError(f"shard{'s' if len(absent) > 1 else ''} {listed} missing")
    _same([(n, r["run"]) for n, r in reports], _SAME_RUN)
    _same_datasets(reports)
    # One run is judged by one set of settings: the options that decide verdicts.
    options = [(name, report["run"].get("options") or {}) for name, report in reports]
    _same(options, [(key, f"llmeval_{key}") for key in VERDICT_OPTIONS], repr)
    tests = _tests(shards)
    records: list[RecordJSON] = []
    seen: dict[str, str] = {}  # node id -> the shard's report it is in
    for name, report in reports:
        for record in report["records"]:
            nodeid = str(record.get("nodeid") or "")
            if nodeid in seen:
                raise MergeError(f"{nodeid} is in two shards: {seen[nodeid]} and {name}")
            seen[nodeid] = name
            records.append(record)
    if tests is not None:
        missing = [t for t in tests if t not in seen]
        extra = sorted(set(seen) - set(tests))
        if missing:
            raise MergeError(f"{len(missing)} test(s) of the run in no shard: {_few(missing)}")
        if extra:
            raise MergeError(f"{len(extra)} test(s) not of the run: {_few(extra)}")
    return records, _run(reports, count)


def _shard(name: str, report: ReportJSON) -> dict[str, Any]:
    shard = report["run"].get("shard")
    if not isinstance(shard, dict) or not {"index", "count"} <= shard.keys():
        raise MergeError(f"{name} is not a shard's report (run with --llmeval-shard I/N)")
    return shard


def _named(shards: Sequence[tuple[str, dict[str, Any]]], key: str) -> str:
    return ", ".join(f"{name} {shard[key]}" for name, shard in shards)


def _same(
    items: Sequence[tuple[str, dict[str, Any]]],
    fields: Sequence[tuple[str, str]],
    show: Callable[[Any], str] = str,
) -> None:
    """MergeError naming the first field whose value differs between the items."""
    for key, said in fields:
        values = {repr(meta.get(key)) for _, meta in items}
        if len(values) > 1:
            each = "; ".join(f"{name}: {show(meta.get(key))}" for name, meta in items)
            raise MergeError(f"the shards differ in {said} ({each})")


def _same_datasets(reports: Sequence[tuple[str, ReportJSON]]) -> None:
    """MergeError naming a dataset loaded with different contents by two shards (a
    shard that ran none of a dataset's examples does not name it)."""
    hashes: dict[str, dict[str, list[str]]] = {}
    for name, report in reports:
        for dataset, digest in (report["run"].get("datasets") or {}).items():
            hashes.setdefault(dataset, {}).setdefault(str(digest), []).append(name)
    for dataset, seen in sorted(hashes.items()):
        if len(seen) > 1:
            each = "; ".join(f"{', '.join(names)}: {digest}" for digest, names in seen.items())
            raise MergeError(f"the shards differ in dataset {dataset!r} ({each})")


def _tests(shards: Sequence[tuple[str, dict[str, Any]]]) -> list[str] | None:
    """The run's eval tests, as every shard that knows them says (None: none knows)."""
    known = [(name, shard["tests"]) for name, shard in shards if shard.get("tests") is not None]
    if not known:
        return None
    first_name, first = known[0]
    for name, tests in known[1:]:
        if tests != first:
            only = sorted(set(tests) ^ set(first))
            raise MergeError(
                f"the shards selected different tests ({first_name} and {name} differ in "
                f"{_few(only)}): run every shard with the same -k, -m and --llmeval-tags"
            )
    return list(first)


def _few(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _run(reports: Sequence[tuple[str, ReportJSON]], count: int) -> dict[str, Any]:
    """The whole run's metadata: the first shard's, spanning from the first start to the
    last finish, with each shard's file, times and exit status."""
    runs = sorted((r["run"]["shard"]["index"], n, r["run"]) for n, r in reports)
    merged = {k: v for k, v in runs[0][2].items() if k not in ("shard", "args", "exit_status")}
    starts = [str(run["started_at"]) for _, _, run in runs if run.get("started_at")]
    ends = [str(run["finished_at"]) for _, _, run in runs if run.get("finished_at")]
    merged["started_at"] = min(starts) if starts else None
    merged["finished_at"] = max(ends) if ends else None
    durations = [run["duration_s"] for _, _, run in runs if run.get("duration_s") is not None]
    merged["duration_s"] = max(durations) if durations else None  # the slowest shard's
    merged["shards"] = [
        {
            "index": index,
            "count": count,
            "report": name,
            "started_at": run.get("started_at"),
            "duration_s": run.get("duration_s"),
            "exit_status": run.get("exit_status"),
        }
        for index, name, run in runs
    ]
    return merged
