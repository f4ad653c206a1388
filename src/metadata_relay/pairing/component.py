"""The pairing Component: owns the hub (local or Redis), the service and the clean-up task."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from metadata_relay.config import Settings
from metadata_relay.pairing.cleanup import run_forever
from metadata_relay.pairing.directory import Directory, SharedDirectory
from metadata_relay.pairing.hub import LocalHub, RedisHub
from metadata_relay.pairing.limits import PairingLimits
from metadata_relay.pairing.ratelimit import SharedFailureBudget
from metadata_relay.pairing.service import PairingService
from metadata_relay.pairing.store import PairingStore
from metadata_relay.storage.sqlite import Database


class PairingComponent:
    name = "pairing"

    def __init__(self, settings: Settings, db: Database, token_secret: str, turn_secret: str,
                 limits: PairingLimits | None = None) -> None:
        self.limits = limits or PairingLimits()
        self.store = PairingStore(db)
        directory: Directory
        hub: LocalHub
        if settings.REDIS_URL:
            redis_hub = RedisHub(settings.REDIS_URL)
            hub = redis_hub
            directory = SharedDirectory(self.store, redis_hub.redis, self.limits.claim_retention)
        else:
            hub = LocalHub()
            directory = Directory(self.store)
        self.hub = hub
        self.service = PairingService(settings, token_secret, turn_secret, directory, hub,
                                      self.limits)
        if isinstance(hub, RedisHub):
            self.service.shared_budget = SharedFailureBudget(hub.redis, self.service.budget)
        self._cleanup: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not isinstance(self.hub, RedisHub):
            # Single replica: no socket survived the restart; instances re-register.
            await self.store.all_offline()
        await self.hub.start()
        self._cleanup = asyncio.get_running_loop().create_task(
            run_forever(self.service, self.store))

    async def stop(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cancel()
            with contextlib.suppress(BaseException):
                await self._cleanup
        await self.hub.stop()

    def health(self) -> str:
        return self.hub.health()

    def stats(self) -> dict[str, Any]:
        return {
            "instances_connected": len(self.hub.instances),
            "sessions_connected": len(self.hub.sessions),
            # sockets whose frames take the synchronous lane (http/websocket.py)
            "sockets_direct_lane": sum(
                1 for peer in (*self.hub.instances.values(), *self.hub.sessions.values())
                if getattr(peer, "on_direct_lane", False)),
            "redis": isinstance(self.hub, RedisHub),
            "budget_trips": self.service.budget.trips,
            **self.service.counters,
        }
