"""The feedback loop: production failures the monitor caught become regression examples.

Each selected sample (one with an alert of the chosen types, in the time range, with the
chosen request ids) becomes an example of the ``regression`` partition: its input, the
tags ``production`` and its alert types, and in its metadata the provenance (request
id, alerts, timestamp, the failing output, the root-cause note) and, for a
hallucination, the unsupported claims as ``must_not_mention``. An input the dataset
already has is skipped. The dataset is validated after the write and restored if the
result does not load, so it stays valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..dataset import DATASET_SUFFIXES, Dataset, Example, load_dataset
from ..errors import DatasetError
from ..files import write_text_atomic
from .store import Sample, Store

Failure = tuple[Sample, list[dict[str, Any]]]
Asked = Callable[[Sample, list[dict[str, Any]]], str | None]


@dataclass
class Promotion:
    """What ``promote`` did (or, dry, would do)."""

    target: Path
    added: list[Example] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (request id, same as)


def failures(
    store: Store,
    *,
    alert_types: Collection[str] | None = None,
    since: float | None = None,
    until: float | None = None,
    request_ids: Collection[str] | None = None,
) -> list[Failure]:
    """Samples with at least one alert of ``alert_types`` (default: any), served in
    [since, until), in time order, each with its matching alerts."""
    by_sample: dict[int, list[dict[str, Any]]] = {}
    for alert in store.alerts():
        if alert["sample_id"] is None:
            continue
        if alert_types is not None and alert["type"] not in alert_types:
            continue
        by_sample.setdefault(alert["sample_id"], []).append(alert)
    selected = [
        (sample, by_sample[sample.id])
        for sample in store.samples(ids=by_sample)
        if (since is None or sample.ts >= since)
        and (until is None or sample.ts < until)
        and (request_ids is None or sample.request_id in request_ids)
    ]
    return sorted(selected, key=lambda f: f[0].ts)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _example_id(request_id: str, taken: set[str]) -> str:
    base = "prod-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", request_id).strip("-") or "request")
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def to_example(
    sample: Sample,
    alerts: Sequence[dict[str, Any]],
    *,
    example_id: str,
    note: str,
    expected: str | None,
    partition: str,
    source: str,
) -> Example:
    """One production failure as a dataset example, with its provenance."""
    unsupported = sorted(
        {
            c
            for a in alerts
            if a["type"] == "hallucination"
            for c in a["details"].get("unsupported", [])
        }
    )
    metadata: dict[str, Any] = {
        "provenance": {
            "source": source,
            "request_id": sample.request_id,
            "served_at": _iso(sample.ts),
            "alerts": [
                {"type": a["type"], "severity": a["severity"], "message": a["message"]}
                for a in alerts
            ],
            "failing_output": sample.output,
            "root_cause": note,
        }
    }
    if unsupported:
        metadata["must_not_mention"] = unsupported
    return Example(
        id=example_id,
        partition=partition,  # type: ignore[arg-type]  # validated by pydantic
        input=sample.input,
        expected_output=expected,
        context=sample.context,
        metadata=metadata,
        created_at=datetime.now(UTC).replace(microsecond=0),
        tags=("production", *sorted({a["type"] for a in alerts})),
    )


def _target(dataset: Path, partition: str) -> Path:
    """The file new examples go to: the partition's file of a dataset folder, else the
    dataset file itself."""
    if dataset.suffix in DATASET_SUFFIXES:
        return dataset
    return dataset / f"{partition}.jsonl"


def promote(
    db: str | Path,
    dataset: str | Path,
    *,
    note: str | Asked,
    expected: str | Asked | None = None,
    alert_types: Collection[str] | None = None,
    since: float | None = None,
    until: float | None = None,
    request_ids: Collection[str] | None = None,
    partition: str = "regression",
    dry_run: bool = False,
) -> Promotion:
    """Add the selected failures of the monitor database ``db`` to ``dataset`` (a
    folder of partition files, a ``.jsonl`` or a ``.json`` file; created if missing).
    ``note`` and ``expected`` are text, or functions asked per failure. Raises
    DatasetError when the dataset does not load, before or after the write."""
    path = Path(dataset)
    existing = load_dataset(path) if path.exists() else Dataset(path.stem, ())
    store = Store(db, readonly=True)
    try:
        found = failures(
            store, alert_types=alert_types, since=since, until=until, request_ids=request_ids
        )
    finally:
        store.close()
    seen = {_canonical(ex.input): ex.id for ex in existing}
    taken = {ex.id for ex in existing}
    result = Promotion(_target(path, partition))
    for sample, alerts in found:
        key = _canonical(sample.input)
        if key in seen:
            result.duplicates.append((sample.request_id, seen[key]))
            continue
        example_id = _example_id(sample.request_id, taken)
        why: str | None = "(dry run)"
        reference: str | None = None
        if not dry_run:
            why = note if isinstance(note, str) else note(sample, alerts)
            reference = expected(sample, alerts) if callable(expected) else expected
        example = to_example(
            sample,
            alerts,
            example_id=example_id,
            note=why or "",
            expected=reference or None,
            partition=partition,
            source=f"production monitor {Path(db).name}",
        )
        result.added.append(example)
        seen[key], taken = example_id, taken | {example_id}
    for example in result.added:
        _standard_json(example)
    if result.added and not dry_run:
        _write(path, existing, result)
    return result


def _standard_json(example: Example) -> str:
    """The example as a line of standard JSON; ValueError (naming the request) for a
    NaN or an infinity, which a file written before the store refused them may hold."""
    try:
        return json.dumps(example.to_json(), ensure_ascii=False, allow_nan=False)
    except ValueError:
        request = example.metadata["provenance"]["request_id"]
        raise ValueError(
            f"request {request}: its stored sample holds NaN or Infinity, which a dataset "
            "cannot (standard JSON); leave it out with --request-id or fix the database"
        ) from None


def _write(path: Path, existing: Dataset, result: Promotion) -> None:
    """Append the new examples (a .json document is rewritten whole), then load the
    dataset again; if it does not load, put the old file back."""
    target = result.target
    before = target.read_text(encoding="utf-8") if target.exists() else None
    if target.suffix == ".json":
        Dataset(existing.name, existing.examples + tuple(result.added), existing.task_type).save(
            target
        )
    else:
        lines = "".join(_standard_json(ex) + "\n" for ex in result.added)
        text = before or ""
        write_text_atomic(target, text + ("\n" if text and not text.endswith("\n") else "") + lines)
    try:
        load_dataset(path)
    except DatasetError:
        if before is None:
            target.unlink()
        else:
            write_text_atomic(target, before)
        raise
