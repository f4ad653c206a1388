"""Where instance records and claims live.

:class:`PairingStore` holds every SQL statement (tables ``relay_instances``, ``relay_claims``
and ``node_claims``); each call is one committed statement. :class:`SharedStore` (scale-out)
puts the records every replica must see in Redis too (``pairing:inst:<id>``,
``pairing:claim:<code>``, ``pairing:claimid:<id>``; single use is one ``SET NX`` on
``pairing:used:<claim id>``; ``pairing:node:<code>``, replaced by a tombstone when deleted)
and keeps the replica's durable copy in SQLite. Which one runs is decided by the backend
factory (``component.py``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from metadata_relay.observability import get_logger
from metadata_relay.pairing.protocol import MAX_CLAIM_TTL
from metadata_relay.storage.sqlite import Database

log = get_logger("metadata_relay.pairing.store")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Instance:
    instance_id: str
    public_key: bytes
    direct_urls: list[str]
    public_ip: str | None
    last_seen_at: str | None
    online: bool
    versions: dict[str, Any] = field(default_factory=dict)
    proven: bool = False  # proved possession of its key once: registers must prove it again

    def to_json(self) -> str:
        return json.dumps({
            "instance_id": self.instance_id, "public_key": self.public_key.hex(),
            "direct_urls": self.direct_urls, "public_ip": self.public_ip,
            "last_seen_at": self.last_seen_at, "versions": self.versions,
            "proven": self.proven,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, online: bool) -> Instance:
        d = json.loads(text)
        return cls(d["instance_id"], bytes.fromhex(d["public_key"]), list(d["direct_urls"]),
                   d.get("public_ip"), d.get("last_seen_at"), online, d.get("versions") or {},
                   bool(d.get("proven")))


@dataclass
class Claim:
    claim_id: str
    code: str
    instance_id: str
    user_id: str
    expires_at: float
    consumed_at: float | None

    def redeemable(self, now: float) -> bool:
        return self.consumed_at is None and self.expires_at > now

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Claim:
        return cls(**json.loads(text))


@dataclass
class NodeClaim:
    """A claim code of current mydia: resolves to ``node_addr`` (JSON text, kept as given)
    until ``expires_at``."""

    code: str
    node_addr: str
    expires_at: float

    def live(self, now: float) -> bool:
        return self.expires_at > now

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeClaim:
        return cls(**json.loads(text))


def _instance(row: Any) -> Instance:
    return Instance(
        instance_id=row["instance_id"], public_key=bytes(row["public_key"]),
        direct_urls=list(json.loads(row["direct_urls"] or "[]")), public_ip=row["public_ip"],
        last_seen_at=row["last_seen_at"], online=bool(row["online"]),
        versions=_versions(row["protocol_versions"]), proven=bool(row["key_proven"]),
    )


def _versions(text: str | None) -> dict[str, Any]:
    try:
        v = json.loads(text or "{}")
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def _claim(row: Any) -> Claim:
    return Claim(
        claim_id=row["id"], code=row["code"], instance_id=row["iid"], user_id=row["user_id"],
        expires_at=parse_iso(row["expires_at"]) or 0.0,
        consumed_at=parse_iso(row["consumed_at"]),
    )


_CLAIM_SELECT = (
    "SELECT c.id, c.code, i.instance_id AS iid, c.user_id, c.expires_at, c.consumed_at "
    "FROM relay_claims c JOIN relay_instances i ON i.id = c.instance_id "
)
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


class PairingStore:
    """SQLite only (one replica)."""

    shared = False

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_instance(self, instance_id: str) -> Instance | None:
        row = await self.db.fetchone(
            "SELECT instance_id, public_key, direct_urls, public_ip, last_seen_at, online, "
            "protocol_versions, key_proven FROM relay_instances WHERE instance_id = ?",
            (instance_id,))
        return _instance(row) if row else None

    async def save_instance(self, inst: Instance, now: float) -> None:
        ts = iso(now)
        await self.db.execute(
            "INSERT INTO relay_instances (instance_id, public_key, direct_urls, public_ip, "
            "last_seen_at, online, protocol_versions, key_proven) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(instance_id) DO UPDATE SET public_key = excluded.public_key, "
            "direct_urls = excluded.direct_urls, "
            "public_ip = coalesce(excluded.public_ip, public_ip), "
            "last_seen_at = excluded.last_seen_at, online = excluded.online, "
            "protocol_versions = excluded.protocol_versions, key_proven = excluded.key_proven, "
            f"updated_at = {_NOW}",
            (inst.instance_id, inst.public_key, json.dumps(inst.direct_urls), inst.public_ip,
             ts, int(inst.online), json.dumps(inst.versions), int(inst.proven)),
        )
        inst.last_seen_at = ts

    async def seen(self, instance_id: str, now: float, *, direct_urls: list[str] | None = None,
                   public_ip: str | None = None) -> str:
        """The instance was heard from: ``last_seen_at`` now, online (and new URLs)."""
        ts = iso(now)
        await self.db.execute(
            "UPDATE relay_instances SET last_seen_at = ?, online = 1, "
            "direct_urls = coalesce(?, direct_urls), public_ip = coalesce(?, public_ip), "
            f"updated_at = {_NOW} WHERE instance_id = ?",
            (ts, None if direct_urls is None else json.dumps(direct_urls), public_ip,
             instance_id),
        )
        return ts

    async def set_offline(self, instance_id: str) -> None:
        await self.db.execute(
            f"UPDATE relay_instances SET online = 0, updated_at = {_NOW} WHERE instance_id = ?",
            (instance_id,))

    async def create_claim(self, instance_id: str, code: str, user_id: str,
                           expires_at: float, now: float) -> Claim | None:
        """None when the code is taken (caller draws another) or the instance is unknown."""
        claim_id = str(uuid.uuid4())
        try:
            n = await self.db.execute(
                "INSERT INTO relay_claims (id, code, instance_id, user_id, expires_at) "
                "SELECT ?, ?, id, ?, ? FROM relay_instances WHERE instance_id = ?",
                (claim_id, code, user_id, iso(expires_at), instance_id))
        except sqlite3.IntegrityError:  # UNIQUE(code): 1 in 2**40 per live claim
            return None
        if n != 1:
            return None
        return Claim(claim_id, code, instance_id, user_id, float(int(expires_at)), None)

    async def claim_by_code(self, code: str) -> Claim | None:
        row = await self.db.fetchone(_CLAIM_SELECT + "WHERE c.code = ?", (code,))
        return _claim(row) if row else None

    async def claim_by_id(self, claim_id: str) -> Claim | None:
        row = await self.db.fetchone(_CLAIM_SELECT + "WHERE c.id = ?", (claim_id,))
        return _claim(row) if row else None

    async def consume(self, claim: Claim, device_id: str | None, now: float) -> bool:
        """Mark an unconsumed claim of its instance consumed; False if none matched."""
        n = await self.db.execute(
            "UPDATE relay_claims SET consumed_at = ?, consumed_by_device_id = ?, "
            f"updated_at = {_NOW} "
            "WHERE id = ? AND consumed_at IS NULL AND instance_id = "
            "(SELECT id FROM relay_instances WHERE instance_id = ?)",
            (iso(now), device_id, claim.claim_id, claim.instance_id))
        return n == 1

    # --- node claims (current mydia) ------------------------------------------------------

    async def create_node_claim(self, claim: NodeClaim, now: float) -> bool:
        """Store ``claim``; False when its code is live already (the caller draws another).
        An expired row that the clean-up has not reached yet is replaced."""
        n = await self.db.execute(
            "INSERT INTO node_claims (code, node_addr, expires_at, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(code) DO UPDATE SET "
            "node_addr = excluded.node_addr, expires_at = excluded.expires_at, "
            "created_at = excluded.created_at WHERE node_claims.expires_at <= ?",
            (claim.code, claim.node_addr, claim.expires_at, now, now))
        return n == 1

    async def node_claim(self, code: str) -> NodeClaim | None:
        """The claim of ``code``, expired or not (the caller compares ``expires_at``)."""
        row = await self.db.fetchone(
            "SELECT code, node_addr, expires_at FROM node_claims WHERE code = ?", (code,))
        return NodeClaim(row["code"], row["node_addr"], row["expires_at"]) if row else None

    async def delete_node_claim(self, code: str) -> None:
        await self.db.execute("DELETE FROM node_claims WHERE code = ?", (code,))

    async def live_node_claims(self, now: float) -> int:
        """How many node claims of this replica are live."""
        row = await self.db.fetchone(
            "SELECT count(*) AS n FROM node_claims WHERE expires_at > ?", (now,))
        return int(row["n"]) if row else 0

    # --- housekeeping (this replica's SQLite only) ----------------------------------------

    async def all_offline(self) -> None:
        await self.db.execute("UPDATE relay_instances SET online = 0 WHERE online = 1")

    async def delete_old_claims(self, now: float, retention: float) -> int:
        cutoff = iso(now - retention)
        return await self.db.execute(
            "DELETE FROM relay_claims WHERE expires_at < ? "
            "OR (consumed_at IS NOT NULL AND consumed_at < ?)", (cutoff, cutoff))

    async def delete_expired_node_claims(self, now: float) -> int:
        """Node claims past their lifetime: nobody may resolve them, and they name the
        server's addresses, so they go at once (no retention)."""
        return await self.db.execute("DELETE FROM node_claims WHERE expires_at <= ?", (now,))

    async def mark_silent_offline(self, now: float, silent_for: float,
                                  keep: set[str]) -> list[str]:
        cutoff = iso(now - silent_for)
        rows = await self.db.fetchall(
            "SELECT instance_id FROM relay_instances WHERE online = 1 AND "
            "(last_seen_at IS NULL OR last_seen_at < ?)", (cutoff,))
        gone = [r["instance_id"] for r in rows if r["instance_id"] not in keep]
        for iid in gone:
            await self.set_offline(iid)
        return gone


