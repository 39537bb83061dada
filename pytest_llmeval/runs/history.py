"""Run history (``llmeval_history_dir``, ``llmeval history``): each run's JSON report kept,
gzip-compressed, in one folder, and read back in the order the runs started.

A run's file is named from its start time and a random suffix
(``run-20260102T030405Z-1a2b3c4d.json.gz``), and linked into place only if no file has
that name, so parallel CI jobs writing into one folder never overwrite each other. The
order of runs is always their ``run.started_at``, never the order of files or arguments.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypedDict

from ..files import dumps, nonfinite_as_null
from ..partitions import PARTITIONS
from ..records import is_rubric
from ..settings import GATED_METRICS
from .report import REPORT_FORMAT, ReportJSON
from .summary import percentile

SUFFIXES = (".json.gz", ".json")
INTERRUPTED = 2  # pytest.ExitCode.INTERRUPTED (this layer does not import pytest)
SAVE_BASELINE = "--llmeval-save-baseline"
HTML_FLAG = "--llmeval-html"
# The metrics drawn per partition: the gated ones (pass rate has its own chart).
METRICS = tuple(m for m in GATED_METRICS if m != "pass_rate")


def add_run(document: ReportJSON, directory: Path) -> Path:
    """Add the run's report to the history folder ``directory`` (created if needed),
    compressed, atomically, never over another run's file; returns its path. Runs that
    failed, stopped early or were interrupted are kept too (their ``complete`` and
    ``run.exit_status`` say so)."""
    directory.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same report compresses to the same bytes.
    data = gzip.compress(dumps(nonfinite_as_null(document)).encode("utf-8"), mtime=0)
    stamp = _stamp(document.get("run", {}).get("started_at"))
    tmp = directory / f".{stamp}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        tmp.write_bytes(data)
        while True:
            path = directory / f"run-{stamp}-{secrets.token_hex(4)}.json.gz"
            try:
                os.link(tmp, path)  # fails if the name is taken: never a silent overwrite
            except FileExistsError:
                continue
            except OSError:  # a file system without hard links: the suffix keeps it apart
                if path.exists():
                    continue
                os.replace(tmp, path)
            return path
    finally:
        tmp.unlink(missing_ok=True)


def _stamp(started_at: Any) -> str:
    when = _datetime(started_at) or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _datetime(value: Any) -> datetime | None:
    """An ISO timestamp as an aware datetime (a naive one is read as UTC)."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- reading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryRun:
    """What the history shows of one run's report."""

    path: Path
    name: str  # the file name without .json or .json.gz
    started_at: datetime
    finished_at: datetime | None
    passed: bool | None
    complete: bool
    exit_status: int | None
    baseline: bool  # see ``is_baseline``
    pass_rates: dict[str, float | None]  # partition -> pass rate
    metric_means: dict[str, dict[str, float | None]]  # gated metric -> partition -> mean
    cost_usd: float | None  # the records' cost; None when none has a price
    latency_p95_s: float | None  # over every record's latency
    judge_mean: float | None  # of all rubric verdicts' means
    page: Path | None  # the run's HTML page, when it exists (``run_page``)

    @property
    def incomplete(self) -> bool:
        """Stopped early: interrupted, or some selected test never ran."""
        return not self.complete or self.exit_status == INTERRUPTED

    @property
    def state(self) -> str:
        if self.exit_status == INTERRUPTED:
            return "incomplete (interrupted)"
        if not self.complete:
            return "incomplete"
        return {True: "passed", False: "failed", None: "unknown"}[self.passed]


