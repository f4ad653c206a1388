"""The pairing Component: the backend (one replica or many), the service, the routes, and
the clean-up task."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute

from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.observability import get_logger
from metadata_relay.pairing.hub import LocalHub, RedisHub
from metadata_relay.pairing.limits import PairingLimits
from metadata_relay.pairing.ratelimit import Counter, LocalCounter, RedisCounter
from metadata_relay.pairing.routes import routes
from metadata_relay.pairing.service import PairingService, Secrets
from metadata_relay.pairing.store import PairingStore, SharedStore
from metadata_relay.storage.redis import RedisAdapter
from metadata_relay.storage.sqlite import Database

log = get_logger("metadata_relay.pairing.component")


@dataclass(frozen=True)
class Backend:
    """Where pairing state lives and how frames are routed."""

    store: PairingStore
    hub: LocalHub
    counter: Counter


def backend(db: Database, redis: RedisAdapter | None, limits: PairingLimits) -> Backend:
    """The one place that decides between one replica and many: SQLite and in-process
    routing, or the same plus Redis (records, presence, pub/sub routing, rate counts) shared
    by every replica, through the service's one Redis client."""
    if redis is None:
        return Backend(PairingStore(db), LocalHub(), LocalCounter())
    client, errors = redis.client, redis.errors
    return Backend(SharedStore(db, client, errors, limits.claim_retention),
                   RedisHub(client, errors, limits.alive_window),
                   RedisCounter(client, errors))


class PairingComponent:
    name = "pairing"

    def __init__(self, settings: Settings, db: Database, secrets: Secrets,
                 redis: RedisAdapter | None, limits: PairingLimits | None = None,
                 clock: Clock | None = None) -> None:
        self.limits = limits or PairingLimits()
        self.clock = clock or Clock()
        parts = backend(db, redis, self.limits)
        self.store = parts.store
        self.hub = parts.hub
        self.service = PairingService(settings, secrets, parts.store, parts.hub, parts.counter,
                                      self.limits, self.clock)
        self._cleanup: asyncio.Task[None] | None = None

    def routes(self) -> list[BaseRoute]:
        return routes(self.service)

    async def start(self) -> None:
        self.service.start()
        if not self.store.shared:
            # One replica: no socket survived the restart; instances re-register.
            await self.store.all_offline()
        await self.hub.start()
        self._cleanup = asyncio.get_running_loop().create_task(self._run_cleanup())

    async def stop(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup
        await self.hub.stop()

    async def sweep(self) -> dict[str, int]:
        """One clean-up pass: delete old claims and expired node claims, mark silent
        instances offline (instances connected here refresh ``last_seen_at`` so other readers
        see them alive), prune rate-limit state."""
        now = self.clock.time()
        limits = self.limits
        deleted = await self.store.delete_old_claims(now, limits.claim_retention)
        nodes = await self.store.delete_expired_node_claims(now)
        keep = self.hub.local_instance_ids()
        offline = await self.store.mark_silent_offline(now, limits.offline_after, keep)
        for iid in keep:
            await self.store.seen(iid, now)
        self.service.prune()
        if deleted or nodes or offline:
            log.info("pairing_cleanup", claims_deleted=deleted, node_claims_deleted=nodes,
                     marked_offline=len(offline))
        return {"claims_deleted": deleted, "node_claims_deleted": nodes,
                "marked_offline": len(offline)}

    async def _run_cleanup(self) -> None:
        while True:
            await self.clock.sleep(self.limits.cleanup_interval)
            try:
                await self.sweep()
            except sqlite3.Error as exc:
                log.error("pairing_cleanup_failed", error=type(exc).__name__)

    def health(self) -> str:
        return self.hub.health()

    def stats(self) -> dict[str, Any]:
        hub = self.hub
        return {
            "instances_connected": len(hub.instances),
            "sessions_connected": len(hub.sessions),
            # sockets whose frames take the synchronous lane (http/websocket.py)
            "sockets_direct_lane": sum(
                1 for peer in (*hub.instances.values(), *hub.sessions.values())
                if getattr(peer, "on_direct_lane", False)),
            "redis": isinstance(hub, RedisHub),
            **self.service.counters,
        }
