"""The caching proxy: cache lookup, single flight, stale-while-revalidate, stale-if-error,
upstream status mapping. Produces :class:`Reply` objects; ``gateway.py`` writes them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from metadata_relay.config import Settings
from metadata_relay.metadata.cache import (
    STALE_IF_ERROR,
    Entry,
    MemoryTier,
    PersistentTier,
    RedisTier,
    SqliteTier,
)
from metadata_relay.metadata.politeness import UpstreamFailure
from metadata_relay.metadata.routes import Match, Provider
from metadata_relay.metadata.ttl import ttl_for
from metadata_relay.metadata.tvdb_auth import TvdbAuth, TvdbAuthError
from metadata_relay.metadata.upstream import ProviderClient, UpstreamResponse
from metadata_relay.observability import REGISTRY, get_logger
from metadata_relay.storage.redis import RedisAdapter
from metadata_relay.storage.sqlite import Database

log = get_logger("metadata_relay.metadata")

CACHE_RESULTS = Counter(
    "relay_cache_requests_total", "Proxy cache lookups by result (hit, miss, stale)",
    ["result"], registry=REGISTRY,
)
HIT, MISS, STALE = "HIT", "MISS", "STALE"
STALE_WHILE_REVALIDATE = 86400  # serve-then-refresh window past expiry
PURGE_INTERVAL = 900.0


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    entry: Entry | None = None
    cache: str = ""  # HIT / MISS / STALE; "" for answers that are not cached
    retry_after: float | None = None


def error_reply(status: int, code: str, message: str, retry_after: float | None = None) -> Reply:
    body = json.dumps({"error": code, "message": message}).encode()
    return Reply(status, body, retry_after=retry_after)


def failure_reply(f: UpstreamFailure) -> Reply:
    if f.kind == "timeout":
        return error_reply(504, "upstream_timeout", str(f), f.retry_after)
    if f.kind == "busy":
        return error_reply(503, "upstream_busy", str(f), f.retry_after or 1.0)
    if f.kind == "rate_limited":
        return error_reply(502, "upstream_rate_limited", str(f), f.retry_after)
    if f.kind == "unavailable":
        return error_reply(502, "upstream_unavailable", str(f), f.retry_after)
    return error_reply(502, "upstream_error", str(f), f.retry_after)


def _entry_reply(entry: Entry, cache: str) -> Reply:
    return Reply(entry.status, entry.body, entry.content_type, entry, cache)


class MetadataProxy:
    """Component ``cache``: the TMDB/TVDB proxy and its cache tiers."""

    name = "cache"

    def __init__(self, settings: Settings, db: Database, redis: RedisAdapter | None) -> None:
        self.settings = settings
        self.memory = MemoryTier(settings.CACHE_MEMORY_MAX_BYTES)
        self.persistent: PersistentTier = RedisTier(redis) if redis else SqliteTier(db)
        self.redis = redis
        common: dict[str, Any] = {
            "timeout": settings.UPSTREAM_TIMEOUT, "rate": settings.UPSTREAM_MAX_RPS,
            "concurrency": settings.UPSTREAM_MAX_CONNECTIONS,
            "queue_timeout": settings.UPSTREAM_QUEUE_TIMEOUT,
        }
        self.clients: dict[Provider, ProviderClient] = {
            "tmdb": ProviderClient("tmdb", settings.TMDB_BASE_URL, **common),
            "tvdb": ProviderClient("tvdb", settings.TVDB_BASE_URL, **common),
        }
        self.tvdb_auth = (
            TvdbAuth(self.clients["tvdb"], settings.TVDB_API_KEY, settings.TVDB_PIN)
            if settings.TVDB_API_KEY else None
        )
        self.hits = self.misses = self.stale = 0
        self.fast_hits = 0  # of the hits, those answered below ASGI (http/fastpath.py)
        self._flights: dict[str, asyncio.Future[Reply]] = {}
        self._refreshing: dict[Provider, int] = {"tmdb": 0, "tvdb": 0}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hit_counter = CACHE_RESULTS.labels("hit")
        self._miss_counter = CACHE_RESULTS.labels("miss")
        self._stale_counter = CACHE_RESULTS.labels("stale")

    # --- Component ----------------------------------------------------------------------

    async def start(self) -> None:
        for client in self.clients.values():
            await client.start()
        self._spawn(self._purge_loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in self.clients.values():
            await client.stop()

    def health(self) -> str:
        # a Redis outage degrades the shared tier; the redis component reports it too
        if self.redis is not None and not self.redis.healthy:
            return "degraded"
        return "ok"

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses + self.stale
        return {
            "adapter": f"memory+{self.persistent.name}",
            "size": len(self.memory),
            "memory_bytes": self.memory.bytes,
            "memory_mb": round(self.memory.bytes / 1048576, 2),
            "max_bytes": self.memory.max_bytes,
            "utilization_pct": round(100 * self.memory.bytes / self.memory.max_bytes, 2)
            if self.memory.max_bytes else 0.0,
            "hits": self.hits,
            "fast_path_hits": self.fast_hits,
            "misses": self.misses,
            "stale": self.stale,
            "total_requests": total,
            "hit_rate_pct": round(100 * (self.hits + self.stale) / total, 2) if total else 0.0,
            "redis": None if self.redis is None else self.redis.health(),
            "upstream": {
                p: {"circuit": c.breaker_state, "in_flight": c.politeness.in_flight,
                    "peak_in_flight": c.politeness.peak_in_flight}
                for p, c in self.clients.items()
            },
        }

    # --- lookups --------------------------------------------------------------------------

    def fresh_hit(self, key: str, now: float) -> Entry | None:
        """Synchronous memory-tier hit for the hit paths in front of :meth:`serve` (counts it)."""
        entry = self.memory.get(key)
        if entry is not None and now < entry.expires_at:
            self.hits += 1
            self._hit_counter.inc()
            return entry
        return None

    def configured(self, provider: Provider) -> bool:
        if provider == "tmdb":
            return self.settings.TMDB_API_KEY is not None
        return self.tvdb_auth is not None

    async def serve(self, match: Match, params: list[tuple[str, str]], key: str) -> Reply:
        now = time.time()
        entry = self.memory.get(key)
        if entry is None:
            flight = self._flights.get(key)
            if flight is not None:  # a fetch for this key is running: share it
                self.misses += 1
                self._miss_counter.inc()
                return await self._await_flight(flight, None, now)
            entry = await self.persistent.get(key)
            # a fetch may have completed while we read the persistent tier
            entry = self.memory.get(key) or entry
            if entry is not None:
                self.memory.put(key, entry)
        if entry is not None:
            if now < entry.expires_at:
                self.hits += 1
                self._hit_counter.inc()
                return _entry_reply(entry, HIT)
            if now - entry.expires_at < STALE_WHILE_REVALIDATE and self.configured(
                match.route.provider
            ):
                self._revalidate(match, params, key)
                self.stale += 1
                self._stale_counter.inc()
                return _entry_reply(entry, STALE)
        if not self.configured(match.route.provider):
            if entry is not None and now < entry.expires_at + STALE_IF_ERROR:
                return self._served_stale(entry)
            return error_reply(503, "not_configured",
                               f"{match.route.provider.upper()} is not configured on this relay")
        self.misses += 1
        self._miss_counter.inc()
        flight = self._flights.get(key) or self._start_flight(
            key, lambda: self._fetch(match, params, key))
        return await self._await_flight(flight, entry, now)

    async def _await_flight(self, flight: asyncio.Future[Reply], entry: Entry | None,
                            now: float) -> Reply:
        try:
            # shield: a client that goes away must not cancel the fetch others wait for
            return await asyncio.shield(flight)
        except UpstreamFailure as failure:
            if entry is not None and now < entry.expires_at + STALE_IF_ERROR:
                return self._served_stale(entry)
            return failure_reply(failure)

    def _served_stale(self, entry: Entry) -> Reply:
        self.stale += 1
        self._stale_counter.inc()
        return _entry_reply(entry, STALE)

    # --- single flight and refresh -------------------------------------------------------

    def _start_flight(self, key: str, fetch: Callable[[], Awaitable[Reply]]) -> asyncio.Task[Any]:
        """The one upstream fetch for ``key``; concurrent callers await the same task."""
        task = self._spawn(fetch())
        self._flights[key] = task
        task.add_done_callback(lambda _t: self._flights.pop(key, None))
        return task

    def _revalidate(self, match: Match, params: list[tuple[str, str]], key: str) -> None:
        """One background refresh of a stale entry, unless it would compete with foreground
        misses: at most half the provider's connections refresh at once, none while its
        circuit is open (the stale entry keeps being served; a later hit retries)."""
        if key in self._flights:
            return
        client = self.clients[match.route.provider]
        if client.breaker_state != "closed" or self._refreshing[match.route.provider] >= max(
            1, self.settings.UPSTREAM_MAX_CONNECTIONS // 2
        ):
            return
        provider = match.route.provider
        self._refreshing[provider] += 1
        task = self._start_flight(key, lambda: self._fetch(match, params, key))

        def done(t: asyncio.Task[Any]) -> None:
            self._refreshing[provider] -= 1
            if not t.cancelled() and isinstance(t.exception(), UpstreamFailure):
                log.info("revalidate_failed", route=match.route.template)

        task.add_done_callback(done)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _purge_loop(self) -> None:
        while True:
            try:
                removed = await self.persistent.purge(time.time())
                if removed:
                    log.info("cache_purged", entries=removed)
            except Exception:
                log.exception("cache_purge_failed")
            await asyncio.sleep(PURGE_INTERVAL)

    # --- upstream --------------------------------------------------------------------------

    async def _fetch(self, match: Match, params: list[tuple[str, str]], key: str) -> Reply:
        route = match.route
        if route.provider == "tmdb":
            assert self.settings.TMDB_API_KEY is not None
            resp = await self.clients["tmdb"].request(
                "GET", match.upstream_path,
                params=[*params, ("api_key", self.settings.TMDB_API_KEY)],
            )
        else:
            try:
                resp = await self._tvdb_get(match.upstream_path, params)
            except TvdbAuthError:
                return error_reply(401, "upstream_auth_failed",
                                   "TVDB rejected the relay's credentials")
            if resp.status == 401:
                return error_reply(401, "upstream_auth_failed",
                                   "TVDB rejected the relay's credentials after a token refresh")
        status = resp.status
        if 200 <= status < 300 or status == 404:
            entry = Entry.create(200 if status < 300 else 404, resp.content_type, resp.body,
                                 ttl_for(route.ttl, status))
            self.memory.put(key, entry)
            try:
                await self.persistent.put(key, entry)
            except Exception:  # a full disk must not fail the answer we already have
                log.exception("cache_store_failed", tier=self.persistent.name)
            return _entry_reply(entry, MISS)
        if status == 429 or status >= 500:
            raise UpstreamFailure("bad_status", f"{route.provider.upper()} answered {status}",
                                  status=status, retry_after=resp.retry_after)
        return Reply(status, resp.body, resp.content_type)

    async def _tvdb_get(self, path: str, params: list[tuple[str, str]]) -> UpstreamResponse:
        assert self.tvdb_auth is not None
        client = self.clients["tvdb"]
        token = await self.tvdb_auth.bearer()
        resp = await client.request("GET", path, params=params,
                                    headers={"authorization": f"Bearer {token}"})
        if resp.status != 401:
            return resp
        token = await self.tvdb_auth.bearer(force=True, stale=token)
        return await client.request("GET", path, params=params,
                                    headers={"authorization": f"Bearer {token}"})
