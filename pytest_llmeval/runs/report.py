"""The JSON report of a run (``--llmeval-report``, ``--llmeval-save-baseline``): built
from the records and verdicts, and read back (``llmeval compare``, the baseline, the
monitor's dashboard)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict, cast

from ..records import NOT_RUN, Record, RecordJSON
from .bar import BarJSON
from .draws import Flaky, FlakyJSON
from .panel import JudgePanelJSON, panel_json
from .summary import (
    BudgetJSON,
    BudgetVerdict,
    PartitionJSON,
    PartitionStats,
    PartitionVerdict,
    PartitionVerdictJSON,
    calibration,
    failure_reasons,
)

if TYPE_CHECKING:
    from ..calibration import CalibrationJSON

REPORT_FORMAT = "pytest-llmeval-report"


REPORT_VERSION = 1


class NotRunEntry(TypedDict):
    example_id: str
    partition: str
    nodeid: str


class ReportJSON(TypedDict):
    """The JSON report (``build_report``). One read from disk may be older and lack
    keys that came later: its readers ``.get`` them."""

    format: str
    version: int
    run: dict[str, Any]  # the controller's run metadata, with models, prompts, datasets
    passed: bool
    complete: bool
    failures: list[str]
    not_run: list[NotRunEntry]
    partitions: dict[str, PartitionJSON]
    gates: list[PartitionVerdictJSON]
    flaky: list[FlakyJSON]  # cases whose repeated draws disagree
    time_budgets: list[BudgetJSON]
    regression: dict[str, Any] | None
    calibration: CalibrationJSON | None
    judge_panel: JudgePanelJSON | None  # a judge panel's agreement (llmeval_judge_models)
    bar: BarJSON | None  # the bar against the baseline's (None: no baseline)
    records: list[RecordJSON]


def build_report(
    records: Sequence[Record],
    stats: dict[str, PartitionStats],
    verdicts: Sequence[PartitionVerdict],
    run: dict[str, Any],
    *,
    regression: dict[str, Any] | None = None,
    budgets: Sequence[BudgetVerdict] = (),
    failures: Sequence[str] | None = None,
    flaky: Sequence[Flaky] = (),
    bar: BarJSON | None = None,
) -> ReportJSON:
    """The whole run as one JSON-safe document; also the baseline format. ``passed``:
    nothing failed the run (``failures``, the summary's reasons; by default every
    partition rule passed, no error, no regression blocks, no strict time budget was
    overrun), and ``complete``: every selected test ran (``not_run`` lists the others)."""
    not_run = [r for r in records if r.failure_kind == NOT_RUN]
    if failures is None:
        blocks = regression is not None and bool(regression["blocks"])
        failures = failure_reasons(records, verdicts, regression_blocks=blocks, budgets=budgets)
    datasets: dict[str, str | None] = {}
    for record in records:
        if record.dataset is not None:
            datasets.setdefault(record.dataset, record.dataset_hash)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "run": {
            **run,
            "models": sorted({r.model for r in records if r.model}),
            "prompt_versions": sorted({r.prompt_version for r in records if r.prompt_version}),
            "datasets": datasets,
        },
        "passed": not failures,
        "complete": not not_run,
        "failures": list(failures),
        "not_run": [
            {"example_id": r.example_id, "partition": r.partition, "nodeid": r.nodeid}
            for r in not_run
        ],
        "partitions": {p: s.to_json() for p, s in stats.items()},
        "gates": [v.to_json() for v in verdicts],
        "flaky": [f.to_json() for f in flaky],
        "time_budgets": [b.to_json() for b in budgets],
        "regression": regression,
        "calibration": calibration(records),
        "judge_panel": panel_json(records),
        "bar": bar,
        "records": [r.to_json() for r in records],
    }


def read_report(path: Path) -> ReportJSON:
    """A JSON report written by ``--llmeval-report`` or ``--llmeval-save-baseline``.
    ValueError names the file and what is wrong with it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not standard JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path} is not a pytest-llmeval report (no format {REPORT_FORMAT!r})")
    records = document.get("records")
    needed = ("example_id", "partition", "status")
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and all(k in r for k in needed) for r in records
    ):
        raise ValueError(f"{path}: 'records' must be a list of records with {', '.join(needed)}")
    check_unique(records, str(path))
    # Untrusted JSON, checked above as far as every reader relies on it (a report, its
    # records with example_id, partition and status); the rest is read as written.
    return cast(ReportJSON, document)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number in standard JSON")


def check_unique(records: Sequence[Mapping[str, object]], where: str) -> None:
    """ValueError naming the first example with two records of the same test: a run
    records each (test, example) once, and a second record would count twice (a hard
    error, STATISTICS.md §1). Records without a node id cannot be told apart and pass."""
    seen: set[tuple[str, str]] = set()
    for record in records:
        nodeid = record.get("nodeid")
        if not nodeid:
            continue
        key = (str(nodeid), str(record["example_id"]))
        if key in seen:
            raise ValueError(
                f"{where}: duplicate example id {key[1]!r}: two records of the test "
                f"{key[0]}; a run records each test of an example once (was the report "
                "merged or edited?)"
            )
        seen.add(key)


def read_records(path: Path) -> list[RecordJSON]:
    """The records of a report (see ``read_report``)."""
    return read_report(path)["records"]
