"""Raw ASGI layer in front of the router for the proxy's paths.

Proxy requests are answered here without framework routing: one route match (memoised),
:meth:`MetadataProxy.serve` (one memory lookup; a hit returns at once), two ``send`` calls.
Every other path falls through to the wrapped application. Fresh hits on an otherwise idle
connection are usually answered before ASGI by ``metadata_relay.http.fastpath``; both take the
entry's headers from ``hits.py``. The request id, CORS headers and request metrics are the
HTTP edge's (``metadata_relay.http.edge``, outside this layer); the route label it reports is
set here as ``scope["metrics_route"]``.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from metadata_relay.metadata.cache import Entry
from metadata_relay.metadata.hits import HitAnswers, RequestHeaders, entry_headers
from metadata_relay.metadata.proxy import Reply, error_reply
from metadata_relay.metadata.routes import is_proxy_path

__all__ = ["MetadataGateway"]


class MetadataGateway:
    def __init__(self, app: ASGIApp, answers: HitAnswers) -> None:
        self.app = app
        self.answers = answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_proxy_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "OPTIONS":
            await self.app(scope, receive, send)
            return
        answers = self.answers
        req = RequestHeaders.scan(scope["headers"])
        resolved = answers.resolve(scope["path"], scope["query_string"])
        if resolved is not None:
            scope["metrics_route"] = resolved[0].route.template
        if resolved is None:
            reply = error_reply(404, "not_found", "Not found")
        elif method not in resolved[0].route.methods:
            reply = error_reply(405, "method_not_allowed",
                                f"Only {', '.join(resolved[0].route.methods)} supported")
        else:
            m, params, key = resolved
            proxy = answers.proxy
            if m.route.body:
                reply = await proxy.serve_body(m, Request(scope, receive))
            else:
                reply = await proxy.serve(m, params, key)
        if reply.entry is not None:
            await self._send_entry(send, reply.entry, reply.cache, time.time(), req, method)
        else:
            await self._send_plain(send, reply, method)

    async def _send_entry(self, send: Send, entry: Entry, cache: str, now: float,
                          req: RequestHeaders, method: str) -> None:
        status, headers, gzipped = entry_headers(entry, cache, now, req)
        if status == 304 or method == "HEAD":
            body = b""
        else:
            body = entry.gzip_body if gzipped and entry.gzip_body is not None else entry.body
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_plain(self, send: Send, reply: Reply, method: str) -> None:
        headers = [
            (b"content-type", reply.content_type.encode("latin-1")),
            (b"content-length", str(len(reply.body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if reply.retry_after is not None:
            headers.append((b"retry-after", str(max(int(reply.retry_after + 0.999), 1)).encode()))
        headers.extend(reply.headers)
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if method == "HEAD" else reply.body})
