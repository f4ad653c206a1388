"""Cache entries, the cache key, and the tiers: a memory LRU bounded by bytes in front of a
persistent tier (SQLite by default, Redis when ``REDIS_URL`` is set).

Entries are kept past expiry for ``STALE_IF_ERROR`` seconds so a failing upstream can be
answered from them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode

from metadata_relay.storage.redis import RedisAdapter
from metadata_relay.storage.sqlite import Database

STALE_IF_ERROR = 30 * 86400
GZIP_MIN_BYTES = 512
ENTRY_OVERHEAD = 400  # bytes of bookkeeping counted per memory entry
ALREADY_COMPRESSED = ("image/", "audio/", "video/", "application/zip", "application/gzip")


def cache_key(path: str, params: list[tuple[str, str]], method: str = "GET") -> str:
    """``<METHOD>:<canonical path>?<sorted params>`` (HEAD shares GET's entries); callers
    pass the canonical path and the parameters sent upstream (never an api_key)."""
    if not params:
        return method + ":" + path
    return method + ":" + path + "?" + urlencode(sorted(params))


def compressible(content_type: str) -> bool:
    """Whether gzip can shrink this kind of body (images, audio and video are compressed
    already: gzipping a JPEG costs CPU for a percent or two)."""
    kind = content_type.lower()
    return not kind.startswith(ALREADY_COMPRESSED) or "svg" in kind


def strong_etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


@dataclass(slots=True)
class Entry:
    status: int
    content_type: str
    body: bytes
    etag: str
    stored_at: float
    expires_at: float
    gzip_body: bytes | None = None
    # header blocks for the fast path, built once per entry
    _headers: dict[bool, list[tuple[bytes, bytes]]] = field(default_factory=dict, repr=False)
    # the same blocks rendered as header lines for the HTTP fast path (None: the 304's etag)
    _blocks: dict[bool | None, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, status: int, content_type: str, body: bytes, ttl: float,
               now: float | None = None) -> Entry:
        now = time.time() if now is None else now
        gz = (gzip.compress(body, 6, mtime=0)
              if len(body) >= GZIP_MIN_BYTES and compressible(content_type) else None)
        if gz is not None and len(gz) >= len(body):
            gz = None
        return cls(status, content_type, body, strong_etag(body), now, now + ttl, gz)

    @property
    def purge_at(self) -> float:
        return self.expires_at + STALE_IF_ERROR

    @property
    def size(self) -> int:
        return len(self.body) + (len(self.gzip_body) if self.gzip_body else 0) + ENTRY_OVERHEAD

    def static_headers(self, gzipped: bool) -> list[tuple[bytes, bytes]]:
        """content-type, content-length, etag (and content-encoding) for one representation."""
        block = self._headers.get(gzipped)
        if block is None:
            body = self.gzip_body if gzipped and self.gzip_body is not None else self.body
            block = [
                (b"content-type", self.content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
                (b"etag", self.etag.encode()),
            ]
            if self.gzip_body is not None:
                block.append((b"vary", b"accept-encoding"))
            if gzipped:
                block.append((b"content-encoding", b"gzip"))
            self._headers[gzipped] = block
        return block

    def static_block(self, gzipped: bool) -> bytes:
        """:meth:`static_headers` as ``name: value\\r\\n`` lines."""
        block = self._blocks.get(gzipped)
        if block is None:
            block = b"".join(b"%s: %s\r\n" % h for h in self.static_headers(gzipped))
            self._blocks[gzipped] = block
        return block

    def etag_block(self) -> bytes:
        """The etag header line (a 304's only entry header)."""
        block = self._blocks.get(None)
        if block is None:
            block = self._blocks[None] = b"etag: %s\r\n" % self.etag.encode()
        return block

    # --- serialisation for the persistent tiers -----------------------------------------
    _HEAD = struct.Struct("!I")

    def dumps(self) -> bytes:
        meta = json.dumps({
            "s": self.status, "t": self.content_type, "e": self.etag, "a": self.stored_at,
            "x": self.expires_at, "b": len(self.body),
        }).encode()
        return self._HEAD.pack(len(meta)) + meta + self.body + (self.gzip_body or b"")

    @classmethod
    def loads(cls, raw: bytes) -> Entry:
        (n,) = cls._HEAD.unpack_from(raw)
        meta = json.loads(raw[4:4 + n])
        start = 4 + n
        body = raw[start:start + meta["b"]]
        gz = raw[start + meta["b"]:] or None
        return cls(int(meta["s"]), str(meta["t"]), body, str(meta["e"]), float(meta["a"]),
                   float(meta["x"]), gz)


class MemoryTier:
    """True LRU bounded by the bytes of its entries."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Entry | None:
        entry = self._data.get(key)
        if entry is not None:
            self._data.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old.size + len(key)
        size = entry.size + len(key)
        if size > self.max_bytes:
            return
        self._data[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            k, e = self._data.popitem(last=False)
            self.bytes -= e.size + len(k)

    def adopt(self, key: str, entry: Entry) -> Entry:
        """Keep ``entry`` (read from the persistent tier) unless a newer one arrived for
        ``key`` meanwhile; return the one kept."""
        current = self._data.get(key)
        if current is not None and current.stored_at >= entry.stored_at:
            return current
        self.put(key, entry)
        return entry

    def delete(self, key: str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old.size + len(key)


class PersistentTier(Protocol):
    name: str

    async def get(self, key: str) -> Entry | None: ...

    async def put(self, key: str, entry: Entry) -> None: ...

    async def purge(self, now: float) -> int: ...


class SqliteTier:
    name = "sqlite"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> Entry | None:
        row = await self.db.fetchone(
            "SELECT status, content_type, body, gzip_body, etag, stored_at, expires_at "
            "FROM cache_entries WHERE key = ? AND purge_at > ?", (key, time.time()),
        )
        if row is None:
            return None
        return Entry(int(row[0]), str(row[1]), bytes(row[2]), str(row[4]), float(row[5]),
                     float(row[6]), bytes(row[3]) if row[3] is not None else None)

    async def put(self, key: str, entry: Entry) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO cache_entries (key, status, content_type, body, gzip_body, "
            "etag, stored_at, expires_at, purge_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, entry.status, entry.content_type, entry.body, entry.gzip_body, entry.etag,
             entry.stored_at, entry.expires_at, entry.purge_at),
        )

    async def purge(self, now: float) -> int:
        return await self.db.execute("DELETE FROM cache_entries WHERE purge_at <= ?", (now,))


class RedisTier:
    """Entries shared by every replica; Redis failures degrade to a miss, never an error."""

    name = "redis"
    PREFIX = "metadata_relay:cache:"

    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter

    async def get(self, key: str) -> Entry | None:
        raw = await self.adapter.get(self.PREFIX + key)
        if raw is None:
            return None
        try:
            return Entry.loads(raw)
        except (ValueError, KeyError, struct.error):
            return None

    async def put(self, key: str, entry: Entry) -> None:
        ttl = entry.purge_at - time.time()
        if ttl > 1:
            await self.adapter.set(self.PREFIX + key, entry.dumps(), int(ttl))

    async def purge(self, now: float) -> int:
        return 0  # Redis expires keys itself
