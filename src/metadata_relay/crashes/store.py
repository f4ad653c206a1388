"""Crash reports in SQLite (table ``crash_reports``), kept within a count and an age: each
new report removes those past ``max_age`` seconds and all but the newest ``max_count``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from metadata_relay.crashes.report import CrashReport
from metadata_relay.storage.sqlite import Database

_COLUMNS = ("id, received_at, error_type, error_message, stacktrace, version, environment, "
            "occurred_at, metadata, size")


@dataclass(frozen=True, slots=True)
class StoredReport:
    id: int
    received_at: float
    error_type: str
    error_message: str
    stacktrace: list[Any]
    version: str | None
    environment: str | None
    occurred_at: str | None
    metadata: dict[str, Any]
    size: int

    @classmethod
    def from_row(cls, row: Any) -> StoredReport:
        return cls(int(row[0]), float(row[1]), str(row[2]), str(row[3]), json.loads(row[4]),
                   row[5], row[6], row[7], json.loads(row[8]), int(row[9]))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CrashStore:
    def __init__(self, db: Database, max_count: int, max_age: float) -> None:
        self.db = db
        self.max_count = max_count
        self.max_age = max_age

    async def add(self, report: CrashReport, size: int, now: float | None = None) -> int:
        """Store ``report`` (``size``: bytes as received); return its id."""
        now = time.time() if now is None else now
        row = await self.db.fetchone(
            "INSERT INTO crash_reports (received_at, error_type, error_message, stacktrace, "
            "version, environment, occurred_at, metadata, size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (now, report.error_type, report.error_message, report.stacktrace_json(),
             report.version, report.environment, report.occurred_at,
             report.metadata_json(), size),
        )
        assert row is not None
        await self.db.execute("DELETE FROM crash_reports WHERE received_at < ?",
                              (now - self.max_age,))
        await self.db.execute(
            "DELETE FROM crash_reports WHERE id <= "
            "(SELECT id FROM crash_reports ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self.max_count,))
        return int(row[0])

    async def recent(self, limit: int, error_type: str | None = None) -> list[StoredReport]:
        """The newest ``limit`` reports (of one ``error_type`` when given), newest first."""
        where, args = ("WHERE error_type = ? ", (error_type,)) if error_type else ("", ())
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM crash_reports {where}ORDER BY id DESC LIMIT ?",
            (*args, limit))
        return [StoredReport.from_row(r) for r in rows]

    async def get(self, report_id: int) -> StoredReport | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM crash_reports WHERE id = ?",
                                     (report_id,))
        return StoredReport.from_row(row) if row is not None else None

    async def all(self) -> list[StoredReport]:
        """Every report, oldest first (bounded by ``max_count``)."""
        rows = await self.db.fetchall(f"SELECT {_COLUMNS} FROM crash_reports ORDER BY id")
        return [StoredReport.from_row(r) for r in rows]