class SharedStore(PairingStore):
    """SQLite plus Redis records shared by every replica. A Redis error is logged (its type
    only) and the replica's SQLite answers."""

    shared = True

    def __init__(self, db: Database, redis: Any, errors: tuple[type[BaseException], ...],
                 retention: float) -> None:
        super().__init__(db)
        self.redis = redis
        self.errors = errors
        self.retention = int(retention)

    def _failed(self, what: str, exc: BaseException) -> None:
        log.warning(f"redis_{what}_failed", error=type(exc).__name__)

    async def _read(self, key: str) -> bytes | None:
        """Redis's value of ``key``; None when it is absent or Redis fails (logged): then
        this replica's SQLite answers."""
        try:
            raw: bytes | None = await self.redis.get(key)
        except self.errors as exc:
            self._failed("read", exc)
            return None
        return raw

    async def get_instance(self, instance_id: str) -> Instance | None:
        raw = await self._read(f"pairing:inst:{instance_id}")
        if raw is not None:
            return Instance.from_json(raw, online=False)
        return await super().get_instance(instance_id)

    async def save_instance(self, inst: Instance, now: float) -> None:
        await super().save_instance(inst, now)
        await self._put_instance(inst)

    async def _put_instance(self, inst: Instance) -> None:
        try:
            await self.redis.set(f"pairing:inst:{inst.instance_id}", inst.to_json())
        except self.errors as exc:
            self._failed("write", exc)

    async def seen(self, instance_id: str, now: float, *, direct_urls: list[str] | None = None,
                   public_ip: str | None = None) -> str:
        ts = await super().seen(instance_id, now, direct_urls=direct_urls, public_ip=public_ip)
        inst = await self.get_instance(instance_id)
        if inst is not None:
            inst.last_seen_at = ts
            if direct_urls is not None:
                inst.direct_urls = direct_urls
            if public_ip is not None:
                inst.public_ip = public_ip
            await self._put_instance(inst)
        return ts

    async def create_claim(self, instance_id: str, code: str, user_id: str,
                           expires_at: float, now: float) -> Claim | None:
        if await super().get_instance(instance_id) is None:
            inst = await self.get_instance(instance_id)  # registered on another replica
            if inst is None:
                return None
            await super().save_instance(inst, now)
        claim = await super().create_claim(instance_id, code, user_id, expires_at, now)
        if claim is None:
            return None
        ttl = max(int(expires_at - now), 1) + self.retention
        try:
            if not await self.redis.set(f"pairing:claim:{code}", claim.to_json(), ex=ttl,
                                        nx=True):
                return None  # the code is live on another replica: draw another
            await self.redis.set(f"pairing:claimid:{claim.claim_id}", code, ex=ttl)
        except self.errors as exc:
            self._failed("write", exc)
        return claim

    async def claim_by_code(self, code: str) -> Claim | None:
        try:
            raw = await self.redis.get(f"pairing:claim:{code}")
            if raw is not None:
                claim = Claim.from_json(raw)
                used = await self.redis.get(f"pairing:used:{claim.claim_id}")
                if used is not None:
                    claim.consumed_at = float(json.loads(used)["at"])
                return claim
        except self.errors as exc:
            self._failed("read", exc)
        return await super().claim_by_code(code)

    async def claim_by_id(self, claim_id: str) -> Claim | None:
        try:
            code = await self.redis.get(f"pairing:claimid:{claim_id}")
            if code is not None:
                return await self.claim_by_code(code.decode())
        except self.errors as exc:
            self._failed("read", exc)
        return await super().claim_by_id(claim_id)

    async def consume(self, claim: Claim, device_id: str | None, now: float) -> bool:
        try:
            ok = await self.redis.set(
                f"pairing:used:{claim.claim_id}",
                json.dumps({"at": now, "device_id": device_id, "ts": iso(now)}),
                ex=self.retention + MAX_CLAIM_TTL, nx=True)
        except self.errors as exc:
            self._failed("write", exc)
            return await super().consume(claim, device_id, now)
        if not ok:
            return False
        await super().consume(claim, device_id, now)  # local durable copy (may be absent)
        return True

    # --- node claims: Redis answers first; a deleted code leaves a tombstone there until it
    # would have expired, so no replica's SQLite copy resolves it again ----------------------

    TOMBSTONE = b"deleted"

    async def create_node_claim(self, claim: NodeClaim, now: float) -> bool:
        if not await super().create_node_claim(claim, now):
            return False
        ttl = max(math.ceil(claim.expires_at - now), 1)
        try:
            if await self.redis.set(f"pairing:node:{claim.code}", claim.to_json(), ex=ttl,
                                    nx=True):
                return True
        except self.errors as exc:
            self._failed("write", exc)
            return True  # this replica's copy serves it (Redis is degraded)
        await super().delete_node_claim(claim.code)  # live on another replica: draw another
        return False

    async def node_claim(self, code: str) -> NodeClaim | None:
        raw = await self._read(f"pairing:node:{code}")
        if raw == self.TOMBSTONE:
            return None
        if raw is not None:
            return NodeClaim.from_json(raw)
        return await super().node_claim(code)

    async def delete_node_claim(self, code: str) -> None:
        await super().delete_node_claim(code)
        try:
            await self.redis.set(f"pairing:node:{code}", self.TOMBSTONE, xx=True, keepttl=True)
        except self.errors as exc:
            self._failed("write", exc)
