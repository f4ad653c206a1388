"""uvicorn's httptools HTTP/1.1 protocol, with fresh proxy-cache hits answered before ASGI.

A cache hit through ASGI costs uvicorn a scope, a request/response cycle, a task, two ``send``
awaits and a validation pass over every header; that server layer, not the lookup, is most of
the hit's CPU (BENCHMARKS.md, P1). :class:`FastPathProtocol` asks the proxy's sans-I/O
:meth:`HitAnswers.fresh <metadata_relay.metadata.hits.HitAnswers.fresh>` once a request's
headers are in, and when it gets a fresh hit writes the response with one ``transport.write``:
uvicorn's status line and default headers (date, server) + the answer's header lines +
``connection: close`` where uvicorn would add it + the body. Everything else goes down uvicorn's
normal path, unchanged:

- anything but a complete, body-less GET/HEAD on a proxy path that is a fresh memory hit
  (misses, stale entries, 404/405, OPTIONS, ``Content-Length``/``Transfer-Encoding``,
  ``Expect``, ``Upgrade``, URLs that are not ASCII);
- any request behind one still in the ASGI path on the same connection (pipelined answers
  stay in order), and any request while the transport's write buffer is over its high-water
  mark (uvicorn's ``send`` waits for the drain; a write here could not).

After an answer that closes the connection (``Connection: close``, HTTP/1.0) the parser
ignores whatever else the client sent, on either path (uvicorn's ``lenient_data_after_close``).
Access logging, ``limit_concurrency``, ``total_requests`` (for
``limit_max_requests``) and the keep-alive timeout behave as on uvicorn's path.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState

from metadata_relay.metadata.hits import HITS_KEY, STATE_KEY

_CLOSE = b"connection: close\r\n"
# request headers that send a request down the ASGI path (a body, or more than a plain GET)
_NOT_FAST = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))
TARGETS_MAX = 4096  # remembered request targets → (path, query string)
_targets: dict[bytes, tuple[str, bytes] | None] = {}


def split_target(url: bytes, root_path: str) -> tuple[str, bytes] | None:
    """``scope["path"]`` and ``scope["query_string"]`` as uvicorn's httptools protocol derives
    them from the request target (memoised: clients repeat their targets), or None for a
    target uvicorn's path must answer (not ASCII, no path, unparseable)."""
    if url in _targets:
        split = _targets[url]
    else:
        try:
            parsed = httptools.parse_url(url)
            path = parsed.path.decode("ascii")  # None for "http://host": uvicorn fails it too
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError, AttributeError):
            split = None
        else:
            if "%" in path:
                path = urllib.parse.unquote(path)
            split = (path, parsed.query or b"")
        if len(_targets) >= TARGETS_MAX:
            _targets.clear()
        _targets[url] = split
    if split is None or not root_path:
        return split
    return root_path + split[0], split[1]


