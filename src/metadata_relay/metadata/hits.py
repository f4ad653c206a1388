"""Answers for the proxy's paths that both HTTP front doors share: route resolution (memoised),
request ids, per-route metrics, and the headers of a cached entry's answer.

The two front doors are the ASGI gateway (``gateway.py``: every proxy request that reaches the
app) and the HTTP fast path below ASGI (``metadata_relay.http.fastpath``: fresh memory hits on
a connection with nothing else in flight). Both take their headers from here, so the bytes on
the wire are the same whichever of them answered. Sans-I/O: nothing here reads or writes a
socket; :meth:`HitAnswers.fresh` returns the status, the header lines and the body, and the
caller frames and writes them.
"""

from __future__ import annotations

import bisect
import itertools
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from metadata_relay.http.edge import CORS_HEADERS
from metadata_relay.metadata import routes
from metadata_relay.metadata.cache import Entry
from metadata_relay.metadata.proxy import MetadataProxy
from metadata_relay.metadata.routes import Resolved, is_proxy_path
from metadata_relay.observability import HTTP_LATENCY, HTTP_REQUESTS

# lifespan-state keys: the proxy (set by the app's lifespan) and the shared HitAnswers (set by
# the gateway when the lifespan starts); uvicorn hands the same dict to its protocols
STATE_KEY = "metadata_proxy"
HITS_KEY = "metadata_hits"
RESOLVED_MAX = 4096  # remembered (path, query) → route resolutions
REQUEST_ID_MAX = 128
_X_CACHE = {c: c.encode() for c in ("HIT", "MISS", "STALE")}
# a client's x-request-id is echoed only if it is printable ASCII or tab (a control byte would
# make the response header invalid: uvicorn refuses to send it and drops the connection)
_REQUEST_ID_OK = re.compile(rb"[\t\x20-\x7e]{1,%d}" % REQUEST_ID_MAX)
_CORS_BLOCK = b"".join(b"%s: %s\r\n" % h for h in CORS_HEADERS)


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
    """The request headers the proxy's answers depend on (last occurrence wins)."""

    request_id: bytes | None = None
    if_none_match: bytes | None = None
    accept_encoding: bytes | None = None

    @classmethod
    def scan(cls, headers: Any) -> RequestHeaders:
        """From ASGI-style ``(lowercase name, value)`` pairs."""
        rid = inm = accept = None
        for name, value in headers:
            if name == b"x-request-id":
                rid = value
            elif name == b"if-none-match":
                inm = value
            elif name == b"accept-encoding":
                accept = value
        return cls(rid, inm, accept)


class _Pending:
    """Deferred observations of one (route, status class): a count, a latency sum and the
    histogram's bucket counts. Flushing writes the histogram's own bucket and sum values:
    prometheus_client has no public call to add n observations at once (the unit tests
    compare a flush with the same observations made through ``observe``)."""

    __slots__ = ("bounds", "buckets", "count", "counter", "histogram", "total")

    def __init__(self, children: tuple[Any, Any]) -> None:
        self.counter, self.histogram = children
        self.bounds: list[float] = list(self.histogram._upper_bounds)
        self.buckets = [0] * len(self.bounds)
        self.count = 0
        self.total = 0.0

    def flush(self) -> None:
        self.counter.inc(self.count)
        self.histogram._sum.inc(self.total)
        for i, n in enumerate(self.buckets):
            if n:
                self.histogram._buckets[i].inc(n)
                self.buckets[i] = 0
        self.count = 0
        self.total = 0.0


