"""Redis adapter (optional ``redis`` extra): one client, health tracking, background reconnect.

Commands never raise to callers: a Redis outage turns reads into misses and writes into
no-ops, and marks the adapter degraded until a background ping succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from metadata_relay.observability import get_logger

log = get_logger("metadata_relay.storage.redis")


class RedisAdapter:
    """Component ``redis`` (present only when ``REDIS_URL`` is set)."""

    name = "redis"

    def __init__(self, url: str, *, timeout: float = 1.0, check_interval: float = 1.0) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "REDIS_URL is set but the redis client is not installed: "
                "install metadata-relay[redis]"
            ) from exc
        self.errors: tuple[type[BaseException], ...] = (
            aioredis.RedisError, OSError, asyncio.TimeoutError,
        )
        self.client: Any = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry_on_timeout=False, health_check_interval=0,
        )
        self.healthy = False
        self.check_interval = check_interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._ping()
        if not self.healthy:
            log.warning("redis_unreachable_at_start")
        self._task = asyncio.create_task(self._monitor(), name="redis-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(*self.errors):
            await self.client.aclose()

    def health(self) -> str:
        return "ok" if self.healthy else "degraded"

    def stats(self) -> dict[str, Any]:
        return {"connected": self.healthy}

    async def _ping(self) -> None:
        was = self.healthy
        try:
            await self.client.ping()
            self.healthy = True
        except self.errors:
            self.healthy = False
        if was != self.healthy:
            log.info("redis_state", healthy=self.healthy)

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            await self._ping()

    def _failed(self) -> None:
        if self.healthy:
            self.healthy = False
            log.warning("redis_command_failed")

    async def get(self, key: str) -> bytes | None:
        if not self.healthy:
            return None
        try:
            value = await self.client.get(key)
        except self.errors:
            self._failed()
            return None
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl: int) -> bool:
        if not self.healthy:
            return False
        try:
            await self.client.set(key, value, ex=ttl)
        except self.errors:
            self._failed()
            return False
        return True
