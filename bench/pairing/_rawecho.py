"""Floor for W1 latency: a bare asyncio WebSocket echo server (uvloop), no framework at all.

``python -m bench.pairing._rawecho PORT``. It answers the opening handshake, unmasks each
client frame (:func:`bench.pairing._rawws.split_frames`) and writes it back unmasked;
ping/pong and close are the minimum a client needs. It parses no JSON and routes nothing, so
its latency is what this machine, the kernel's loopback path and one Python event loop give
at a message rate: the floor under any Python relay measured by the same harness
(bench/pairing/w1.py). Benchmark code only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys

from bench.pairing._rawws import split_frames

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            key = b""
            for line in bytes(buf[:end]).split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())  # RFC 6455 accept key
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                                 + b"\r\n\r\n")
            del buf[:end + 4]
            self.open = True
        frames, used = split_frames(buf)
        for b0, payload in frames:
            opcode = b0 & 0x0F
            if opcode == 8:  # close: answer and hang up
                self.transport.write(b"\x88\x02" + payload[:2])
                self.transport.close()
                return
            if opcode == 9:  # ping -> pong
                b0 = 0x8A
            n = len(payload)
            if n < 126:
                head = bytes((b0, n))
            elif n < 65536:
                head = bytes((b0, 126)) + n.to_bytes(2, "big")
            else:
                head = bytes((b0, 127)) + n.to_bytes(8, "big")
            self.transport.write(head + payload)
        if used:
            del buf[:used]


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1])))
