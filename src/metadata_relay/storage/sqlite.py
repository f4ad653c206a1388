"""SQLite database: one aiosqlite connection, WAL, numbered SQL migrations under user_version.

Migrations are the files ``migrations/NNNN_name.sql``; each runs in its own transaction and
bumps ``PRAGMA user_version`` to its number, so a crash mid-migration leaves the previous
version intact. ``synchronous=NORMAL`` in WAL mode keeps every committed transaction across a
process kill (only an OS crash can lose the last ones).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

_MIGRATION_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of every packaged migration, in order."""
    folder = resources.files("metadata_relay.storage") / "migrations"
    found: list[tuple[int, str, str]] = []
    for entry in folder.iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..N without gaps: {numbers}")
    return found


def private_files(path: Path) -> None:
    """Make the database's folder 0700 and its file 0600 whatever the umask, before SQLite
    opens it (SQLite gives the ``-wal`` and ``-shm`` files the database file's mode): the
    file holds the generated secrets.

    A folder is tightened when this process creates it, or owns it and it is not shared
    (sticky, like /tmp) nor the working or home directory; others are left as they are.
    """
    folder = path.parent
    created = not folder.exists()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    shared = (info.st_mode & stat.S_ISVTX
              or folder.resolve() in (Path.cwd().resolve(), Path.home().resolve()))
    if created or (info.st_uid == os.getuid() and not shared):
        folder.chmod(0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists() and not side.is_symlink():
            side.chmod(0o600)


class Database:
    """The service's SQLite database: constructed with its path, connected by :meth:`connect`
    (or built and connected at once by :meth:`open`), then :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: aiosqlite.Connection | None = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database not connected")
        return self._conn

    @classmethod
    async def open(cls, path: Path) -> Database:
        db = cls(path)
        await db.connect()
        return db

    async def connect(self) -> None:
        private_files(self.path)
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        try:
            await conn.execute("PRAGMA busy_timeout = 5000")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
            await self.migrate()
        except BaseException:
            self._conn = None
            await conn.close()
            raise

    async def close(self) -> None:
        await self.conn.close()

    async def user_version(self) -> int:
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def migrate(self) -> int:
        """Apply every migration above the current user_version; return the new version."""
        current = await self.user_version()
        for number, _name, sql in migrations():
            if number <= current:
                continue
            # executescript() commits first; the explicit transaction makes the file atomic.
            await self.conn.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
            current = number
        return current

    async def healthy(self) -> bool:
        """True when a real read of the database file works (``SELECT 1`` would not touch it)."""
        try:
            async with self.conn.execute("SELECT count(*) FROM settings") as cur:
                await cur.fetchone()
            return True
        except Exception:
            return False

    # --- generated secrets -------------------------------------------------------------

    async def get_setting(self, key: str) -> str | None:
        async with self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def secret(self, key: str, configured: str | None) -> str:
        """``configured`` when given; else the stored value, generated and stored once."""
        if configured:
            return configured
        await self.conn.execute(
            "INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)",
            (key, secrets.token_urlsafe(48)),
        )
        value = await self.get_setting(key)
        assert value is not None
        return value

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement in autocommit mode; return the changed row count."""
        cur = await self.conn.execute(sql, params)
        count = cur.rowcount
        await cur.close()
        return count

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())
