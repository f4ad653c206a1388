"""The HTTP client every provider uses (aiohttp), behind its politeness gate and breaker.

``ProviderClient.request`` returns the upstream's answer (any status) or raises
:class:`UpstreamFailure` for timeouts, refused connections, an open circuit, a full queue or a
body over the entry cap.

``UPSTREAM_TIMEOUT`` bounds the whole attempt, queue wait included; a request is never started
upstream with less than :data:`MIN_CALL_SECONDS` (or half the timeout, when that is shorter)
left: it is answered ``busy`` instead (503), so an overloaded relay sheds load rather than
starting calls it cannot wait for. The circuit breaker hears only what the upstream caused:
429 and 5xx answers, refused connections, and timeouts of calls that had ample time (the whole
timeout, or 5 s). A call the relay cut short (queued first, then timed out) and every refusal
in the queue leave the breaker alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge, Histogram

from metadata_relay.clock import Clock
from metadata_relay.metadata.politeness import CircuitBreaker, Politeness, UpstreamFailure
from metadata_relay.observability import REGISTRY

UPSTREAM_CALLS = Counter(
    "relay_upstream_requests_total", "Upstream requests by provider and outcome",
    ["provider", "outcome"], registry=REGISTRY,
)
UPSTREAM_REFUSED = Counter(
    "relay_upstream_refused_total",
    "Requests answered without an upstream call (queue full, circuit open, Retry-After)",
    ["provider", "reason"], registry=REGISTRY,
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

MIN_CALL_SECONDS = 2.0
# a timeout is the upstream's failure when the call had at least this long: 90 % of
# UPSTREAM_TIMEOUT (the rate gate may hold even an unqueued call a little), or 5 s, which
# any healthy API answers in (a slow provider's queue must not hide a dead one)
FULL_BUDGET = 0.9
AMPLE_SECONDS = 5.0


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
    if value.isascii() and value.isdigit():
        return min(float(value), 3600.0)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(when - (now if now is not None else time.time()), 0.0), 3600.0)


class ProviderClient:
    """One provider's connection pool, politeness gate and breaker.

    ``user_agent``: sent on every request; ``max_body``: the largest body read (the cache
    entry cap); ``max_redirects``: redirects followed (0: a 3xx is the answer);
    ``headroom``: share of ``rate`` actually used (see :class:`Politeness`)."""

    def __init__(self, provider: str, base_url: str, *, timeout: float, rate: float,
                 concurrency: int, queue_timeout: float, user_agent: str, max_body: int,
                 clock: Clock, accept: str = "application/json", max_redirects: int = 0,
                 headroom: float = Politeness.HEADROOM) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.reserve = min(MIN_CALL_SECONDS, timeout / 2)
        self.ample = min(timeout * FULL_BUDGET, AMPLE_SECONDS)
        self.max_body = max_body
        self.max_redirects = max_redirects
        self.politeness = Politeness(rate, concurrency, queue_timeout,
                                     CircuitBreaker(clock=clock.monotonic), headroom)
        self._headers = {"user-agent": user_agent, "accept": accept}
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = UPSTREAM_INFLIGHT.labels(provider)
        self._latency = UPSTREAM_LATENCY.labels(provider)
        self._breaker_open = BREAKER_OPEN.labels(provider)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, limit_per_host=self._concurrency, ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(self.timeout, 5.0)),
            headers=self._headers, raise_for_status=False,
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
        deadline = time.monotonic() + self.timeout
        called = False
        try:
            async with self.politeness.slot(max_wait=self.timeout - self.reserve):
                called = True
                budget = deadline - time.monotonic()
                return await self._call(method, path, params, headers, json, budget)
        except UpstreamFailure as failure:
            if not called:  # refused in the queue: no upstream call was made
                UPSTREAM_REFUSED.labels(self.provider, failure.kind).inc()
            raise

    async def _call(self, method: str, path: str, params: list[tuple[str, str]] | None,
                    headers: dict[str, str] | None, json: Any, budget: float
                    ) -> UpstreamResponse:
        assert self._session is not None
        breaker = self.politeness.breaker
        self._in_flight.inc()
        started = time.perf_counter()
        try:
            async with self._session.request(
                method, self.base_url + path, params=params, headers=headers, json=json,
                allow_redirects=self.max_redirects > 0, max_redirects=max(self.max_redirects, 1),
                timeout=aiohttp.ClientTimeout(total=budget, connect=min(budget, 5.0)),
            ) as resp:
                body = await self._read_body(resp)
                content_type = resp.headers.get("content-type", "application/json")
                if not (content_type.isascii() and content_type.isprintable()):
                    content_type = "application/octet-stream"  # never a header we can't send
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
                status = resp.status
        except TimeoutError:
            if budget >= self.ample:
                breaker.failure()  # the upstream had ample time: its failure
            self._count("timeout")
            raise UpstreamFailure("timeout", f"{self.provider} did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            breaker.failure()
            self._count("connection_error")
            raise UpstreamFailure(
                "unavailable", f"{self.provider} unreachable: {type(exc).__name__}"
            ) from None
        except UpstreamFailure:
            breaker.success()  # it answered; the answer is just too large to keep
            self._count("too_large")
            raise
        finally:
            self._in_flight.dec()
            self._latency.observe(time.perf_counter() - started)
        if status == 429 or (status == 503 and retry_after is not None):
            self.politeness.block_for(retry_after if retry_after is not None else 1.0)
        if status == 429 or status >= 500:
            breaker.failure()
            self._count("429" if status == 429 else "5xx")
        else:
            breaker.success()
            self._count(f"{status // 100}xx")
        return UpstreamResponse(status, body, content_type, retry_after)

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes:
        """The whole body, refused (``too_large``) as soon as it passes ``max_body``."""
        if resp.content_length is not None and resp.content_length > self.max_body:
            raise UpstreamFailure("too_large", f"{self.provider} answer over {self.max_body} "
                                  "bytes")
        body = bytearray()
        async for chunk in resp.content.iter_any():
            body += chunk
            if len(body) > self.max_body:
                raise UpstreamFailure("too_large", f"{self.provider} answer over "
                                      f"{self.max_body} bytes")
        return bytes(body)

    def _count(self, outcome: str) -> None:
        UPSTREAM_CALLS.labels(self.provider, outcome).inc()
        self._breaker_open.set(1 if self.politeness.breaker.state != "closed" else 0)
