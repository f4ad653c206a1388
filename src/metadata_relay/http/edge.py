"""The HTTP edge, decided once for every answer whichever path writes it: the request id (the
client's, echoed, or a new one), the CORS headers and preflight, request metrics by route,
the access log, and the client's address behind trusted proxies.

:class:`EdgeMiddleware` applies it to everything the ASGI app answers (it is the outermost
layer of the app); the listener's own answers (fast hits, :mod:`.fastpath`; refused requests,
:mod:`.connection`) take the same header lines from :class:`Edge`.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import json
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metadata_relay.config import Network
from metadata_relay.http.h1 import date_line, status_line
from metadata_relay.observability import REGISTRY, get_logger

log = get_logger("metadata_relay.http.access")

CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"x-request-id, x-cache, age, etag, retry-after"),
]
PREFLIGHT_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"content-type, authorization, x-request-id"),
    (b"access-control-max-age", b"86400"),
]
_CORS_LINES = b"".join(b"%s: %s\r\n" % h for h in CORS_HEADERS)
RID_NAME = b"x-request-id: "
AFTER_RID = b"\r\n" + _CORS_LINES
""":meth:`Edge.header_lines` is ``RID_NAME + rid + AFTER_RID`` (for callers that join their
answer in one go)."""
REQUEST_ID_MAX = 128
# a client's x-request-id is echoed only if it is printable ASCII or tab (a control byte would
# make the response header invalid)
_REQUEST_ID_OK = re.compile(rb"[\t\x20-\x7e]{1,%d}" % REQUEST_ID_MAX)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
UNMATCHED = "unmatched"


class RequestIds:
    """The client's ``x-request-id`` when usable, else ``<8 hex, random per process>-<hex
    counter>``: unique, and cheaper than random bytes per request."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4).encode() + b"-"
        self._counter = itertools.count(1)

    def __call__(self, given: bytes | None) -> bytes:
        if given is not None and _REQUEST_ID_OK.fullmatch(given):
            return bytes(given)
        return b"%s%x" % (self._prefix, next(self._counter))


class RequestMetrics:
    """Requests by route and status class, and their latency by route, kept in plain numbers
    and read at scrape time (:class:`RequestCollector`): no metric object is touched per
    request."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        # per route: [count per bucket (the last for +Inf)..., count, sum]
        self.latency: dict[str, list[float]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status // 100)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        row = self.latency.get(route)
        if row is None:
            row = self.latency[route] = [0] * (len(LATENCY_BUCKETS) + 3)
        row[_bucket(LATENCY_BUCKETS, seconds)] += 1
        row[-2] += 1
        row[-1] += seconds

    def families(self) -> Iterator[Any]:
        requests = CounterMetricFamily("relay_http_requests",
                                       "HTTP requests by route and status class",
                                       labels=["route", "status"])
        for (route, klass), n in sorted(self.requests.items()):
            requests.add_metric([route, f"{klass}xx"], n)
        yield requests
        latency = HistogramMetricFamily("relay_http_request_duration_seconds",
                                        "HTTP request latency by route", labels=["route"])
        for route, row in sorted(self.latency.items()):
            cumulative = list(itertools.accumulate(int(n) for n in row[:-2]))
            buckets = [(_le(b), c) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=False)]
            buckets.append(("+Inf", cumulative[-1]))
            latency.add_metric([route], buckets, sum_value=row[-1])
        yield latency


_bucket = bisect.bisect_left


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (``floatToGoString``: 1 → "1.0")."""
    return repr(float(bound))


class RequestCollector(Collector):
    def __init__(self, metrics: RequestMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self.metrics.families()


REQUEST_METRICS = RequestMetrics()
"""The process's request metrics (the Prometheus registry is process-wide too)."""
REGISTRY.register(RequestCollector(REQUEST_METRICS))


class Edge:
    """What every answer carries and what every request leaves behind."""

    def __init__(self, *, access_log: bool = False,
                 metrics: RequestMetrics = REQUEST_METRICS) -> None:
        self.request_id = RequestIds()
        self.metrics = metrics
        self.access_log = access_log

    @staticmethod
    def headers(rid: bytes) -> list[tuple[bytes, bytes]]:
        """The edge's response headers, appended after the application's."""
        return [(b"x-request-id", rid), *CORS_HEADERS]

    @staticmethod
    def header_lines(rid: bytes) -> bytes:
        """:meth:`headers` rendered ``name: value\\r\\n``."""
        return RID_NAME + rid + AFTER_RID

    def finished(self, method: str, route: str, status: int, started: float,
                 rid: bytes) -> None:
        """A request answered (``started``: its ``time.perf_counter()``)."""
        seconds = time.perf_counter() - started
        self.metrics.observe(route, status, seconds)
        if self.access_log:
            # the route template, never the path: paths and queries carry what users look for
            log.info("http_request", method=method, route=route, status=status,
                     ms=round(seconds * 1000, 3), request_id=rid.decode())

    def refusal(self, status: int, code: str, message: str, started: float) -> bytes:
        """The whole answer to a request the listener refuses before the application (a
        malformed or oversized head, a timeout); the connection closes after it."""
        body = json.dumps({"error": code, "message": message}).encode()
        rid = self.request_id(None)
        self.finished("-", UNMATCHED, status, started, rid)
        return b"".join((status_line(status), date_line(),
                         b"content-type: application/json\r\ncontent-length: %d\r\n"
                         b"connection: close\r\n" % len(body),
                         self.header_lines(rid), b"\r\n", body))


class EdgeMiddleware:
    """The edge for the ASGI app: x-request-id, CORS headers and preflight, metrics by route,
    access log. Raw ASGI (no BaseHTTPMiddleware): one function call per request."""

    def __init__(self, app: ASGIApp, edge: Edge) -> None:
        self.app = app
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        edge = self.edge
        given = None
        preflight = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
            elif name == b"access-control-request-method":
                preflight = True
        rid = edge.request_id(given)
        if preflight and scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204,
                        "headers": [*PREFLIGHT_HEADERS, (b"x-request-id", rid)]})
            await send({"type": "http.response.body", "body": b""})
            edge.finished("OPTIONS", "preflight", 204, started, rid)
            return
        status = 500

        async def send_with_edge(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message,
                           "headers": [*message.get("headers", ()), *edge.headers(rid)]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_edge)
        finally:
            edge.finished(scope["method"], route_label(scope), status, started, rid)


def route_label(scope: Scope) -> str:
    """Low-cardinality label: the matched route's path template (Starlette's ``route``, or the
    proxy's ``metrics_route``), else ``unmatched``."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    label = scope.get("metrics_route")
    return label if isinstance(label, str) else UNMATCHED


def client_ip(scope: Scope, trusted: Iterable[Network]) -> str:
    """The client's address: the peer, or the right-most untrusted ``X-Forwarded-For`` entry
    when the peer is a trusted proxy."""
    client = scope.get("client")
    peer = client[0] if client else "0.0.0.0"
    trusted = tuple(trusted)
    if not _in(peer, trusted):
        return str(peer)
    forwarded: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded.extend(p.strip() for p in value.decode("latin-1").split(","))
    for hop in reversed(forwarded):
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return str(peer)
        if not _in(hop, trusted):
            return hop
    return forwarded[0] if forwarded and forwarded[0] else str(peer)


def _in(addr: Any, nets: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in n for n in nets)
