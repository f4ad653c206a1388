"""uvicorn's ``websockets-sansio`` WebSocket protocol plus a synchronous lane for relay frames.

Plain ASGI costs a relayed frame an ``asyncio.Queue`` hand-off, a task wake-up, a
pause/resume of reading, and on the way out a writer task and two awaited ``send`` layers.
At 10,000 frames/s that overhead is most of the relay's CPU (BENCHMARKS.md, W1). This subclass
offers the app an ASGI extension, :data:`DIRECT`, whose value is the protocol itself
(:class:`DirectChannel`):

* ``attach(sink)``: every complete text frame is first offered to ``sink(text)``, called
  synchronously from ``data_received``, but only while nothing is waiting in the ASGI receive
  queue (order is kept). ``sink`` returns False to decline; the frame then goes through the
  ASGI queue as usual.
* ``write_text(text)``: writes a text frame now if the connection is open and the transport
  is not paused for back-pressure; False otherwise (the caller queues and awaits ``send``).

Once a sink is attached and the ``websockets`` parser sits at a frame boundary, incoming bytes
are split into frames here: a complete, unfragmented, uncompressed, masked text frame within
``ws_max_size`` is unmasked and dispatched directly; any other complete frame (ping, pong,
close, permessage-deflate or binary messages, bad RSV bits or opcodes) is fed whole to
``websockets``, which handles it and stays at a frame boundary; fragments, unmasked or
oversized frames and a closing connection hand the rest of the stream back to ``websockets``
for good. So its checks and close codes apply unchanged.
Handshake, close and ``ws_max_size`` are uvicorn's and ``websockets``' as before. An app that
ignores the extension sees plain ASGI, and the relay falls back to plain ASGI on any other
server.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

DIRECT = "metadata_relay.direct"
MAX_MESSAGE_BYTES = 64 * 1024
"""Largest WebSocket message (spec: bigger frames close the socket with 1009)."""

_OPEN = State.OPEN
_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


class DirectChannel(Protocol):
    def attach(self, sink: Callable[[str], bool]) -> None: ...

    def write_text(self, text: str) -> bool: ...

    @property
    def own_reader(self) -> bool: ...


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """``uvicorn.Config(ws=RelayWebSocketProtocol)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink: Callable[[str], bool] | None = None
        # None: websockets parses everything; a bytearray: our frame reader's buffer
        self.inbuf: bytearray | None = None
        self.max_frame = self.config.ws_max_size

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake was accepted (101): the app task starts next
            scope["extensions"][DIRECT] = self

    # --- DirectChannel --------------------------------------------------------------------

    def attach(self, sink: Callable[[str], bool]) -> None:
        self.sink = sink

    @property
    def own_reader(self) -> bool:
        """True while frames are split here rather than by ``websockets`` (``/stats``)."""
        return self.inbuf is not None

    def write_text(self, text: str) -> bool:
        if (self.close_sent or self.disconnected or self.conn.state is not _OPEN
                or not self.writable.is_set()):
            return False
        # A server frame: FIN + text opcode, unmasked (what ``conn.send_text`` would build).
        data = text.encode()
        n = len(data)
        if n < 126:
            head = bytes((0x81, n))
        elif n < 65536:
            head = _pack_short(0x81, 126, n)
        else:
            head = _pack_long(0x81, 127, n)
        self.transport.write(head + data)
        return True

    # --- incoming -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buf = self.inbuf
        if buf is None:
            super().data_received(data)
            if self.sink is not None and self._ws_at_frame_boundary():
                self.inbuf = bytearray()
            return
        buf += data
        self._read_frames(buf)

    def _ws_at_frame_boundary(self) -> bool:
        """True when ``websockets`` has consumed whole frames only and waits for the next
        (its parser generator is suspended in ``StreamReader.at_eof`` with an empty buffer).
        Anything else, e.g. another ``websockets`` version, leaves the reader off."""
        conn = self.conn
        if conn.state is not _OPEN or conn.reader.buffer or conn.current_size is not None:
            return False
        gen: Any = conn.parser
        while getattr(gen, "gi_yieldfrom", None) is not None:
            gen = gen.gi_yieldfrom
        code = getattr(gen, "gi_code", None)
        return code is not None and code.co_name == "at_eof"

    def _read_frames(self, buf: bytearray) -> None:
        pos, size, limit = 0, len(buf), self.max_frame
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 6  # 2 + mask key
            if n == 126:
                head = 8
                if size - pos < 8:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
            elif n == 127:
                head = 14
                if size - pos < 14:
                    break
                n = int.from_bytes(buf[pos + 2:pos + 10], "big")
            if (not b1 & 0x80 or not b0 & 0x80 or not b0 & 0x0F or n > limit
                    or self.conn.state is not _OPEN):
                # unmasked, fragmented, continuation, oversized, or closing:
                # websockets parses the rest of the stream (and applies its close codes)
                self.inbuf = None
                super().data_received(bytes(buf[pos:]))
                return
            end = pos + head + n
            if end > size:
                break
            if b0 == 0x81:
                # FIN, no RSV bits, text, masked, within the size limit: dispatched here
                key = bytes(buf[end - n - 4:end - n])
                self.curr_msg_data_type = "text"
                self.frames = [apply_mask(buf[end - n:end], key)]
                pos = end
                self.send_receive_event_to_app()
                continue
            # one whole frame for websockets (ping, pong, close, compressed or binary
            # messages, bad RSV bits or opcodes): its parser ends at a frame boundary again
            self.conn.receive_data(bytes(buf[pos:end]))
            pos = end
            if self.conn.parser_exc is not None:
                self.inbuf = None
                self.handle_parser_exception()
                return
            self.handle_events()
        if pos:
            del buf[:pos]

    def send_receive_event_to_app(self) -> None:
        sink = self.sink
        if (sink is not None and self.curr_msg_data_type == "text" and not self.close_sent
                and self.queue.empty()):
            frames = self.frames
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            try:
                text = data.decode()
            except UnicodeDecodeError:
                pass  # uvicorn's path closes with 1007
            else:
                if sink(text):
                    self.frames = []
                    return
        super().send_receive_event_to_app()
