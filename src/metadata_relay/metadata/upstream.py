"""HTTP clients for the TMDB and TVDB APIs (aiohttp), behind the politeness gate.

``ProviderClient.request`` returns the upstream's answer (any status) or raises
:class:`UpstreamFailure` for timeouts, refused connections, an open circuit or a full queue.
429 and 5xx answers count as failures for the circuit breaker; 429's ``Retry-After`` blocks
the provider for that long.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge, Histogram

from metadata_relay import __version__
from metadata_relay.metadata.politeness import CircuitBreaker, Politeness, UpstreamFailure
from metadata_relay.observability import REGISTRY

UPSTREAM_CALLS = Counter(
    "relay_upstream_requests_total", "Upstream requests by provider and outcome",
    ["provider", "outcome"], registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "relay_upstream_request_duration_seconds", "Upstream latency by provider", ["provider"],
    registry=REGISTRY,
)
UPSTREAM_INFLIGHT = Gauge(
    "relay_upstream_in_flight", "Upstream requests in flight", ["provider"], registry=REGISTRY
)
BREAKER_OPEN = Gauge(
    "relay_upstream_circuit_open", "1 while the provider's circuit breaker is open",
    ["provider"], registry=REGISTRY,
)

USER_AGENT = f"metadata-relay/{__version__}"
MAX_BODY = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    content_type: str
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), capped at 1 h."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), 3600.0)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(when - (now if now is not None else time.time()), 0.0), 3600.0)


class ProviderClient:
    def __init__(self, provider: str, base_url: str, *, timeout: float, rate: float,
                 concurrency: int, queue_timeout: float) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.politeness = Politeness(rate, concurrency, queue_timeout, CircuitBreaker())
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, limit_per_host=self._concurrency, ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(self.timeout, 5.0)),
            headers={"user-agent": USER_AGENT, "accept": "application/json"},
            raise_for_status=False,
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def breaker_state(self) -> str:
        return self.politeness.breaker.state

    async def request(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None,
                      headers: dict[str, str] | None = None, json: Any = None) -> UpstreamResponse:
        if self._session is None:
            raise UpstreamFailure("unavailable", "client not started")
        labels_inflight = UPSTREAM_INFLIGHT.labels(self.provider)
        breaker = self.politeness.breaker
        # UPSTREAM_TIMEOUT bounds the whole attempt: time queued for a slot counts against it
        deadline = time.monotonic() + self.timeout
        async with self.politeness.slot(max_wait=self.timeout):
            labels_inflight.inc()
            started = time.perf_counter()
            remaining = max(deadline - time.monotonic(), 0.05)
            try:
                async with self._session.request(
                    method, self.base_url + path, params=params, headers=headers, json=json,
                    allow_redirects=False, timeout=aiohttp.ClientTimeout(
                        total=remaining, connect=min(remaining, 5.0)),
                ) as resp:
                    body = await resp.content.read(MAX_BODY + 1)
                    if len(body) > MAX_BODY:
                        raise UpstreamFailure("bad_status", "upstream body too large")
                    content_type = resp.headers.get("content-type", "application/json")
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                    status = resp.status
            except TimeoutError:
                breaker.failure()
                self._count("timeout")
                raise UpstreamFailure("timeout", f"{self.provider} did not answer in time") \
                    from None
            except (aiohttp.ClientError, OSError) as exc:
                breaker.failure()
                self._count("connection_error")
                raise UpstreamFailure(
                    "unavailable", f"{self.provider} unreachable: {type(exc).__name__}"
                ) from None
            except asyncio.CancelledError:
                raise
            finally:
                labels_inflight.dec()
                UPSTREAM_LATENCY.labels(self.provider).observe(time.perf_counter() - started)
        if status == 429:
            breaker.failure()
            self.politeness.block_for(retry_after if retry_after is not None else 1.0)
            self._count("429")
        elif status >= 500:
            breaker.failure()
            self._count("5xx")
        else:
            breaker.success()
            self._count(f"{status // 100}xx")
        BREAKER_OPEN.labels(self.provider).set(1 if breaker.state != "closed" else 0)
        return UpstreamResponse(status, body, content_type, retry_after)

    def _count(self, outcome: str) -> None:
        UPSTREAM_CALLS.labels(self.provider, outcome).inc()
        BREAKER_OPEN.labels(self.provider).set(
            1 if self.politeness.breaker.state != "closed" else 0
        )
