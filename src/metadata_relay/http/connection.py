"""One connection on the public HTTP listener: every request head is read here (:mod:`.h1`),
slow and oversized clients are cut off, fresh cache hits are answered at once (:mod:`.fastpath`)
and every other request is handed whole to uvicorn's own protocol (``httptools``), which runs
the ASGI app.

``uvicorn.Config(http=...)`` gets a subclass bound to one server (:func:`bind`); uvicorn creates
one per connection with ``config``, ``server_state`` and ``app_state``, which go unchanged to
the inner uvicorn protocol. That protocol is used through the ``asyncio.Protocol`` interface
only, and writes to :class:`InnerTransport` (the real transport, except that reading stays
paused while either side wants it paused, and an upgrade is noticed).

Per connection:

- **Framing.** uvicorn is given exactly the bytes of whole requests: each head once it is
  complete, then the body bytes :class:`~.h1.Body` delimits. Heads :mod:`.h1` refuses are
  answered here (400, 431, 501, 505) and the connection closed, so uvicorn's parser never sees
  a request that could be framed two ways.
- **Order.** A request is answered here only while nothing of the connection is in uvicorn's
  hands (``in_flight == 0``; the app reports each finished request through
  :mod:`.links`) and the transport is not pushing back; otherwise it goes to uvicorn, which
  answers pipelined requests in order. After ``Connection: close``, HTTP/1.0 or an upgrade
  request nothing further is read.
- **Limits** (``ConnectionLimits``, from settings): a head must be complete within
  ``header_timeout`` of its first byte (the first one within ``header_timeout`` of the
  connection; else 408, or a silent close when nothing came), at most ``max_header_bytes``
  (else 431); an idle keep-alive connection is closed after ``idle_timeout``; a body must
  arrive within ``body_timeout`` of its head; a client that stops reading its answers (the
  transport pushes back) is cut off after ``write_timeout`` without progress. uvicorn's own
  keep-alive timer is left out (:mod:`.server`): it would not see the requests answered here.
- **Upgrades.** A WebSocket upgrade goes to uvicorn, which switches the transport to the
  WebSocket protocol (:mod:`.websocket`); from then on this object is out of the way.

Answers given here are not counted in uvicorn's ``limit_max_requests``, and a socket without
IP addresses (which :mod:`.links` cannot key) is left to uvicorn's protocol alone; neither
occurs in the service's configuration.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any, ClassVar, NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from metadata_relay.http.edge import Edge
from metadata_relay.http.fastpath import FastPath
from metadata_relay.http.h1 import (
    Body,
    BodyError,
    HeadError,
    RequestHead,
    check_partial,
    parse_head,
    skip_empty_lines,
)
from metadata_relay.http.links import Links, transport_key

RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST, drops the buffer


def _code(status: int) -> str:
    return "bad_request" if status == 400 else "refused"


class ConnectionLimits(NamedTuple):
    header_timeout: float
    idle_timeout: float
    body_timeout: float
    max_header_bytes: int
    write_timeout: float


class InnerTransport(asyncio.Transport):
    """The transport the inner uvicorn protocol (and, after an upgrade, the WebSocket
    protocol) is given: the real one, with reading paused while either this connection or
    the inner protocol wants it paused, and :meth:`set_protocol` reported to the connection."""

    def __init__(self, real: asyncio.Transport, connection: HttpConnection) -> None:
        super().__init__()
        self.real = real
        self._connection: HttpConnection | None = connection
        self.muted = False  # the connection answers for itself now: uvicorn's output is dropped
        self._inner_paused = False
        self._held = False
        self._paused = False

    def _apply(self) -> None:
        want = self._inner_paused or self._held
        if want != self._paused and not self.real.is_closing():
            self._paused = want
            if want:
                self.real.pause_reading()
            else:
                self.real.resume_reading()

    def hold(self, held: bool) -> None:
        """The connection's own side of the read pause."""
        self._held = held
        self._apply()

    # asyncio.ReadTransport
    def pause_reading(self) -> None:
        self._inner_paused = True
        self._apply()

    def resume_reading(self) -> None:
        self._inner_paused = False
        self._apply()

    def is_reading(self) -> bool:
        return self.real.is_reading()

    # asyncio.WriteTransport
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.muted:
            self.real.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if not self.muted:
            self.real.writelines(list_of_data)

    def write_eof(self) -> None:
        self.real.write_eof()

    def can_write_eof(self) -> bool:
        return self.real.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self.real.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.real.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.real.set_write_buffer_limits(high, low)

    def abort(self) -> None:
        self.real.abort()

    # asyncio.BaseTransport
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.real.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.real.is_closing()

    def close(self) -> None:
        self.real.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.real.set_protocol(protocol)
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.upgraded()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.real.get_protocol()


