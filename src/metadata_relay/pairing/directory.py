"""Where instance records and claims live: SQLite alone, or SQLite plus Redis (scale-out).

With Redis every replica reads the same records (``pairing:inst:<id>``, ``pairing:claim:<code>``,
``pairing:claimid:<id>``) and single use is one ``SET NX`` (``pairing:used:<claim id>``);
SQLite keeps the replica's own durable copy.
"""

from __future__ import annotations

import json
import time
from typing import Any

from metadata_relay.observability import get_logger
from metadata_relay.pairing.store import Claim, Instance, PairingStore, iso

log = get_logger("metadata_relay.pairing.directory")


class Directory:
    """SQLite only (single replica)."""

    def __init__(self, store: PairingStore) -> None:
        self.store = store

    async def get_instance(self, instance_id: str) -> Instance | None:
        return await self.store.get_instance(instance_id)

    async def save_instance(self, inst: Instance, now: float) -> None:
        await self.store.upsert_instance(inst, now)

    async def seen(self, instance_id: str, now: float, *, direct_urls: list[str] | None = None,
                   public_ip: str | None = None) -> str:
        return await self.store.seen(instance_id, now, direct_urls=direct_urls,
                                     public_ip=public_ip)

    async def set_offline(self, instance_id: str) -> None:
        await self.store.set_offline(instance_id)

    async def create_claim(self, instance_id: str, code: str, user_id: str,
                           expires_at: float) -> Claim | None:
        return await self.store.create_claim(instance_id, code, user_id, expires_at)

    async def claim_by_code(self, code: str) -> Claim | None:
        return await self.store.claim_by_code(code)

    async def claim_by_id(self, claim_id: str) -> Claim | None:
        return await self.store.claim_by_id(claim_id)

    async def consume(self, claim: Claim, device_id: str | None, now: float) -> bool:
        return await self.store.consume(claim.claim_id, claim.instance_id, device_id, now)


class SharedDirectory(Directory):
    """SQLite plus Redis records shared by every replica."""

    def __init__(self, store: PairingStore, redis: Any, retention: float) -> None:
        super().__init__(store)
        self.redis = redis
        self.retention = int(retention)

    async def get_instance(self, instance_id: str) -> Instance | None:
        try:
            raw = await self.redis.get(f"pairing:inst:{instance_id}")
            if raw is not None:
                return Instance.from_json(raw, online=False)
        except Exception as exc:
            log.warning("redis_read_failed", error=type(exc).__name__)
        return await super().get_instance(instance_id)

    async def save_instance(self, inst: Instance, now: float) -> None:
        await super().save_instance(inst, now)
        await self._put_instance(inst)

    async def _put_instance(self, inst: Instance) -> None:
        try:
            await self.redis.set(f"pairing:inst:{inst.instance_id}", inst.to_json())
        except Exception as exc:
            log.warning("redis_write_failed", error=type(exc).__name__)

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
                           expires_at: float) -> Claim | None:
        if await super().get_instance(instance_id) is None:
            inst = await self.get_instance(instance_id)  # registered on another replica
            if inst is None:
                return None
            await super().save_instance(inst, time.time())
        claim = await super().create_claim(instance_id, code, user_id, expires_at)
        if claim is None:
            return None
        ttl = max(int(expires_at - time.time()) + self.retention, 1)
        try:
            ok = await self.redis.set(f"pairing:claim:{code}", claim.to_json(), ex=ttl, nx=True)
            if not ok:
                return None
            await self.redis.set(f"pairing:claimid:{claim.claim_id}", code, ex=ttl)
        except Exception as exc:
            log.warning("redis_write_failed", error=type(exc).__name__)
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
        except Exception as exc:
            log.warning("redis_read_failed", error=type(exc).__name__)
        return await super().claim_by_code(code)

    async def claim_by_id(self, claim_id: str) -> Claim | None:
        try:
            code = await self.redis.get(f"pairing:claimid:{claim_id}")
            if code is not None:
                return await self.claim_by_code(code.decode())
        except Exception as exc:
            log.warning("redis_read_failed", error=type(exc).__name__)
        return await super().claim_by_id(claim_id)

    async def consume(self, claim: Claim, device_id: str | None, now: float) -> bool:
        try:
            ok = await self.redis.set(
                f"pairing:used:{claim.claim_id}",
                json.dumps({"at": now, "device_id": device_id, "ts": iso(now)}),
                ex=self.retention + 600, nx=True)
        except Exception as exc:
            log.warning("redis_write_failed", error=type(exc).__name__)
            return await super().consume(claim, device_id, now)
        if not ok:
            return False
        await super().consume(claim, device_id, now)  # local durable copy (may be absent)
        return True