def report_name(path: Path) -> str:
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def read_document(path: Path) -> dict[str, Any]:
    """A report, gzip-compressed (``.gz``) or not. ValueError names the file and what is
    wrong with it; FileNotFoundError when it does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such report") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path} is not gzip-compressed: {exc}") from None
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except ValueError as exc:  # UnicodeDecodeError too
        raise ValueError(f"{path} is not standard JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path} is not a pytest-llmeval report (no format {REPORT_FORMAT!r})")
    for key, kind in (("run", dict), ("partitions", dict), ("records", list)):
        if not isinstance(document.get(key), kind):
            raise ValueError(f"{path}: {key!r} is missing or not a JSON {kind.__name__}")
    if not all(isinstance(v, dict) for v in document["partitions"].values()):
        raise ValueError(f"{path}: 'partitions' must map each partition to its aggregates")
    return document


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number in standard JSON")


def read_run(path: Path, *, baselines: frozenset[str] = frozenset()) -> HistoryRun:
    """One run of the history (see ``read_document`` for its errors). ``baselines``: the
    start times of reports that other runs were compared with."""
    document = read_document(path)
    run = document["run"]
    started = _datetime(run.get("started_at"))
    if started is None:
        raise ValueError(f"{path}: no start time (run.started_at) to order the run by")
    partitions: dict[str, dict[str, Any]] = document["partitions"]
    records = [r for r in document["records"] if isinstance(r, dict)]
    names = [p for p in PARTITIONS if p in partitions] + sorted(set(partitions) - set(PARTITIONS))
    means: dict[str, dict[str, float | None]] = {}
    for metric in METRICS:
        present = {
            p: _number(partitions[p].get("metric_means", {}).get(metric))
            for p in names
            if isinstance(partitions[p].get("metric_means"), dict)
            and metric in partitions[p]["metric_means"]
        }
        if present:
            means[metric] = present
    costs = [c for r in records if (c := _number(r.get("cost_usd"))) is not None]
    latencies = [s for r in records if (s := _number(r.get("latency_s"))) is not None]
    rubric = [
        mean
        for record in records
        for verdict in record.get("judge") or []
        if isinstance(verdict, dict)
        and is_rubric(verdict)  # type: ignore[arg-type]
        and (mean := _number(verdict.get("mean"))) is not None
    ]
    passed, complete, status = (
        document.get("passed"),
        document.get("complete"),
        run.get("exit_status"),
    )
    return HistoryRun(
        path=path,
        name=report_name(path),
        started_at=started,
        finished_at=_datetime(run.get("finished_at")),
        passed=passed if isinstance(passed, bool) else None,
        complete=complete if isinstance(complete, bool) else True,  # older reports: no key
        exit_status=status if isinstance(status, int) and not isinstance(status, bool) else None,
        baseline=is_baseline(run) or run.get("started_at") in baselines,
        pass_rates={p: _number(partitions[p].get("pass_rate")) for p in names},
        metric_means=means,
        cost_usd=sum(costs) if costs else None,
        latency_p95_s=percentile(latencies, 95),
        judge_mean=sum(rubric) / len(rubric) if rubric else None,
        page=run_page(path, run),
    )


def is_baseline(run: dict[str, Any]) -> bool:
    """A run saved as a baseline: its command line has ``--llmeval-save-baseline``. (A
    baseline saved through the ini key is known by the runs compared with it: see
    ``read_history``.)"""
    args = run.get("args")
    return isinstance(args, list) and any(
        isinstance(a, str) and (a == SAVE_BASELINE or a.startswith(SAVE_BASELINE + "="))
        for a in args
    )


def run_page(path: Path, run: dict[str, Any]) -> Path | None:
    """The run's HTML page, when it exists: ``NAME.html`` beside its report in the history
    folder, else the ``--llmeval-html`` path of its command line (relative to its
    rootdir)."""
    sibling = path.with_name(report_name(path) + ".html")
    if sibling.is_file():
        return sibling
    args = [a for a in run.get("args") or [] if isinstance(a, str)]
    given = None
    for i, arg in enumerate(args):
        if arg == HTML_FLAG and i + 1 < len(args):
            given = args[i + 1]
        elif arg.startswith(HTML_FLAG + "="):
            given = arg.partition("=")[2]
    if not given:
        return None
    page = Path(given)
    if not page.is_absolute() and isinstance(run.get("rootdir"), str):
        page = Path(run["rootdir"]) / page
    return page if page.is_absolute() and page.is_file() else None


def history_files(directory: Path) -> list[Path]:
    """The reports of a history folder (``.json.gz`` and ``.json``; not hidden files)."""
    return [
        p
        for p in directory.iterdir()
        if not p.name.startswith(".") and p.name.endswith(SUFFIXES) and p.is_file()
    ]


def read_history(directory: Path) -> tuple[list[HistoryRun], list[str]]:
    """Every run in ``directory``, in start order, and one warning per file that is not a
    readable report (it is left out). NotADirectoryError or FileNotFoundError when
    ``directory`` is not a folder."""
    if not directory.is_dir():
        what = "not a folder" if directory.exists() else "no such folder"
        raise NotADirectoryError(f"{directory}: {what}")
    return read_runs(history_files(directory))


def read_runs(paths: Iterable[Path], *, strict: bool = False) -> tuple[list[HistoryRun], list[str]]:
    """The runs of these reports in start order (ties: end time, then name), with a
    warning for each unreadable one (``strict``: its ValueError instead). A run is
    marked a baseline when its command line saved one, or when another of these runs
    was compared with a baseline report that has its start time."""
    documents: dict[Path, dict[str, Any]] = {}
    warnings: list[str] = []
    for path in sorted(paths):
        try:
            documents[path] = read_document(path)
        except (OSError, ValueError) as exc:  # OSError: pruned by another job meanwhile
            if strict:
                raise
            warnings.append(f"skipped {exc}")
    baselines = frozenset(_baseline_starts(documents.values()))
    runs: list[HistoryRun] = []
    for path in documents:
        try:
            runs.append(read_run(path, baselines=baselines))
        except ValueError as exc:
            if strict:
                raise
            warnings.append(f"skipped {exc}")
    return _own_pages(sort_runs(runs)), warnings


def _own_pages(runs: list[HistoryRun]) -> list[HistoryRun]:
    """A page found by a run's ``--llmeval-html`` path is its own only if it was last
    written after the run started and before the next run started: a later run that
    wrote the same path replaced it."""
    kept = []
    for run, after in zip(runs, [*runs[1:], None], strict=False):
        page = run.page
        if page is not None and page.name != run.name + ".html":
            try:
                written = datetime.fromtimestamp(page.stat().st_mtime, UTC)
            except OSError:  # gone since it was found
                run = replace(run, page=None)
            else:
                if written < run.started_at or (after is not None and written >= after.started_at):
                    run = replace(run, page=None)
        kept.append(run)
    return kept


def _baseline_starts(documents: Iterable[dict[str, Any]]) -> Iterable[str]:
    """The start times of the baselines these runs were compared with, when readable."""
    seen: set[str] = set()
    for document in documents:
        regression = document.get("regression")
        where = regression.get("baseline") if isinstance(regression, dict) else None
        if not isinstance(where, str) or where in seen:
            continue
        seen.add(where)
        path = Path(where)
        if not path.is_absolute() and isinstance(document["run"].get("rootdir"), str):
            path = Path(document["run"]["rootdir"]) / path
        try:
            started = read_document(path)["run"].get("started_at")
        except (OSError, ValueError):
            continue
        if isinstance(started, str):
            yield started


def sort_runs(runs: Sequence[HistoryRun]) -> list[HistoryRun]:
    """Runs in the order they started; equal starts by end time, then by name."""
    never = datetime.max.replace(tzinfo=UTC)
    return sorted(runs, key=lambda r: (r.started_at, r.finished_at or never, r.name))


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


# --- the series, for machines (``llmeval history --json``) ------------------------------------


class HistoryRunJSON(TypedDict):
    name: str
    path: str
    started_at: str
    state: str  # passed, failed, incomplete, incomplete (interrupted)
    passed: bool | None
    complete: bool
    exit_status: int | None
    baseline: bool
    page: str | None


class HistoryJSON(TypedDict):
    """The history's series, each a list with one value (or null) per run, in run order."""

    runs: list[HistoryRunJSON]
    pass_rate: dict[str, list[float | None]]  # partition -> series
    metric_means: dict[str, dict[str, list[float | None]]]  # metric -> partition -> series
    cost_usd: list[float | None]
    latency_p95_s: list[float | None]


