"""WebSockets on the listener: uvicorn's ``websockets-sansio`` protocol, with a synchronous
lane for relay frames in front of it.

Plain ASGI costs a relayed frame an ``asyncio.Queue`` hand-off, a task wake-up, a pause/resume
of reading, and on the way out a writer task and two awaited ``send`` layers. At 10,000
frames/s that overhead is most of the relay's CPU (BENCHMARKS.md, W1). So the app is offered an
ASGI extension, :data:`DIRECT`, whose value is this protocol (:class:`DirectChannel`):

* ``attach(sink)``: every complete text frame is first offered to ``sink(text)``, called
  synchronously from ``data_received``, but only while every message handed to the ASGI path
  has been received by the app (order is kept). ``sink`` returns False to decline; the frame
  then goes through the ASGI path as usual.
* ``write_text(text)``: writes a text frame now if the socket is accepted and open and the
  transport is not pushing back; False otherwise (the caller queues and awaits ``send``).
* ``own_reader``: True while frames are split here (``/stats``).

How, using uvicorn's protocol through the ``asyncio.Protocol`` interface only: the opening
handshake goes to it as received; after that, the bytes are split into frames here
(:mod:`.wsframes`). A complete, unfragmented, uncompressed, masked text frame within the size
limit is unmasked and offered to the sink; every other frame (ping, pong, close, compressed,
binary or fragmented messages, bad RSV bits or opcodes, a declined or non-UTF-8 text frame) is
given whole to uvicorn's protocol, whose ``websockets`` parser so always starts at a frame
boundary and applies its checks and close codes unchanged. An unmasked or oversized frame
hands it the rest of the stream for good. The count of data messages given to it, against the
count the app has received (counted in :meth:`RelayWebSocketProtocol.serve`, reached through
:mod:`.links`), is the state that keeps a frame from overtaking one still queued for the app.
An app that ignores the extension sees plain ASGI, and the relay falls back to plain ASGI on
any other server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from metadata_relay.http.connection import real_transport
from metadata_relay.http.links import Links, transport_key
from metadata_relay.http.wsframes import (
    FIN_TEXT,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_TEXT,
    frame_at,
    text_frame,
    unmasked,
)

DIRECT = "metadata_relay.direct"
MAX_MESSAGE_BYTES = 64 * 1024
"""Largest WebSocket message (spec: bigger frames close the socket with 1009)."""
HANDSHAKE_MAX = 64 * 1024

_HANDSHAKE, _FRAMES, _PASSTHROUGH = range(3)


class DirectChannel(Protocol):
    def attach(self, sink: Callable[[str], bool]) -> None: ...

    def write_text(self, text: str) -> bool: ...

    @property
    def own_reader(self) -> bool: ...


class RelayWebSocketProtocol(asyncio.Protocol):
    """``uvicorn.Config(ws=bind(...))``: one per upgraded connection."""

    links: ClassVar[Links | None] = None
    max_size: ClassVar[int] = MAX_MESSAGE_BYTES

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.inner = WebSocketsSansIOProtocol(config=config, server_state=server_state,
                                              app_state=app_state, _loop=_loop)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.key: Any = None
        self.buf = bytearray()
        self.mode = _HANDSHAKE
        self.sink: Callable[[str], bool] | None = None
        self.fed = 0  # data messages given to uvicorn's protocol
        self.delivered = 0  # of those, received by the app
        self.fragmented = False  # a fragmented message is being given to uvicorn's protocol
        self.closing = False  # the client's close frame was read
        self.accepted = False  # the app accepted the socket (the 101 is out)
        self.app_closed = False  # the app sent websocket.close
        self.disconnected = False
        self.writable = True

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        real: Any = real_transport(transport)
        self.transport = real
        self.inner.connection_made(real)
        self.key = transport_key(real)
        if self.links is not None:
            self.links.add(self.key, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        if self.links is not None:
            self.links.drop(self.key, self)
        self.buf.clear()
        self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        self.inner.eof_received()
        return None  # the transport closes (as uvicorn's protocol has it)

    def pause_writing(self) -> None:
        self.writable = False
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.writable = True
        self.inner.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.mode == _PASSTHROUGH:
            self.inner.data_received(data)
            return
        buf = self.buf
        buf += data
        if self.mode == _HANDSHAKE:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > HANDSHAKE_MAX:
                    self._passthrough(0)
                return
            head = bytes(buf[:end + 4])
            del buf[:end + 4]
            self.mode = _FRAMES
            self.inner.data_received(head)
            if not buf:
                return
        self._read_frames()

    # --- DirectChannel ----------------------------------------------------------------------

    def attach(self, sink: Callable[[str], bool]) -> None:
        self.sink = sink

    @property
    def own_reader(self) -> bool:
        return self.mode == _FRAMES

    def write_text(self, text: str) -> bool:
        if (not self.accepted or self.app_closed or self.disconnected or not self.writable
                or self.transport.is_closing()):
            return False
        self.transport.write(text_frame(text.encode()))
        return True

    # --- the app's side, through links ------------------------------------------------------

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's call for this socket: offered :data:`DIRECT`; the messages it receives
        are counted, its accept and close noted."""
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        scope = {**scope, "extensions": {**(scope.get("extensions") or {}), DIRECT: self}}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                self.delivered += 1
            return message

        async def watched_send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.close":
                self.app_closed = True
            await send(message)
            if kind == "websocket.accept":
                self.accepted = True

        await app(scope, counted_receive, watched_send)

    # --- frames -----------------------------------------------------------------------------

    def _lane_open(self) -> bool:
        return (self.sink is not None and self.fed == self.delivered and not self.fragmented
                and not self.closing and not self.app_closed
                and not self.transport.is_closing())

    def _read_frames(self) -> None:
        buf = self.buf
        pos = 0
        given = -1  # start of the frames not yet given to uvicorn's protocol
        limit = self.max_size
        while True:
            frame = frame_at(buf, pos)
            if frame is None:
                break
            first, masked, length, payload_at, end = frame
            if not masked or length > limit:
                # websockets reads the rest of the stream (and closes with 1002 / 1009)
                self._passthrough(pos if given < 0 else given)
                return
            if end > len(buf):
                break
            if first == FIN_TEXT and self._lane_open():
                if given >= 0:  # control frames before it go first
                    self.inner.data_received(bytes(buf[given:pos]))
                    given = -1
                sink = self.sink
                if sink is not None and self._lane_open():
                    try:
                        text = unmasked(buf, payload_at, end).decode()
                    except UnicodeDecodeError:
                        pass  # websockets closes with 1007
                    else:
                        if sink(text):
                            pos = end
                            continue
            if given < 0:
                given = pos
            op = first & 0x0F
            if op == OP_TEXT or op == OP_BINARY:
                if first & 0x80:
                    self.fed += 1
                else:
                    self.fragmented = True
            elif op == OP_CONTINUATION:
                if first & 0x80:
                    self.fragmented = False
                    self.fed += 1
            elif op == OP_CLOSE:
                self.closing = True
            pos = end
        if given >= 0:
            self.inner.data_received(bytes(buf[given:pos]))
        if pos:
            del buf[:pos]

    def _passthrough(self, start: int) -> None:
        """uvicorn's protocol parses everything from ``start`` on."""
        rest = bytes(self.buf[start:])
        self.buf.clear()
        self.mode = _PASSTHROUGH
        self.inner.data_received(rest)


def bind(links: Links | None, max_size: int = MAX_MESSAGE_BYTES
         ) -> type[RelayWebSocketProtocol]:
    """The protocol class for one server (``max_size``: uvicorn's ``ws_max_size``)."""

    class BoundRelayWebSocketProtocol(RelayWebSocketProtocol):
        pass

    BoundRelayWebSocketProtocol.links = links
    BoundRelayWebSocketProtocol.max_size = max_size
    return BoundRelayWebSocketProtocol