def real_transport(transport: asyncio.BaseTransport) -> asyncio.BaseTransport:
    """The socket's own transport behind an :class:`InnerTransport` (for the WebSocket
    protocol an upgrade hands it)."""
    return transport.real if isinstance(transport, InnerTransport) else transport


class HttpConnection(asyncio.Protocol):
    """``uvicorn.Config(http=bind(...))``: one per connection."""

    fast: ClassVar[FastPath | None] = None
    edge: ClassVar[Edge]
    links: ClassVar[Links]
    limits: ClassVar[ConnectionLimits]

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = _loop or asyncio.get_event_loop()
        self.inner = HttpToolsProtocol(config=config, server_state=server_state,
                                       app_state=app_state, _loop=_loop)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.wire: InnerTransport = None  # type: ignore[assignment]
        self.key: Any = None
        self.buf = bytearray()  # a partial head (or one held back), at a request boundary
        self.scanned = 0  # bytes of buf known not to hold the end of the head
        self.line_ok = False  # the partial head's request line is complete and valid
        self.body: Body | None = None  # the body being handed to uvicorn
        self.handed = 0  # requests handed to uvicorn
        self.answers_started = 0  # of those, answers the app has started
        self.in_flight = 0  # requests handed to uvicorn whose answer is not complete
        self.last = False  # a request after which nothing more is read went to uvicorn
        self.failed = False  # the app did not complete an answer: uvicorn ends the connection
        self.detached = False  # upgraded: the transport belongs to another protocol
        self.passthrough = False  # uvicorn's protocol alone (a non-IP socket)
        self.eof = False
        self.holding = False  # a head waits for the answers before it (reading paused)
        self.write_paused = False
        self.write_stall: asyncio.TimerHandle | None = None
        self.head_deadline: float | None = None
        self.body_deadline = 0.0
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.wire = InnerTransport(self.transport, self)
        self.inner.connection_made(self.wire)
        self.key = transport_key(transport)
        if self.key is None:  # not an IP socket: the app cannot report back; uvicorn alone
            self.passthrough = True
            return
        self.links.add(self.key, self)
        self.head_deadline = self.loop.time() + self.limits.header_timeout
        self._schedule()

    def data_received(self, data: bytes) -> None:
        if self.passthrough:
            self.inner.data_received(data)
            return
        if self.detached:  # pragma: no cover - the transport calls the new protocol
            return
        buf = self.buf
        if buf:  # a partial head (or a held one) came before
            buf += data
            if self.holding:
                return  # reading is paused; processed once the answers before are out
            if buf.find(b"\r\n\r\n", max(self.scanned - 3, 0)) < 0:
                self.scanned = len(buf)
                self._partial()
                self._schedule()
                return
            data = bytes(buf)
            buf.clear()
        self._process(data)
        if self.buf or self.body is not None or self.in_flight or self.detached or (
                self.head_deadline is not None):
            if not self.detached:
                self._schedule()
            return
        # idle between requests (the fast path's usual state): _schedule's last case, inline
        deadline = self.deadline = self.loop.time() + self.limits.idle_timeout
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline

    def eof_received(self) -> bool | None:
        self.inner.eof_received()
        if self.passthrough:
            return None
        self.eof = True
        # answers still being made for what was read are written before the close
        return True if self.in_flight and not self.failed else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._cancel_write_stall()
        self.links.drop(self.key, self)
        self.buf.clear()
        # always None: only then does uvicorn's protocol cancel its keep-alive timer (set far
        # out, see server.py), which would otherwise keep a reset connection's objects alive
        self.inner.connection_lost(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.write_stall is None and not self.passthrough:
            self.write_stall = self.loop.call_later(self.limits.write_timeout, self._stalled)
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._cancel_write_stall()
        self.inner.resume_writing()

    def _stalled(self) -> None:
        """The client has read nothing of its answers for ``write_timeout``: reset the
        connection (a close would leave the kernel holding the answers it does not read,
        waiting for it to read them)."""
        self.write_stall = None
        if self.write_paused and not self.detached:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
            self.transport.abort()

    def _cancel_write_stall(self) -> None:
        if self.write_stall is not None:
            self.write_stall.cancel()
            self.write_stall = None

    # --- the requests -----------------------------------------------------------------------

    def _process(self, data: bytes) -> None:
        """Everything in ``data`` (which starts at a request boundary or in a body being
        handed to uvicorn); a partial head is kept in ``self.buf``."""
        pos, size = 0, len(data)
        transport = self.transport
        max_head = self.limits.max_header_bytes
        while pos < size:
            body = self.body
            if transport.is_closing():
                return
            if body is not None:
                try:
                    n = body.take(data, pos)
                except BodyError:
                    self._abandon(400, "bad_request", "Malformed chunked body")
                    return
                self.inner.data_received(data if n == size else data[pos:pos + n])
                pos += n
                if not body.done:
                    return
                self.body = None
                continue
            if self.last or self.failed:
                return  # nothing after a request that ends the connection is read
            if data[pos] == 13:  # empty lines (CRLF) before a request line
                while data.startswith(b"\r\n", pos):
                    pos += 2
                    if self.head_deadline is None:
                        self.head_deadline = self.loop.time() + self.limits.header_timeout
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                if pos < size:
                    self.buf += data[pos:] if pos else data
                    self.scanned = len(self.buf)
                    self.line_ok = False
                    self._partial()
                return
            if end + 4 - pos > max_head:
                self._refuse(data, pos, 431, "headers_too_large",
                             f"Request head over {max_head} bytes")
                return
            try:
                head = parse_head(data[pos:end])
            except HeadError as exc:
                self._refuse(data, pos, exc.status, _code(exc.status), exc.message)
                return
            self.head_deadline = None
            if not self.in_flight and not self.write_paused and self.fast is not None:
                answer = self.fast.answer(head)
                if answer is not None:
                    pos = end + 4
                    if answer[1]:
                        transport.writelines(answer)  # two buffers, one writev
                    else:
                        transport.write(answer[0])
                    if not head.keep_alive:
                        transport.close()
                        return
                    continue
            if head.upgrade is not None and self.in_flight:
                self._hold(data, pos)  # upgraded only once the answers before it are out
                return
            self._to_uvicorn(head, data[pos:end + 4])
            pos = end + 4
            if self.detached:
                if pos < size:  # bytes after the upgrade request belong to the new protocol
                    transport.get_protocol().data_received(  # type: ignore[attr-defined]
                        data[pos:])
                return

    def _partial(self) -> None:
        """A head is incomplete in ``self.buf``: refuse it as soon as it is too big or cannot
        become valid."""
        buf = self.buf
        start = skip_empty_lines(buf)
        if len(buf) - start > self.limits.max_header_bytes:
            self._refuse(b"", 0, 431, "headers_too_large",
                         f"Request head over {self.limits.max_header_bytes} bytes")
            return
        if not self.line_ok:
            try:
                self.line_ok = check_partial(buf, start)
            except HeadError as exc:
                self._refuse(b"", 0, exc.status, _code(exc.status), exc.message)

    def _to_uvicorn(self, head: RequestHead, raw: bytes) -> None:
        self.handed += 1
        self.in_flight += 1
        if not head.keep_alive or head.upgrade is not None:
            self.last = True
        if head.length:
            self.body = Body(head.length, self.limits.max_header_bytes)
            self.body_deadline = self.loop.time() + self.limits.body_timeout
        self.inner.data_received(raw)

    def _hold(self, data: bytes, pos: int) -> None:
        """Keep what is left of ``data`` until the answers before it are out."""
        if pos < len(data):
            self.buf += data[pos:]
        self.holding = True
        self.wire.hold(True)

    def _refuse(self, data: bytes, pos: int, status: int, code: str, message: str) -> None:
        """Answer a head refused here and close; after the answers before it, if any."""
        if self.in_flight:
            self._hold(data, pos)
            return
        self._write_refusal(status, code, message)

    def _write_refusal(self, status: int, code: str, message: str) -> None:
        self.transport.write(self.edge.refusal(status, code, message, time.perf_counter()))
        self.transport.close()
        self.buf.clear()

    def _abandon(self, status: int, code: str, message: str) -> None:
        """Give up on the request whose body uvicorn is being handed: answer it here if the
        app has not started to (and nothing before it is pending), and close; what uvicorn
        would still write is dropped."""
        self.wire.muted = True
        self.body = None
        if self.in_flight == 1 and self.answers_started < self.handed:
            self._write_refusal(status, code, message)
        else:
            self.transport.close()

    # --- what the app and the transport report ---------------------------------------------

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's call for a request of this connection (via :mod:`.links`): its answer
        is complete once the last body message went through uvicorn's ``send``."""
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        complete = False

        async def watched(message: Message) -> None:
            nonlocal complete
            kind = message["type"]
            if kind == "http.response.start":
                self.answers_started += 1
            await send(message)
            if kind == "http.response.body" and not message.get("more_body"):
                complete = True

        try:
            await app(scope, receive, watched)
        finally:
            # now, not call_soon: the client may have the answer and send its next request
            # before a callback would run
            self._finished(complete)

    def _finished(self, complete: bool) -> None:
        self.in_flight -= 1
        if not complete:
            self.failed = True  # uvicorn answers 500 or closes
            return
        if self.in_flight or self.transport.is_closing() or self.detached:
            return
        if self.eof or self.last:
            self.transport.close()  # nothing more is read on this connection
            return
        if self.holding:
            self.holding = False
            self.wire.hold(False)
            data = bytes(self.buf)
            self.buf.clear()
            self._process(data)
        self._schedule()

    def upgraded(self) -> None:
        """uvicorn switched the transport to its WebSocket protocol."""
        self.detached = True
        self._cancel_timer()
        self.links.drop(self.key, self)

    # --- timeouts ---------------------------------------------------------------------------

    def _schedule(self) -> None:
        """The deadline for what the connection waits on now."""
        if self.transport.is_closing():
            self._cancel_timer()
            return
        limits = self.limits
        if self.body is not None:
            deadline: float | None = self.body_deadline
        elif self.buf and not (self.holding or self.last or self.failed):
            if self.head_deadline is None:  # the first bytes of a head
                self.head_deadline = self.loop.time() + limits.header_timeout
            deadline = self.head_deadline
        elif self.in_flight:
            deadline = None  # the application's turn
        elif self.head_deadline is not None:
            deadline = self.head_deadline  # the connection's first request
        else:
            deadline = self.loop.time() + limits.idle_timeout
        self.deadline = deadline
        if deadline is not None and (self.timer is None or deadline < self.timer_at):
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline

    def _on_timer(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.detached or self.transport.is_closing():
            return
        if self.loop.time() < deadline:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline
            return
        if self.body is not None:
            self._abandon(408, "request_timeout", "Request body not received in time")
        elif self.buf and not self.in_flight:
            self._write_refusal(408, "request_timeout", "Request head not received in time")
        else:
            self.transport.close()  # idle or silent

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.deadline = None


def bind(fast: FastPath | None, edge: Edge, links: Links,
         limits: ConnectionLimits) -> type[HttpConnection]:
    """The protocol class for one server: its fast path, edge, links and limits."""

    class BoundHttpConnection(HttpConnection):
        pass

    BoundHttpConnection.fast = fast
    BoundHttpConnection.edge = edge
    BoundHttpConnection.links = links
    BoundHttpConnection.limits = limits
    return BoundHttpConnection
