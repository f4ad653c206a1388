"""Raw ASGI layer in front of the router for the proxy's paths.

Proxy requests are answered here without framework routing or middleware: one route match
(memoised), :meth:`MetadataProxy.serve` (one memory lookup; a hit returns at once), two
``send`` calls. Every other path falls through to the wrapped application. Fresh hits on an
otherwise idle connection are usually answered before ASGI by ``metadata_relay.http.fastpath``;
both take their headers from ``hits.py``.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from metadata_relay.http.edge import CORS_HEADERS
from metadata_relay.metadata.cache import Entry
from metadata_relay.metadata.hits import (
    HITS_KEY,
    STATE_KEY,
    HitAnswers,
    RequestHeaders,
    entry_headers,
)
from metadata_relay.metadata.proxy import MetadataProxy, Reply, error_reply
from metadata_relay.metadata.routes import is_proxy_path

__all__ = ["HITS_KEY", "STATE_KEY", "MetadataGateway"]


class MetadataGateway:
    def __init__(self, app: ASGIApp, answers: HitAnswers | None = None) -> None:
        self.app = app
        self.answers = answers or HitAnswers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_proxy_path(scope["path"]):
            if scope["type"] == "lifespan" and "state" in scope:
                # the lifespan state is what uvicorn hands its HTTP protocols: the fast path
                # finds the shared answers (and, after startup, the proxy) there
                scope["state"][HITS_KEY] = self.answers
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "OPTIONS":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answers = self.answers
        req = RequestHeaders.scan(scope["headers"])
        rid = answers.request_id(req.request_id)
        resolved = answers.resolve(scope["path"], scope["query_string"])
        label = resolved[0].route.template if resolved is not None else "unmatched"
        if resolved is None:
            reply = error_reply(404, "not_found", "Not found")
        elif method not in resolved[0].route.methods:
            reply = error_reply(405, "method_not_allowed",
                                f"Only {', '.join(resolved[0].route.methods)} supported")
        else:
            m, params, key = resolved
            proxy: MetadataProxy = scope["state"][STATE_KEY]
            if m.route.body:
                reply = await proxy.serve_body(m, Request(scope, receive))
            else:
                reply = await proxy.serve(m, params, key)
        if reply.entry is not None:
            await self._send_entry(send, reply.entry, reply.cache, time.time(), rid, req, method)
        else:
            await self._send_plain(send, reply, rid, method)
        answers.observe(label, reply.status, started)

    async def _send_entry(self, send: Send, entry: Entry, cache: str, now: float, rid: bytes,
                          req: RequestHeaders, method: str) -> None:
        status, headers, gzipped = entry_headers(entry, cache, now, rid, req)
        if status == 304:
            body = b""
        elif method == "HEAD":
            body = b""
        else:
            body = entry.gzip_body if gzipped and entry.gzip_body is not None else entry.body
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

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
        headers.extend(reply.headers)
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if method == "HEAD" else reply.body})