class HitAnswers:
    """Per-process state of the proxy's answers: resolution memo, metric children, request-id
    counter. One instance is shared by the gateway and the fast path."""

    def __init__(self) -> None:
        # metric children per (route, status class): labels() costs more than the increment
        self._metrics: dict[tuple[str, int], tuple[Any, Any]] = {}
        # route match + forwarded params + cache key per (path, query string): hot keys repeat
        self._resolved: dict[tuple[str, bytes], Resolved] = {}
        # request ids: a random per-process prefix and a counter (unique, cheap)
        self._rid_prefix = secrets.token_hex(4).encode() + b"-"
        self._rid_counter = itertools.count(1)
        # observations recorded by the fast path, not yet in the Prometheus children
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._dirty = False

    def resolve(self, path: str, qs: bytes) -> Resolved:
        """Route, forwarded params and cache key for a proxy path, or None (→ 404)."""
        cache_id = (path, qs)
        resolved = self._resolved.get(cache_id, False)
        if resolved is not False:
            return resolved  # type: ignore[return-value]
        resolved = routes.resolve(path, qs)
        if len(self._resolved) >= RESOLVED_MAX:
            self._resolved.clear()
        self._resolved[cache_id] = resolved
        return resolved

    def request_id(self, given: bytes | None) -> bytes:
        """The client's id when it is usable, else a fresh one."""
        if given is not None and _REQUEST_ID_OK.fullmatch(given):
            return bytes(given)
        return b"%s%x" % (self._rid_prefix, next(self._rid_counter))

    def _children(self, label: str, status: int) -> tuple[Any, Any]:
        children = self._metrics.get((label, status // 100))
        if children is None:
            children = (HTTP_REQUESTS.labels(label, f"{status // 100}xx"),
                        HTTP_LATENCY.labels(label))
            self._metrics[(label, status // 100)] = children
        return children

    def observe(self, label: str, status: int, started: float) -> None:
        children = self._children(label, status)
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    def record(self, label: str, status: int, started: float) -> bool:
        """:meth:`observe`, deferred: kept in plain numbers until :meth:`flush` adds them to
        the same Prometheus children (a counter ``inc`` and a histogram ``observe`` take a
        lock each and cost more than the rest of a fast hit's bookkeeping). Returns True when
        this is the first record since the last flush (the caller schedules one)."""
        seconds = time.perf_counter() - started
        key = (label, status // 100)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(self._children(label, status))
        pending.count += 1
        pending.total += seconds
        pending.buckets[bisect.bisect_left(pending.bounds, seconds)] += 1
        first = not self._dirty
        self._dirty = True
        return first

    def flush(self) -> None:
        """Add every deferred :meth:`record` to its Prometheus children."""
        self._dirty = False
        for pending in self._pending.values():
            if pending.count:
                pending.flush()

    def fresh(self, proxy: MetadataProxy, method: str, path: str, qs: bytes,
              rid: bytes | None, inm: bytes | None, accept: bytes | None
              ) -> tuple[int, bytes, bytes, bytes, str] | None:
        """A fresh memory-tier hit for a GET/HEAD, counted as a hit and as a fast-path hit;
        None for anything else (the caller hands the request to the gateway).

        ``rid``, ``inm``, ``accept``: the request's x-request-id, if-none-match and
        accept-encoding. Returns ``(status, entry header lines, per-request header lines,
        body, route label)``: the headers :func:`entry_headers` gives the gateway, in its
        order, rendered ``name: value\\r\\n``; the body is empty for HEAD and 304."""
        if method != "GET" and method != "HEAD":
            return None
        if not is_proxy_path(path):
            return None
        resolved = self.resolve(path, qs)
        if resolved is None:
            return None
        now = time.time()
        entry = proxy.fresh_hit(resolved[2], now)
        if entry is None:
            return None
        proxy.fast_hits += 1
        common = b"x-cache: HIT\r\nage: %d\r\ncache-control: public, max-age=%d\r\n" \
                 b"x-request-id: %s\r\n%s" % (max(int(now - entry.stored_at), 0),
                                               max(int(entry.expires_at - now), 0),
                                               self.request_id(rid), _CORS_BLOCK)
        label = resolved[0].route.template
        if inm is not None and etag_matches(inm, entry.etag):
            return 304, entry.etag_block(), common, b"", label
        gzipped = entry.gzip_body is not None and accept is not None and accepts_gzip(accept)
        if method == "HEAD":
            body = b""
        elif gzipped and entry.gzip_body is not None:
            body = entry.gzip_body
        else:
            body = entry.body
        return entry.status, entry.static_block(gzipped), common, body, label


def entry_headers(entry: Entry, cache: str, now: float, rid: bytes, req: RequestHeaders
                  ) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    """Status, headers and whether the body is gzipped for an answer from a cache entry
    (the gateway's form of what :meth:`HitAnswers.fresh` renders)."""
    age = max(int(now - entry.stored_at), 0)
    remaining = max(int(entry.expires_at - now), 0)
    common = [
        (b"x-cache", _X_CACHE[cache]),
        (b"age", str(age).encode()),
        (b"cache-control", b"public, max-age=%d" % remaining),
        (b"x-request-id", rid),
        *CORS_HEADERS,
    ]
    if req.if_none_match is not None and etag_matches(req.if_none_match, entry.etag):
        return 304, [(b"etag", entry.etag.encode()), *common], False
    gzipped = (entry.gzip_body is not None and req.accept_encoding is not None
               and accepts_gzip(req.accept_encoding))
    return entry.status, [*entry.static_headers(gzipped), *common], gzipped
