"""The caching proxy: cache lookup, single flight, stale-while-revalidate, stale-if-error,
upstream status mapping. Produces :class:`Reply` objects; ``gateway.py`` writes them out.

A resolved request (``routes.resolve``) reaches :meth:`MetadataProxy.serve`, which reads the
memory tier once, then the persistent tier, and on a miss starts (or joins) the one upstream
fetch for its key: ``providers/<name>.py`` makes the upstream calls, :meth:`_fetch` turns their
answer into a reply and stores what is cacheable in both tiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request

from metadata_relay.bodies import BodyTooLarge, InvalidJson, read_json_object
from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.metadata.cache import (
    Entry,
    MemoryTier,
    PersistentTier,
    RedisTier,
    SqliteTier,
    cache_key,
)
from metadata_relay.metadata.politeness import UpstreamFailure
from metadata_relay.metadata.providers import Provider, build_providers
from metadata_relay.metadata.providers.logins import LoginRefused
from metadata_relay.metadata.routes import Match, Param, ProviderName
from metadata_relay.metadata.ttl import ttl_for
from metadata_relay.observability import REGISTRY, get_logger
from metadata_relay.storage.redis import RedisAdapter
from metadata_relay.storage.sqlite import Database

log = get_logger("metadata_relay.metadata")

_PROXIES: weakref.WeakSet[MetadataProxy] = weakref.WeakSet()


class CacheCollector(Collector):
    """``relay_cache_requests_total`` read at scrape time from the proxies' own counts (the
    hot path adds to a plain int, no metric lock per hit)."""

    def collect(self) -> Iterator[Any]:
        proxies = list(_PROXIES)
        fam = CounterMetricFamily("relay_cache_requests",
                                  "Proxy cache lookups by result (hit, miss, stale)",
                                  labels=["result"])
        for label, attr in (("hit", "hits"), ("miss", "misses"), ("stale", "stale")):
            fam.add_metric([label], sum(getattr(p, attr) for p in proxies))
        yield fam


REGISTRY.register(CacheCollector())
HIT, MISS, STALE = "HIT", "MISS", "STALE"
STALE_WHILE_REVALIDATE = 86400  # serve-then-refresh window past expiry
PURGE_INTERVAL = 900.0
MAX_BODY = 16 * 1024  # a body route's JSON (a subtitle search is a few hundred bytes)


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    entry: Entry | None = None
    cache: str = ""  # HIT / MISS / STALE; "" for answers that are not cached
    retry_after: float | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()  # extra response headers


def error_reply(status: int, code: str, message: str, retry_after: float | None = None) -> Reply:
    body = json.dumps({"error": code, "message": message}).encode()
    return Reply(status, body, retry_after=retry_after)


def failure_reply(f: UpstreamFailure, passes_rate_limits: bool = False) -> Reply:
    """The answer for an upstream that gave none usable; ``passes_rate_limits``: its 429s
    (and the wait they impose) reach the client as 429 + Retry-After."""
    if passes_rate_limits and (f.kind == "rate_limited" or f.status == 429):
        return error_reply(429, "rate_limited", str(f), f.retry_after or 1.0)
    if f.kind == "timeout":
        return error_reply(504, "upstream_timeout", str(f), f.retry_after)
    if f.kind == "busy":
        return error_reply(503, "upstream_busy", str(f), f.retry_after or 1.0)
    if f.kind == "rate_limited":
        return error_reply(502, "upstream_rate_limited", str(f), f.retry_after)
    if f.kind == "unavailable":
        return error_reply(502, "upstream_unavailable", str(f), f.retry_after)
    if f.kind == "too_large":
        return error_reply(502, "upstream_too_large", str(f))
    return error_reply(502, "upstream_error", str(f), f.retry_after)


def _entry_reply(entry: Entry, cache: str) -> Reply:
    return Reply(entry.status, entry.body, entry.content_type, entry, cache)


class MetadataProxy:
    """Component ``cache``: the metadata proxy, its providers and its cache tiers."""

    name = "cache"

    def __init__(self, settings: Settings, db: Database, redis: RedisAdapter | None,
                 clock: Clock | None = None) -> None:
        self.settings = settings
        self.memory = MemoryTier(settings.CACHE_MEMORY_MAX_BYTES)
        self.persistent: PersistentTier = RedisTier(redis) if redis else SqliteTier(db)
        self.redis = redis
        self.providers: dict[ProviderName, Provider] = build_providers(settings, clock or Clock())
        self.hits = self.misses = self.stale = 0
        self.fast_hits = 0  # of the hits, those answered below ASGI (http/fastpath.py)
        self._flights: dict[str, asyncio.Future[Reply]] = {}
        self._refreshing: dict[ProviderName, int] = dict.fromkeys(self.providers, 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        _PROXIES.add(self)

    # --- Component ----------------------------------------------------------------------

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.client.start()
        self._spawn(self._purge_loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for provider in self.providers.values():
            await provider.client.stop()

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
                name: {"configured": p.configured(), "circuit": p.client.breaker_state,
                       "in_flight": p.client.politeness.in_flight,
                       "peak_in_flight": p.client.politeness.peak_in_flight}
                for name, p in self.providers.items()
            },
        }

    # --- lookups --------------------------------------------------------------------------

    def fresh_hit(self, key: str, now: float) -> Entry | None:
        """Synchronous memory-tier hit for the HTTP fast path (counts it)."""
        entry = self.memory.get(key)
        if entry is not None and now < entry.expires_at:
            self._count_hit()
            return entry
        return None

    def configured(self, provider: ProviderName) -> bool:
        return self.providers[provider].configured()

    async def serve_body(self, match: Match, request: Request) -> Reply:
        """A body route: its JSON object (capped while it streams) gives the parameters and
        the cache key, then as :meth:`serve`."""
        try:
            doc = await read_json_object(request, MAX_BODY)
        except BodyTooLarge:
            reply = error_reply(413, "payload_too_large",
                                f"Request body must be at most {MAX_BODY} bytes")
            reply.headers = ((b"connection", b"close"),)  # the rest of the body is unread
            return reply
        except InvalidJson:
            return error_reply(400, "validation_error", "Request body must be a JSON object")
        try:
            params = self.providers[match.route.provider].body_params(doc)
        except ValueError as exc:
            return error_reply(400, "validation_error", str(exc))
        return await self.serve(match, params, cache_key(match.path, params, "POST"))

    async def serve(self, match: Match, params: list[Param], key: str) -> Reply:
        """The answer for one resolved request: from the cache when it holds one, else from
        the one upstream fetch for ``key``."""
        if match.error is not None:
            return error_reply(400, "bad_request", match.error)
        provider = self.providers[match.route.provider]
        if match.route.ttl is None:  # never cached: every request is an upstream call
            if not provider.configured():
                return _not_configured(provider)
            try:
                return await self._fetch(provider, match, params, "")
            except UpstreamFailure as failure:
                return failure_reply(failure, provider.passes_rate_limits)
        now = time.time()
        entry = self.memory.get(key)
        if entry is None:
            flight = self._flights.get(key)
            if flight is not None:  # a fetch for this key is running: share it
                self._count_miss()
                return await self._await_flight(provider, flight, None, now)
            entry = await self.persistent.get(key)
            if entry is not None:
                # a fetch may have completed while we read: the newer entry stays
                entry = self.memory.adopt(key, entry)
        if entry is not None and now < entry.expires_at:
            self._count_hit()
            return _entry_reply(entry, HIT)
        if not provider.configured():
            if entry is not None and now < entry.purge_at:
                return self._served_stale(entry)
            return _not_configured(provider)
        if entry is not None and now - entry.expires_at < STALE_WHILE_REVALIDATE:
            self._revalidate(provider, match, params, key)
            return self._served_stale(entry)
        self._count_miss()
        flight = self._flights.get(key) or self._start_flight(
            key, lambda: self._fetch(provider, match, params, key))
        return await self._await_flight(provider, flight, entry, now)

    async def _await_flight(self, provider: Provider, flight: asyncio.Future[Reply],
                            entry: Entry | None, now: float) -> Reply:
        try:
            # shield: a client that goes away must not cancel the fetch others wait for
            return await asyncio.shield(flight)
        except UpstreamFailure as failure:
            if entry is not None and now < entry.purge_at:
                return self._served_stale(entry)
            return failure_reply(failure, provider.passes_rate_limits)

    def _count_hit(self) -> None:
        self.hits += 1

    def _count_miss(self) -> None:
        self.misses += 1

    def _served_stale(self, entry: Entry) -> Reply:
        self.stale += 1
        return _entry_reply(entry, STALE)

    # --- single flight and refresh -------------------------------------------------------

    def _start_flight(self, key: str, fetch: Callable[[], Awaitable[Reply]]) -> asyncio.Task[Any]:
        """The one upstream fetch for ``key``; concurrent callers await the same task."""
        task = self._spawn(fetch())
        self._flights[key] = task
        task.add_done_callback(lambda _t: self._flights.pop(key, None))
        return task

    def _revalidate(self, provider: Provider, match: Match, params: list[Param],
                    key: str) -> None:
        """One background refresh of a stale entry, unless it would compete with foreground
        misses: at most half the provider's connections refresh at once, none while its
        circuit is open (the stale entry keeps being served; a later hit retries)."""
        if key in self._flights:
            return
        name = provider.name
        if provider.client.breaker_state != "closed" or self._refreshing[name] >= max(
            1, self.settings.UPSTREAM_MAX_CONNECTIONS // 2
        ):
            return
        self._refreshing[name] += 1
        task = self._start_flight(key, lambda: self._fetch(provider, match, params, key))

        def done(t: asyncio.Task[Any]) -> None:
            self._refreshing[name] -= 1
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

    async def _fetch(self, provider: Provider, match: Match, params: list[Param],
                     key: str) -> Reply:
        """The provider's answer as a reply. 2xx and 404 are stored under ``key`` (when there
        is one: a never-cached route has none); 429 and 5xx raise :class:`UpstreamFailure`
        (a stale copy or an error answers instead); other statuses pass through."""
        try:
            resp = await provider.fetch(match, params)
        except LoginRefused:
            return error_reply(401, "upstream_auth_failed",
                               f"{provider.title} rejected the relay's credentials")
        status = resp.status
        if status == 429 or status >= 500:
            raise UpstreamFailure("bad_status", f"{provider.title} answered {status}",
                                  status=status, retry_after=resp.retry_after)
        if not key or not (200 <= status < 300 or status == 404):
            return Reply(status, resp.body, resp.content_type)
        assert match.route.ttl is not None
        entry = Entry.create(200 if status < 300 else 404, resp.content_type, resp.body,
                             ttl_for(match.route.ttl, status))
        self.memory.put(key, entry)
        try:
            await self.persistent.put(key, entry)
        except Exception:  # a full disk must not fail the answer we already have
            log.exception("cache_store_failed", tier=self.persistent.name)
        return _entry_reply(entry, MISS)


def _not_configured(provider: Provider) -> Reply:
    return error_reply(503, "not_configured", f"{provider.title} is not configured on this relay")
