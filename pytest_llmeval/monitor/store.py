"""The monitor's SQLite file: samples, their evaluations, alerts, traffic counters and
window aggregates.

One file in WAL mode. A sample is *acknowledged* once the transaction that inserted it
has committed; from then on a crash or a kill of the process loses nothing: pending
samples are evaluated after a restart, and aggregates are always recomputed from the
stored evaluations. (``synchronous=NORMAL`` survives a killed process; pass
``durable=True`` for ``FULL``, which also survives a power cut, at an fsync per commit.)

Every JSON column is standard JSON: a NaN or an infinity (an unbounded confidence
interval, a custom evaluator's detail) is stored as null.

Schema 2 added each sample's inclusion probability. A schema 1 file is migrated when a
monitor opens it (its forced samples get probability 1; its base-rate ones, whose rate
was not recorded, are weighted by the rate of the monitor that reads them), and read as
it is by the read-only users (``llmeval promote``, ``llmeval dashboard``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import nonfinite_as_null

SCHEMA_VERSION = "2"
READABLE_VERSIONS = ("1", SCHEMA_VERSION)
TABLES = ("meta", "samples", "alerts", "traffic", "windows")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,         -- acceptance order
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,               -- when the request was served (epoch seconds)
    window_start REAL NOT NULL,
    reason TEXT NOT NULL,           -- why it was sampled: base, pattern, error, slow
    probability REAL,               -- with which it was drawn: 1 if forced, else the rate
    input TEXT NOT NULL,            -- JSON
    output TEXT,
    context TEXT,
    latency_s REAL,
    error TEXT,
    metadata TEXT NOT NULL,         -- JSON
    status TEXT NOT NULL,           -- pending, evaluated
    evaluated_at REAL,
    results TEXT                    -- JSON: evaluator name -> its evaluation
);
CREATE INDEX IF NOT EXISTS samples_window ON samples (window_start);
CREATE INDEX IF NOT EXISTS samples_pending ON samples (status) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    window_start REAL NOT NULL,
    type TEXT NOT NULL,             -- hallucination, constraint, quality, drift, or yours
    severity TEXT NOT NULL,         -- low, medium, high, critical
    message TEXT NOT NULL,
    sample_id INTEGER REFERENCES samples (id),
    request_id TEXT,
    details TEXT NOT NULL           -- JSON
);
CREATE INDEX IF NOT EXISTS alerts_sample ON alerts (sample_id);
CREATE TABLE IF NOT EXISTS traffic (
    window_start REAL PRIMARY KEY,
    pushed INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS windows (
    start REAL PRIMARY KEY,
    end REAL NOT NULL,
    aggregates TEXT NOT NULL,       -- JSON (see windows.aggregate)
    drift TEXT,                     -- JSON: the drift comparison, or null
    closed_at REAL NOT NULL
);
"""


def input_text(value: Any) -> str:
    """A request's input as text: a string as it is, a dict of one field its value, any
    other dict as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and len(value) == 1:
        return str(next(iter(value.values())))
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True)
class Sample:
    """A sampled request, as evaluators see it and the store holds it."""

    id: int
    request_id: str
    ts: float
    window_start: float
    reason: str
    input: dict[str, Any]
    output: str | None
    context: str | None
    latency_s: float | None
    error: str | None
    metadata: dict[str, Any]
    status: str
    results: dict[str, Any]
    probability: float | None = None  # None: a base-rate sample of a schema 1 file

    @property
    def text(self) -> str:
        """The input as text (see ``input_text``)."""
        return input_text(self.input)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Sample:
        return cls(
            id=row["id"],
            request_id=row["request_id"],
            ts=row["ts"],
            window_start=row["window_start"],
            reason=row["reason"],
            input=json.loads(row["input"]),
            output=row["output"],
            context=row["context"],
            latency_s=row["latency_s"],
            error=row["error"],
            metadata=json.loads(row["metadata"]),
            status=row["status"],
            results=json.loads(row["results"] or "{}"),
            probability=row["probability"] if "probability" in row.keys() else None,  # noqa: SIM118
        )


def _dumps(value: Any) -> str:
    """Standard JSON (no NaN, no Infinity): non-finite numbers become null."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:  # rare: walk the value only when it needs it
        return json.dumps(
            nonfinite_as_null(value), ensure_ascii=False, default=str, allow_nan=False
        )


