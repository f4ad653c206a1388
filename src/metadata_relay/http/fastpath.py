"""Fresh proxy-cache hits answered below ASGI, sans-I/O: a parsed request head in, the whole
answer's bytes out (or None: the request goes to the application).

A cache hit through ASGI costs uvicorn a scope, a request/response cycle, a task, two ``send``
awaits and a validation pass over every header; that server layer, not the lookup, is most of
a hit's CPU (BENCHMARKS.md, P1). The listener (:mod:`.connection`) asks :meth:`FastPath.answer`
for each request it may answer itself (nothing of the connection is in the application's hands)
and writes what it gets with one ``writelines``: the status line and date uvicorn would write,
the entry's and the hit's headers from :mod:`metadata_relay.metadata.hits`, the edge's headers
from :mod:`.edge`, ``connection: close`` where uvicorn would add it, and the body. So the bytes
are the ones the ASGI path sends for the same request (tests/integration/http/test_fastpath.py
compares them).

Only a body-less GET or HEAD without ``Expect`` or an upgrade, on a proxy path whose entry is a
fresh memory hit, is answered here; misses, stale entries, 404/405 and everything else are the
application's.
"""

from __future__ import annotations

import time
import urllib.parse

import httptools

from metadata_relay.http.edge import AFTER_RID, RID_NAME, Edge
from metadata_relay.http.h1 import STATUS_LINES, RequestHead, date_line, status_line
from metadata_relay.metadata.hits import HitAnswers
from metadata_relay.metadata.routes import Resolved, is_proxy_path

TARGETS_MAX, TARGET_MAX_BYTES = 4096, 512  # remembered request targets → resolution
_CLOSE = b"connection: close\r\n\r\n"
_UNSEEN = object()


class FastPath:
    def __init__(self, hits: HitAnswers, edge: Edge) -> None:
        self.hits = hits
        self.edge = edge
        # request target → its resolution (None: not a proxy path, or not one uvicorn could
        # split); clients repeat their targets
        self._targets: dict[bytes, Resolved | None] = {}

    @staticmethod
    def split_target(target: bytes) -> tuple[str, bytes] | None:
        """``scope["path"]`` and ``scope["query_string"]`` as uvicorn derives them from the
        request target, or None when uvicorn could not (then the application's path
        answers)."""
        try:
            parsed = httptools.parse_url(target)
            path = parsed.path.decode("ascii")  # None for "http://host": uvicorn fails it too
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError, AttributeError):
            return None
        if "%" in path:
            path = urllib.parse.unquote(path)
        return path, parsed.query or b""

    def _resolve(self, target: bytes) -> Resolved | None:
        targets = self._targets
        resolved = targets.get(target, _UNSEEN)
        if resolved is not _UNSEEN:
            return resolved  # type: ignore[return-value]
        split = self.split_target(target)
        resolved = None
        if split is not None and is_proxy_path(split[0]):
            resolved = self.hits.resolve(*split)
        if len(target) <= TARGET_MAX_BYTES:
            if len(targets) >= TARGETS_MAX:
                targets.clear()
            targets[target] = resolved
        return resolved

    def answer(self, head: RequestHead) -> tuple[bytes, bytes] | None:
        """(head, body) of the answer to a fresh hit, or None."""
        started = time.perf_counter()
        method = head.method
        if (method != b"GET" and method != b"HEAD") or head.length or head.expect or (
                head.upgrade is not None):
            return None
        resolved = self._resolve(head.target)
        if resolved is None:
            return None
        rid = inm = accept = None
        for name, value in head.headers:
            if name == b"x-request-id":
                rid = value
            elif name == b"if-none-match":
                inm = value
            elif name == b"accept-encoding":
                accept = value
        method_name = "GET" if method == b"GET" else "HEAD"
        hit = self.hits.fresh_resolved(method_name, resolved, inm, accept)
        if hit is None:
            return None
        status, entry_lines, hit_lines, body, label = hit
        edge = self.edge
        rid = edge.request_id(rid)
        answer = b"".join((STATUS_LINES.get(status) or status_line(status), date_line(),
                           entry_lines, hit_lines, RID_NAME, rid, AFTER_RID,
                           b"\r\n" if head.keep_alive else _CLOSE))
        edge.finished(method_name, label, status, started, rid)
        return answer, body
