"""The results of a study, kept as they arrive: one SQLite file per output directory.

Each finished point is one row, committed at once (SQLite's atomic commit: a process killed
between two points loses nothing written, and never leaves half a row). A point is keyed by
the hash of its scenario mapping (the base with the point's values applied), so a rerun of
the same sweep into the same directory finds what is done and runs only the rest; points of
an edited sweep get new keys. At the end the rows of the sweep's points are exported to
Parquet (pyarrow) and CSV: one column per axis, the headline metrics, the error, and the full
resolved scenario and summary as JSON text.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["ResultStore", "PointRecord", "point_key", "to_json", "json_clean", "metric_columns", "DB_NAME"]

DB_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    key TEXT PRIMARY KEY,
    point_index INTEGER NOT NULL,
    axes TEXT NOT NULL,
    scenario TEXT NOT NULL,
    summary TEXT,
    error TEXT,
    error_kind TEXT,
    duration_s REAL NOT NULL,
    finished_at_s REAL NOT NULL
);
"""


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):           # numpy scalars
        return value.item()
    if hasattr(value, "value"):          # enums
        return value.value
    return str(value)


def to_json(value: Any) -> str:
    """Canonical JSON (sorted keys): equal values give equal text."""
    return json.dumps(value, sort_keys=True, default=_json_default, allow_nan=True)


def json_clean(value: Any) -> Any:
    """A JSON-clean copy (numpy scalars, enums → plain values): what every executor returns."""
    return json.loads(to_json(value))


def point_key(mapping: dict[str, Any]) -> str:
    """A point's identity: the hash of its scenario mapping (before validation)."""
    return hashlib.sha256(to_json(mapping).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class PointRecord:
    """One finished point: its values, its resolved scenario, and its summary or its error."""

    key: str
    point_index: int
    axes: dict[str, Any]
    scenario: dict[str, Any]
    summary: dict[str, Any] | None
    error: str | None
    error_kind: str | None
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.error is None


class ResultStore:
    """Append-only store of `PointRecord`s in `<out_dir>/results.sqlite`."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / DB_NAME
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_meta(self, name: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, to_json(value)))
        self._db.commit()

    def meta(self, name: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def done_keys(self) -> set[str]:
        return {k for (k,) in self._db.execute("SELECT key FROM points")}

    def add(self, record: PointRecord) -> None:
        """Write one finished point and commit. A key already present is an error (a point run
        twice): sqlite3.IntegrityError."""
        self._db.execute(
            "INSERT INTO points (key, point_index, axes, scenario, summary, error, error_kind, duration_s, "
            "finished_at_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.key, record.point_index, to_json(record.axes), to_json(record.scenario),
             None if record.summary is None else to_json(record.summary), record.error, record.error_kind,
             record.duration_s, time.time()))
        self._db.commit()

    def records(self, keys: Iterable[str] | None = None) -> list[PointRecord]:
        """The stored points (only `keys`, in that order, when given; missing keys skipped)."""
        rows = self._db.execute("SELECT key, point_index, axes, scenario, summary, error, error_kind, duration_s "
                                "FROM points ORDER BY point_index, key").fetchall()
        by_key = {r[0]: PointRecord(r[0], r[1], json.loads(r[2]), json.loads(r[3]),
                                    None if r[4] is None else json.loads(r[4]), r[5], r[6], r[7]) for r in rows}
        if keys is None:
            return list(by_key.values())
        return [by_key[k] for k in keys if k in by_key]

    def export(self, records: Sequence[PointRecord], axis_paths: Sequence[str]) -> list[Path]:
        """Write results.parquet and results.csv (one row per record); the paths written."""
        import pandas as pd

        frame = pd.DataFrame([_flat_row(r, axis_paths) for r in records],
                             columns=["point_index", "key", *axis_paths, *metric_columns(), "error_kind",
                                      "error", "scenario_json", "summary_json"])
        for path in axis_paths:   # a column of mixed types (8, "auto") is kept as text
            kinds = {type(v) for v in frame[path] if v is not None}
            if len(kinds) > 1 and not kinds <= {int, float}:
                frame[path] = frame[path].map(lambda v: None if v is None else str(v))
        parquet = self.out_dir / "results.parquet"
        csv = self.out_dir / "results.csv"
        frame.to_parquet(parquet, engine="pyarrow", index=False)
        frame.drop(columns=["scenario_json", "summary_json"]).to_csv(csv, index=False)
        return [parquet, csv]


_METRICS = ("step_time_s", "tokens_per_s", "tokens_per_s_per_device", "tflops_per_device", "mfu", "hfu",
            "peak_memory_bytes", "fits_in_memory", "devices")
_TTT = ("days", "device_hours", "cost_usd", "energy_mwh")


def metric_columns() -> list[str]:
    return [*_METRICS, *(f"time_to_train_{k}" for k in _TTT)]


def _flat_row(r: PointRecord, axis_paths: Sequence[str]) -> dict[str, Any]:
    s = r.summary or {}
    ttt = s.get("time_to_train") or {}
    row: dict[str, Any] = {"point_index": r.point_index, "key": r.key}
    for path in axis_paths:
        row[path] = r.axes.get(path)
    for m in _METRICS:
        row[m] = s.get(m)
    for k in _TTT:
        row[f"time_to_train_{k}"] = ttt.get(k)
    row.update(error_kind=r.error_kind, error=r.error, scenario_json=to_json(r.scenario),
               summary_json=None if r.summary is None else to_json(r.summary))
    return row
