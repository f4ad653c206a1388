"""Answers for the proxy's paths that both HTTP front doors share: route resolution (memoised)
and the headers of a cached entry's answer.

The two front doors are the ASGI gateway (``gateway.py``: every proxy request that reaches the
app) and the listener's fast path below ASGI (``metadata_relay.http.fastpath``: fresh memory
hits on a connection with nothing else in flight). Both take the entry's headers from here, so
the bytes on the wire are the same whichever answered; what every answer carries (request id,
CORS) and the request metrics are the HTTP edge's, added by each front door from there.
Sans-I/O: nothing here reads or writes a socket; :meth:`HitAnswers.fresh` returns the status,
the header lines and the body, and the caller frames and writes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from metadata_relay.metadata import routes
from metadata_relay.metadata.cache import Entry
from metadata_relay.metadata.proxy import MetadataProxy
from metadata_relay.metadata.routes import Resolved, is_proxy_path

RESOLVED_MAX, RESOLVED_MAX_BYTES = 4096, 512  # remembered (path, query) → route resolutions
HIT_LINES_MAX = 4096  # remembered (age, max-age) → hit header lines
_X_CACHE = {c: c.encode() for c in ("HIT", "MISS", "STALE")}

Fresh = tuple[int, bytes, bytes, bytes, str]
"""(status, entry header lines, hit header lines, body, route label)"""


def etag_matches(header: bytes, etag: str) -> bool:
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


def accepts_gzip(header: bytes) -> bool:
    for part in header.lower().split(b","):
        name, _, q = part.strip().partition(b";")
        if name.strip() == b"gzip":
            return q.replace(b" ", b"") not in (b"q=0", b"q=0.0", b"q=0.00", b"q=0.000")
    return False


@dataclass(slots=True)
class RequestHeaders:
    """The request headers a cached entry's answer depends on (last occurrence wins)."""

    if_none_match: bytes | None = None
    accept_encoding: bytes | None = None

    @classmethod
    def scan(cls, headers: Any) -> RequestHeaders:
        """From ASGI-style ``(lowercase name, value)`` pairs."""
        inm = accept = None
        for name, value in headers:
            if name == b"if-none-match":
                inm = value
            elif name == b"accept-encoding":
                accept = value
        return cls(inm, accept)


class HitAnswers:
    """The proxy's answers from its memory tier, shared by the gateway and the fast path:
    route resolution memo plus :meth:`fresh`."""

    def __init__(self, proxy: MetadataProxy) -> None:
        self.proxy = proxy
        # route match + forwarded params + cache key per (path, query string): hot keys repeat
        self._resolved: dict[tuple[str, bytes], Resolved] = {}
        # a hit's x-cache/age/cache-control lines per (age, max-age): they change once a second
        self._hit_lines: dict[tuple[int, int], bytes] = {}

    def resolve(self, path: str, qs: bytes) -> Resolved:
        """Route, forwarded params and cache key for a proxy path, or None (→ 404)."""
        cache_id = (path, qs)
        resolved = self._resolved.get(cache_id, False)
        if resolved is not False:
            return resolved  # type: ignore[return-value]
        resolved = routes.resolve(path, qs)
        if len(path) + len(qs) <= RESOLVED_MAX_BYTES:
            if len(self._resolved) >= RESOLVED_MAX:
                self._resolved.clear()
            self._resolved[cache_id] = resolved
        return resolved

    def fresh(self, method: str, path: str, qs: bytes, inm: bytes | None,
              accept: bytes | None) -> Fresh | None:
        """A fresh memory-tier hit for a GET/HEAD, counted as a hit and as a fast-path hit;
        None for anything else (the caller hands the request to the gateway).

        ``inm``, ``accept``: the request's if-none-match and accept-encoding. Returns
        ``(status, entry header lines, hit header lines, body, route label)``: the headers
        :func:`entry_headers` gives the gateway, in its order, rendered ``name: value\\r\\n``;
        the body is empty for HEAD and 304."""
        if (method != "GET" and method != "HEAD") or not is_proxy_path(path):
            return None
        return self.fresh_resolved(method, self.resolve(path, qs), inm, accept)

    def fresh_resolved(self, method: str, resolved: Resolved, inm: bytes | None,
                       accept: bytes | None) -> Fresh | None:
        """:meth:`fresh` for a GET or HEAD on a proxy path already resolved
        (:meth:`resolve`; callers that memoise their request targets)."""
        if resolved is None:
            return None
        now = time.time()
        proxy = self.proxy
        entry = proxy.fresh_hit(resolved[2], now)
        if entry is None:
            return None
        proxy.fast_hits += 1
        age = int(now - entry.stored_at)
        left = int(entry.expires_at - now)
        ages = (age if age > 0 else 0, left if left > 0 else 0)
        hit = self._hit_lines.get(ages)
        if hit is None:
            if len(self._hit_lines) >= HIT_LINES_MAX:
                self._hit_lines.clear()
            hit = self._hit_lines[ages] = (
                b"x-cache: HIT\r\nage: %d\r\ncache-control: public, max-age=%d\r\n" % ages)
        label = resolved[0].route.template
        if inm is not None and etag_matches(inm, entry.etag):
            return 304, entry.etag_block(), hit, b"", label
        gzipped = entry.gzip_body is not None and accept is not None and accepts_gzip(accept)
        if method == "HEAD":
            body = b""
        elif gzipped and entry.gzip_body is not None:
            body = entry.gzip_body
        else:
            body = entry.body
        return entry.status, entry.static_block(gzipped), hit, body, label


def entry_headers(entry: Entry, cache: str, now: float, req: RequestHeaders
                  ) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    """Status, headers and whether the body is gzipped for an answer from a cache entry
    (the gateway's form of what :meth:`HitAnswers.fresh` renders)."""
    age = max(int(now - entry.stored_at), 0)
    remaining = max(int(entry.expires_at - now), 0)
    common = [
        (b"x-cache", _X_CACHE[cache]),
        (b"age", str(age).encode()),
        (b"cache-control", b"public, max-age=%d" % remaining),
    ]
    if req.if_none_match is not None and etag_matches(req.if_none_match, entry.etag):
        return 304, [(b"etag", entry.etag.encode()), *common], False
    gzipped = (entry.gzip_body is not None and req.accept_encoding is not None
               and accepts_gzip(req.accept_encoding))
    return entry.status, [*entry.static_headers(gzipped), *common], gzipped