class Store:
    """The monitor database. One connection, used from one thread at a time (a lock
    makes it safe to share; the worker writes from its own thread)."""

    def __init__(self, path: str | Path, *, durable: bool = False, readonly: bool = False):
        """Open (read-only: only open) the monitor database at ``path``. A file that is
        not one (not SQLite, or without the monitor's tables) is a ValueError naming it;
        a missing one, read-only, a FileNotFoundError."""
        self.path = Path(path)
        self._lock = threading.Lock()
        if readonly and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such monitor database")
        if self.path.is_dir():
            raise ValueError(f"{self.path}: a folder, not a monitor database")
        try:
            self._db = self._open(durable=durable, readonly=readonly)
        except sqlite3.Error as exc:
            raise ValueError(f"{self.path}: not a monitor database ({exc})") from None

    def _open(self, *, durable: bool, readonly: bool) -> sqlite3.Connection:
        if readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            if not readonly:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                db.executescript(_SCHEMA)
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
            db.row_factory = sqlite3.Row
            present = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            missing = [t for t in TABLES if t not in present]
            if missing:
                none = len(missing) == len(TABLES)
                detail = "no monitor tables" if none else f"no table {', '.join(missing)}"
                raise ValueError(f"{self.path}: not a monitor database ({detail})")
            rows = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
            version = str(rows[0][0]) if rows else None
            if version not in (None, *READABLE_VERSIONS):
                raise ValueError(
                    f"{self.path}: monitor schema {version}, but this pytest-llmeval reads "
                    f"{' and '.join(READABLE_VERSIONS)}: upgrade it"
                )
            columns = {r[1] for r in db.execute("PRAGMA table_info(samples)")}
            if not readonly and "probability" not in columns:
                self._migrate(db)
                columns.add("probability")
            # A schema 1 file read as it is has no probabilities.
            self._probability = "probability" if "probability" in columns else "NULL"
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Schema 1 to 2: the inclusion probability, 1 for the forced samples; the rate of
        the base-rate ones was not recorded (None: the reader's rate applies)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("ALTER TABLE samples ADD COLUMN probability REAL")
            db.execute("UPDATE samples SET probability = 1 WHERE reason != 'base'")
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything in it is stored, or none of it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # --- meta ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    # --- writes (inside a transaction) --------------------------------------------------

    @staticmethod
    def insert_sample(db: sqlite3.Connection, sample: Mapping[str, Any]) -> int:
        cursor = db.execute(
            "INSERT INTO samples (request_id, ts, window_start, reason, probability, input,"
            " output, context, latency_s, error, metadata, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
            (
                sample["request_id"],
                sample["ts"],
                sample["window_start"],
                sample["reason"],
                sample["probability"],
                _dumps(sample["input"]),
                sample["output"],
                sample["context"],
                sample["latency_s"],
                sample["error"],
                _dumps(sample["metadata"]),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @staticmethod
    def add_traffic(db: sqlite3.Connection, counts: Mapping[float, tuple[int, int, int]]) -> None:
        """Add (pushed, accepted, dropped) to each window's counters."""
        db.executemany(
            "INSERT INTO traffic VALUES (?, ?, ?, ?) ON CONFLICT (window_start) DO UPDATE SET"
            " pushed = pushed + excluded.pushed, accepted = accepted + excluded.accepted,"
            " dropped = dropped + excluded.dropped",
            [(start, *c) for start, c in counts.items()],
        )

    @staticmethod
    def save_evaluation(
        db: sqlite3.Connection, sample_id: int, results: Mapping[str, Any], at: float
    ) -> None:
        db.execute(
            "UPDATE samples SET status = 'evaluated', results = ?, evaluated_at = ? WHERE id = ?",
            (_dumps(results), at, sample_id),
        )

    @staticmethod
    def insert_alert(db: sqlite3.Connection, alert: Mapping[str, Any]) -> int:
        cursor = db.execute(
            "INSERT INTO alerts (ts, window_start, type, severity, message, sample_id,"
            " request_id, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert["ts"],
                alert["window_start"],
                alert["type"],
                alert["severity"],
                alert["message"],
                alert.get("sample_id"),
                alert.get("request_id"),
                _dumps(alert.get("details", {})),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @staticmethod
    def save_window(
        db: sqlite3.Connection,
        start: float,
        end: float,
        aggregates: Mapping[str, Any],
        drift: Mapping[str, Any] | None,
        at: float,
    ) -> None:
        db.execute(
            "INSERT INTO windows VALUES (?, ?, ?, ?, ?) ON CONFLICT (start) DO UPDATE SET"
            " aggregates = excluded.aggregates, closed_at = excluded.closed_at,"
            " drift = COALESCE(excluded.drift, drift)",
            (start, end, _dumps(aggregates), None if drift is None else _dumps(drift), at),
        )

    # --- reads --------------------------------------------------------------------------

    def pending(self) -> list[Sample]:
        """Acknowledged samples not yet evaluated, in acceptance order."""
        rows = self._query("SELECT * FROM samples WHERE status = 'pending' ORDER BY id")
        return [Sample.from_row(r) for r in rows]

    def samples(self, ids: Iterable[int] | None = None) -> list[Sample]:
        """Stored samples in acceptance order: all, or those with the given ids."""
        sql, params = "SELECT * FROM samples", list(ids or ())
        if ids is not None:
            sql += f" WHERE id IN ({','.join('?' * len(params))})"
        return [Sample.from_row(r) for r in self._query(sql + " ORDER BY id", params)]

    def evaluations(self, window_start: float) -> list[tuple[dict[str, Any], float | None]]:
        """One window's evaluated samples: (evaluations, inclusion probability or None)."""
        rows = self._query(
            f"SELECT results, {self._probability} AS probability FROM samples"
            " WHERE window_start = ? AND status = 'evaluated'",
            (window_start,),
        )
        return [(json.loads(r["results"]), r["probability"]) for r in rows]

    def alerts(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM alerts ORDER BY id")
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    def traffic(self) -> dict[float, dict[str, int]]:
        rows = self._query("SELECT * FROM traffic ORDER BY window_start")
        return {
            r["window_start"]: {k: r[k] for k in ("pushed", "accepted", "dropped")} for r in rows
        }

    def windows(self) -> list[dict[str, Any]]:
        """Closed windows in time order: start, end, the aggregates, the drift test."""
        rows = self._query("SELECT * FROM windows ORDER BY start")
        return [
            {
                "start": r["start"],
                "end": r["end"],
                **json.loads(r["aggregates"]),
                "drift": json.loads(r["drift"]) if r["drift"] else None,
            }
            for r in rows
        ]

    def window_starts(self) -> list[float]:
        """Every window that has samples or traffic, closed or not."""
        rows = self._query(
            "SELECT window_start FROM traffic UNION SELECT window_start FROM samples"
            " UNION SELECT start FROM windows ORDER BY 1"
        )
        return [r[0] for r in rows]

    def counts(self) -> dict[str, int]:
        """Totals: samples stored and evaluated, alerts, and the traffic counters."""
        row = self._query(
            "SELECT (SELECT COUNT(*) FROM samples) AS stored,"
            " (SELECT COUNT(*) FROM samples WHERE status = 'evaluated') AS evaluated,"
            " (SELECT COUNT(*) FROM alerts) AS alerts,"
            " (SELECT COALESCE(SUM(pushed), 0) FROM traffic) AS pushed,"
            " (SELECT COALESCE(SUM(accepted), 0) FROM traffic) AS accepted,"
            " (SELECT COALESCE(SUM(dropped), 0) FROM traffic) AS dropped"
        )[0]
        return {k: int(row[k]) for k in row.keys()}  # noqa: SIM118 (a Row is not a dict)
