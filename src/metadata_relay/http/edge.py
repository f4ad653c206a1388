"""ASGI middleware at the HTTP edge: request ids, CORS, request metrics, client address.

Written as raw ASGI (no BaseHTTPMiddleware) so each layer costs one function call per request.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metadata_relay.config import Network
from metadata_relay.observability import HTTP_LATENCY, HTTP_REQUESTS

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


def request_id_from(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii():
            return bytes(value)
    return secrets.token_hex(8).encode()


class EdgeMiddleware:
    """x-request-id (echoed or generated), CORS headers and preflight, metrics by route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = rid.decode()
        if scope["method"] == "OPTIONS" and any(
            n == b"access-control-request-method" for n, _ in scope["headers"]
        ):
            await send({"type": "http.response.start", "status": 204,
                        "headers": [*PREFLIGHT_HEADERS, (b"x-request-id", rid)]})
            await send({"type": "http.response.body", "body": b""})
            return
        started = time.perf_counter()
        status_holder = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", ()))
                headers.extend(CORS_HEADERS)
                headers.append((b"x-request-id", rid))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_label(scope)
            HTTP_REQUESTS.labels(route, f"{status_holder[0] // 100}xx").inc()
            HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)


def route_label(scope: Scope) -> str:
    """Low-cardinality label: the matched route's path template, else the first segment."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    label = scope.get("metrics_route")
    if isinstance(label, str):
        return label
    return "unmatched"


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
