"""SQLite queries of the pairing relay (tables relay_instances and relay_claims)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from metadata_relay.storage.sqlite import Database


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

    def to_json(self) -> str:
        return json.dumps({
            "instance_id": self.instance_id, "public_key": self.public_key.hex(),
            "direct_urls": self.direct_urls, "public_ip": self.public_ip,
            "last_seen_at": self.last_seen_at, "versions": self.versions,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, online: bool) -> Instance:
        d = json.loads(text)
        return cls(d["instance_id"], bytes.fromhex(d["public_key"]), list(d["direct_urls"]),
                   d.get("public_ip"), d.get("last_seen_at"), online, d.get("versions") or {})


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


def _instance(row: Any) -> Instance:
    return Instance(
        instance_id=row["instance_id"], public_key=bytes(row["public_key"]),
        direct_urls=list(json.loads(row["direct_urls"] or "[]")), public_ip=row["public_ip"],
        last_seen_at=row["last_seen_at"], online=bool(row["online"]),
        versions=_versions(row["protocol_versions"]),
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


class PairingStore:
    """Every SQL statement of the pairing relay; each call is one committed statement."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_instance(self, instance_id: str) -> Instance | None:
        row = await self.db.fetchone(
            "SELECT instance_id, public_key, direct_urls, public_ip, last_seen_at, online, "
            "protocol_versions "
            "FROM relay_instances WHERE instance_id = ?", (instance_id,))
        return _instance(row) if row else None

    async def upsert_instance(self, inst: Instance, now: float) -> None:
        ts = iso(now)
        await self.db.execute(
            "INSERT INTO relay_instances (instance_id, public_key, direct_urls, public_ip, "
            "last_seen_at, online, protocol_versions) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(instance_id) DO UPDATE SET public_key = excluded.public_key, "
            "direct_urls = excluded.direct_urls, "
            "public_ip = coalesce(excluded.public_ip, public_ip), "
            "last_seen_at = excluded.last_seen_at, online = excluded.online, "
            "protocol_versions = excluded.protocol_versions, "
            "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (inst.instance_id, inst.public_key, json.dumps(inst.direct_urls), inst.public_ip,
             ts, int(inst.online), json.dumps(inst.versions)),
        )
        inst.last_seen_at = ts

    async def seen(self, instance_id: str, now: float, *, online: bool = True,
                   direct_urls: list[str] | None = None, public_ip: str | None = None) -> str:
        ts = iso(now)
        await self.db.execute(
            "UPDATE relay_instances SET last_seen_at = ?, online = ?, "
            "direct_urls = coalesce(?, direct_urls), public_ip = coalesce(?, public_ip), "
            "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE instance_id = ?",
            (ts, int(online), None if direct_urls is None else json.dumps(direct_urls),
             public_ip, instance_id),
        )
        return ts

    async def set_offline(self, instance_id: str) -> None:
        await self.db.execute(
            "UPDATE relay_instances SET online = 0, "
            "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE instance_id = ?",
            (instance_id,))

    async def all_offline(self) -> None:
        await self.db.execute("UPDATE relay_instances SET online = 0 WHERE online = 1")

    async def create_claim(self, instance_id: str, code: str, user_id: str,
                           expires_at: float) -> Claim | None:
        """None when the code is taken (caller draws another) or the instance is unknown."""
        claim_id = str(uuid.uuid4())
        try:
            n = await self.db.execute(
                "INSERT INTO relay_claims (id, code, instance_id, user_id, expires_at) "
                "SELECT ?, ?, id, ?, ? FROM relay_instances WHERE instance_id = ?",
                (claim_id, code, user_id, iso(expires_at), instance_id))
        except Exception as exc:  # UNIQUE(code) collision: 1 in 2**40 per live claim
            if "UNIQUE" in str(exc):
                return None
            raise
        if n != 1:
            return None
        return Claim(claim_id, code, instance_id, user_id, float(int(expires_at)), None)

    async def claim_by_code(self, code: str) -> Claim | None:
        row = await self.db.fetchone(_CLAIM_SELECT + "WHERE c.code = ?", (code,))
        return _claim(row) if row else None

    async def claim_by_id(self, claim_id: str) -> Claim | None:
        row = await self.db.fetchone(_CLAIM_SELECT + "WHERE c.id = ?", (claim_id,))
        return _claim(row) if row else None

    async def consume(self, claim_id: str, instance_id: str, device_id: str | None,
                      now: float) -> bool:
        """Mark an unconsumed claim of ``instance_id`` consumed; False if none matched."""
        n = await self.db.execute(
            "UPDATE relay_claims SET consumed_at = ?, consumed_by_device_id = ?, "
            "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
            "WHERE id = ? AND consumed_at IS NULL AND instance_id = "
            "(SELECT id FROM relay_instances WHERE instance_id = ?)",
            (iso(now), device_id, claim_id, instance_id))
        return n == 1

    async def delete_old_claims(self, now: float, retention: float) -> int:
        cutoff = iso(now - retention)
        return await self.db.execute(
            "DELETE FROM relay_claims WHERE expires_at < ? "
            "OR (consumed_at IS NOT NULL AND consumed_at < ?)", (cutoff, cutoff))

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
