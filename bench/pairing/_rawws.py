"""A minimal WebSocket client for the W1 latency load generator (benchmark code, not product).

The ``websockets`` client costs ~60 µs of CPU per message sent or received, which on a 2-core
machine competes with the relay being measured. This client is an ``asyncio.Protocol``: the
opening handshake is a hand-written HTTP/1.1 upgrade, frames are written synchronously with
``transport.write`` (masked with a fresh random key per frame, as RFC 6455 requires), and
received frames are handed to a plain callback. Masking uses ``websockets``' C helper (the
module its own frame code uses) and falls back to the pure-Python ``websockets.utils.apply_mask``
(public: in that module's ``__all__``) when the C module is absent.
It handles what the relay sends (unfragmented text/binary frames, ping, close) and nothing
more.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
from collections.abc import Callable

try:
    from websockets.speedups import apply_mask
except ImportError:  # no C extension on this platform
    from websockets.utils import apply_mask

_getrandbits = random.getrandbits


def frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (FIN set)."""
    n = len(payload)
    key = _getrandbits(32).to_bytes(4, "big")
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + key + apply_mask(payload, key)


def split_frames(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """The complete frames at the front of ``buf`` as (first header byte, payload, unmasked
    if it was masked), and how many bytes they took. Both benchmark ends use it: this client
    (unmasked server frames) and the bare echo server (masked client frames)."""
    frames: list[tuple[int, bytes]] = []
    pos, size = 0, len(buf)
    while size - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        n, at = b1 & 0x7F, pos + 2
        if n == 126:
            if size - pos < 4:
                break
            n, at = (buf[pos + 2] << 8) | buf[pos + 3], pos + 4
        elif n == 127:
            if size - pos < 10:
                break
            n, at = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
        key = b""
        if b1 & 0x80:
            if size - at < 4:
                break
            key, at = bytes(buf[at:at + 4]), at + 4
        if size - at < n:
            break
        payload = bytes(buf[at:at + n])
        frames.append((b0, apply_mask(payload, key) if key else payload))
        pos = at + n
    return frames, pos


class RawWS(asyncio.Protocol):
    """One client connection. ``on_message(payload_bytes)`` gets every text/binary frame
    once set; before that, frames are queued for :meth:`recv`."""

    def __init__(self, host: str, path: str, headers: dict[str, str]) -> None:
        self.transport: asyncio.Transport | None = None
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: "
            f"{base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
        self._buf = bytearray()
        self._open = False
        self._closing = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.on_message: Callable[[bytes], None] | None = None

    @classmethod
    async def connect(cls, host: str, port: int, path: str,
                      headers: dict[str, str] | None = None) -> RawWS:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(
            lambda: cls(f"{host}:{port}", path, headers or {}), host, port)
        await asyncio.wait_for(proto.opened, 60)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(self._request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            del buf[:end + 4]
            self._open = True
            self.opened.set_result(None)
        frames, used = split_frames(buf)
        for b0, payload in frames:
            opcode = b0 & 0x0F
            if opcode in (1, 2):
                if self.on_message is not None:
                    self.on_message(payload)
                else:
                    self.inbox.put_nowait(payload)
            elif opcode == 9:  # ping -> pong
                self.write_frame(0xA, payload)
            elif opcode == 8:  # close -> echo it (unless we started it) and hang up
                if not self._closing:
                    self.write_frame(0x8, payload[:2])
                assert self.transport is not None
                self.transport.close()
        if used:
            del buf[:used]

    def write_frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(frame(opcode, payload))

    def send(self, text: str | bytes) -> None:
        self.write_frame(1, text.encode() if isinstance(text, str) else text)

    async def recv(self, timeout: float = 60) -> bytes:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._closing = True
        self.write_frame(0x8, struct.pack("!H", 1000))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        except TimeoutError:
            self.transport.close()