def partitions_of(runs: Sequence[HistoryRun]) -> list[str]:
    present = {p for run in runs for p in run.pass_rates}
    return [p for p in PARTITIONS if p in present] + sorted(present - set(PARTITIONS))


def metrics_of(runs: Sequence[HistoryRun]) -> dict[str, list[str]]:
    """Each gated metric some run has a mean of, with the partitions it has one in."""
    found: dict[str, list[str]] = {}
    for metric in METRICS:
        present = {p for run in runs for p in run.metric_means.get(metric, {})}
        if present:
            found[metric] = [p for p in partitions_of(runs) if p in present]
    return found


def history_json(runs: Sequence[HistoryRun]) -> HistoryJSON:
    return {
        "runs": [
            {
                "name": r.name,
                "path": str(r.path),
                "started_at": r.started_at.isoformat(),
                "state": r.state,
                "passed": r.passed,
                "complete": r.complete,
                "exit_status": r.exit_status,
                "baseline": r.baseline,
                "page": str(r.page) if r.page else None,
            }
            for r in runs
        ],
        "pass_rate": {p: [r.pass_rates.get(p) for r in runs] for p in partitions_of(runs)},
        "metric_means": {
            m: {p: [r.metric_means.get(m, {}).get(p) for r in runs] for p in partitions}
            for m, partitions in metrics_of(runs).items()
        },
        "cost_usd": [r.cost_usd for r in runs],
        "latency_p95_s": [r.latency_p95_s for r in runs],
    }
