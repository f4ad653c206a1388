"""Raw ASGI layer in front of the router for the proxy's paths.

Cache hits are answered here without framework routing or middleware: one route match, one
memory lookup, two ``send`` calls. Misses go to :meth:`MetadataProxy.serve`. Every other path
falls through to the wrapped application.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from metadata_relay.http_edge import CORS_HEADERS
from metadata_relay.metadata.cache import Entry, cache_key
from metadata_relay.metadata.proxy import HIT, MetadataProxy, Reply, error_reply
from metadata_relay.metadata.routes import Match, forwarded_params, is_proxy_path, match
from metadata_relay.observability import HTTP_LATENCY, HTTP_REQUESTS

STATE_KEY = "metadata_proxy"
_X_CACHE = {c: c.encode() for c in ("HIT", "MISS", "STALE")}
RESOLVED_MAX = 4096  # remembered (path, query) → route resolutions

Resolved = tuple[Match, list[tuple[str, str]], str] | None


def _etag_matches(header: bytes, etag: str) -> bool:
    if header.strip() == b"*":
        return True
    wanted = etag.encode()
    for tag in header.split(b","):
        tag = tag.strip()
        if tag.startswith(b"W/"):
            tag = tag[2:]
        if tag == wanted:
            return True
    return False


def _accepts_gzip(header: bytes) -> bool:
    for part in header.lower().split(b","):
        name, _, q = part.strip().partition(b";")
        if name.strip() == b"gzip":
            return q.replace(b" ", b"") not in (b"q=0", b"q=0.0", b"q=0.00", b"q=0.000")
    return False


class MetadataGateway:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # metric children per (route, status class): labels() costs more than the increment
        self._metrics: dict[tuple[str, int], tuple[Any, Any]] = {}
        # route match + forwarded params + cache key per (path, query string): hot keys repeat
        self._resolved: dict[tuple[str, bytes], Resolved] = {}
        # request ids: a random per-process prefix and a counter (unique, cheap)
        self._rid_prefix = secrets.token_hex(4).encode() + b"-"
        self._rid_counter = itertools.count(1)

    def _resolve(self, path: str, qs: bytes) -> Resolved:
        cache_id = (path, qs)
        resolved = self._resolved.get(cache_id, False)
        if resolved is not False:
            return resolved  # type: ignore[return-value]
        m = match(path)
        if m is None:
            resolved = None
        else:
            query = parse_qsl(qs.decode("latin-1"), keep_blank_values=True) if qs else []
            params = forwarded_params(m.route, query)
            resolved = (m, params, cache_key(path, params))
        if len(self._resolved) >= RESOLVED_MAX:
            self._resolved.clear()
        self._resolved[cache_id] = resolved
        return resolved

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_proxy_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "OPTIONS":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = inm = accept = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value if 0 < len(value) <= 128 and value.isascii() else None
            elif name == b"if-none-match":
                inm = value
            elif name == b"accept-encoding":
                accept = value
        if rid is None:
            rid = b"%s%x" % (self._rid_prefix, next(self._rid_counter))
        path = scope["path"]
        resolved = self._resolve(path, scope["query_string"])
        label = resolved[0].route.template if resolved is not None else "unmatched"
        if resolved is None:
            reply = error_reply(404, "not_found", "Not found")
        elif method not in ("GET", "HEAD"):
            reply = error_reply(405, "method_not_allowed", "Only GET and HEAD are supported")
        else:
            m, params, key = resolved
            proxy: MetadataProxy = scope["state"][STATE_KEY]
            now = time.time()
            entry = proxy.fresh_hit(key, now)
            if entry is not None:
                await self._send_entry(send, entry, HIT, now, rid, inm, accept, method)
                self._observe(label, entry.status, started)
                return
            reply = await proxy.serve(m, params, key)
        if reply.entry is not None:
            await self._send_entry(send, reply.entry, reply.cache, time.time(), rid, inm, accept,
                                   method)
        else:
            await self._send_plain(send, reply, rid, method)
        self._observe(label, reply.status, started)

    def _observe(self, label: str, status: int, started: float) -> None:
        children = self._metrics.get((label, status // 100))
        if children is None:
            children = (HTTP_REQUESTS.labels(label, f"{status // 100}xx"),
                        HTTP_LATENCY.labels(label))
            self._metrics[(label, status // 100)] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    async def _send_entry(self, send: Send, entry: Entry, cache: str, now: float, rid: bytes,
                          inm: bytes | None, accept: bytes | None, method: str) -> None:
        age = max(int(now - entry.stored_at), 0)
        remaining = max(int(entry.expires_at - now), 0)
        common = [
            (b"x-cache", _X_CACHE[cache]),
            (b"age", str(age).encode()),
            (b"cache-control", b"public, max-age=%d" % remaining),
            (b"x-request-id", rid),
            *CORS_HEADERS,
        ]
        if inm is not None and _etag_matches(inm, entry.etag):
            headers = [(b"etag", entry.etag.encode()), *common]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        gzipped = entry.gzip_body is not None and accept is not None and _accepts_gzip(accept)
        headers = [*entry.static_headers(gzipped), *common]
        body = entry.gzip_body if gzipped and entry.gzip_body is not None else entry.body
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _send_plain(self, send: Send, reply: Reply, rid: bytes, method: str) -> None:
        headers = [
            (b"content-type", reply.content_type.encode("latin-1")),
            (b"content-length", str(len(reply.body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-request-id", rid),
            *CORS_HEADERS,
        ]
        if reply.retry_after is not None:
            headers.append((b"retry-after", str(max(int(reply.retry_after + 0.999), 1)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if method == "HEAD" else reply.body})
