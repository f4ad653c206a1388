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

Everything else (handshake, ping/pong, close, frame parsing, ``ws_max_size``) is uvicorn's and
``websockets``' unchanged. An app that ignores the extension sees plain ASGI, and the relay
falls back to plain ASGI on any other server.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

DIRECT = "metadata_relay.direct"

_OPEN = State.OPEN
_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


class DirectChannel(Protocol):
    def attach(self, sink: Callable[[str], bool]) -> None: ...

    def write_text(self, text: str) -> bool: ...


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """``uvicorn.Config(ws=RelayWebSocketProtocol)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink: Callable[[str], bool] | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake was accepted (101): the app task starts next
            scope["extensions"][DIRECT] = self

    # --- DirectChannel --------------------------------------------------------------------

    def attach(self, sink: Callable[[str], bool]) -> None:
        self.sink = sink

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