class _DefaultHeaders:
    """uvicorn's default headers (date, server) rendered once per list: the server replaces
    the list every second to update the date."""

    __slots__ = ("block", "source")

    def __init__(self) -> None:
        self.source: list[tuple[bytes, bytes]] | None = None
        self.block = b""

    def render(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        if headers is not self.source:
            self.block = b"".join(b"%s: %s\r\n" % (n.lower(), v) for n, v in headers)
            self.source = headers
        return self.block


_DEFAULTS = _DefaultHeaders()
# head, body, keep-alive, status, route label, started
Pending = tuple[bytes, bytes, bool, int, str, float]


class FastPathProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=FastPathProtocol)``: httptools with the proxy's fast hits."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # the answer decided in on_headers_complete, written in on_message_complete
        self._pending: Pending | None = None
        self._answered = False  # a fast answer was written during this data_received
        # keep-alive after fast answers: one timer per connection, pushed forward by a
        # deadline instead of a call_later + cancel per request (uvicorn's own timer still
        # covers answers from its path). None: data arrived since the last fast answer, so
        # (as in uvicorn, which cancels its timer on any data) no idle timeout runs.
        self._idle_deadline: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    # --- the connection ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._idle_deadline = None
        self._answered = False
        super().data_received(data)
        if self._answered:
            self._answered = False
            cycle = self.cycle
            if ((cycle is None or cycle.response_complete) and not self.pipeline
                    and not self.transport.is_closing()):
                # idle again after a fast answer: as on_response_complete arms uvicorn's timer
                self._idle_deadline = deadline = self.loop.time() + self.timeout_keep_alive
                if self._idle_timer is None:
                    self._idle_timer = self.loop.call_at(deadline, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        deadline = self._idle_deadline
        if deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < deadline:
            self._idle_timer = self.loop.call_at(deadline, self._idle_check)
            return
        self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super().connection_lost(exc)

    # --- the parser's callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        # uvicorn's per-request reset without the ASGI scope, which only requests that go
        # down uvicorn's path need (built by _begin_asgi once the headers are in)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _begin_asgi(self) -> None:
        """uvicorn's own on_message_begin (scope included) for a request parsed up to the
        end of its headers: what it parsed so far is kept."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.expect_100_continue = url, expect
        self.headers.extend(headers)  # the list the new scope holds

    def on_headers_complete(self) -> None:
        pending = self._fast_answer(time.perf_counter())
        if pending is None:
            self._begin_asgi()
            super().on_headers_complete()
        else:
            self._pending = pending

    def on_message_complete(self) -> None:
        pending = self._pending
        if pending is None:
            super().on_message_complete()
            return
        self._pending = None
        head, body, keep_alive, status, label, started = pending
        if body:
            # two buffers, one writev: no copy of the body into a joined response
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)
        self.server_state.total_requests += 1
        if keep_alive:
            self._answered = True
        else:
            self.transport.close()
        answers = self.app_state[HITS_KEY]
        if answers.record(label, status, started):
            self.loop.call_soon(answers.flush)  # once per loop iteration, not per hit

    # --- the decision ----------------------------------------------------------------------

    def _fast_answer(self, started: float) -> Pending | None:
        """The framed response for a fresh hit, or None for uvicorn's normal path."""
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            return None  # an earlier request on this connection is still in the ASGI path
        if self.flow.write_paused or self.transport.is_closing():
            return None
        state = self.app_state
        answers = state.get(HITS_KEY)
        proxy = state.get(STATE_KEY)
        if answers is None or proxy is None:
            return None
        parser = self.parser
        method = parser.get_method()
        if (method != b"GET" and method != b"HEAD") or parser.should_upgrade():
            return None
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency
            or len(self.tasks) >= self.limit_concurrency
        ):
            return None  # uvicorn's path answers 503
        # hits.RequestHeaders.scan's three headers plus this path's exclusions, in one pass
        rid = inm = accept = None
        connection = False
        for name, value in self.headers:
            if name == b"x-request-id":
                rid = value
            elif name == b"if-none-match":
                inm = value
            elif name == b"accept-encoding":
                accept = value
            elif name == b"connection":
                connection = True
            elif name in _NOT_FAST:
                return None
        split = split_target(self.url, self.root_path)
        if split is None:
            return None
        path, qs = split
        method_name = "GET" if method == b"GET" else "HEAD"
        hit = answers.fresh(proxy, method_name, path, qs, rid, inm, accept)
        if hit is None:
            return None
        status, entry_lines, request_lines, body, label = hit
        # uvicorn: keep-alive unless HTTP/1.0 or the parser says close; HTTP/1.0 is only
        # keep-alive by the parser's reckoning with a Connection header
        keep_alive = parser.should_keep_alive()
        if keep_alive and connection:
            keep_alive = parser.get_http_version() != "1.0"
        head = b"".join((STATUS_LINE[status], _DEFAULTS.render(self.server_state.default_headers),
                         entry_lines, request_lines, b"\r\n" if keep_alive else _CLOSE + b"\r\n"))
        if self.access_log:
            self._log_access(method_name, path, qs, status)
        return head, body, keep_alive, status, label, started

    def _log_access(self, method: str, path: str, qs: bytes, status: int) -> None:
        """The line uvicorn's access logger writes for an answer from its path."""
        self._begin_asgi()
        scope = self.scope
        http_version = self.parser.get_http_version()
        scope["method"] = method
        scope["http_version"] = http_version
        scope["path"] = path
        scope["query_string"] = qs
        self.access_logger.info('%s - "%s %s HTTP/%s" %d', get_client_addr(scope), method,
                                get_path_with_query_string(scope), http_version, status)
