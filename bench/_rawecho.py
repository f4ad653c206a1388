"""Floor for W1 latency: a bare asyncio WebSocket echo server (uvloop), no framework at all.

``python -m bench._rawecho PORT``. It answers the opening handshake, unmasks each client frame
with the ``websockets`` C helper and writes it back unmasked; ping/pong and close are the
minimum a client needs. It parses no JSON and routes nothing, so its latency is what this
machine, the kernel's loopback path and one Python event loop give at a message rate: the
floor under any Python relay measured by the same harness (bench/w1.py). Benchmark code only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys

from websockets.speedups import apply_mask

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
        pos, size = 0, len(buf)
        while size - pos >= 6:
            b0, b1 = buf[pos], buf[pos + 1]
            n, at = b1 & 0x7F, pos + 2
            if n == 126:
                if size - pos < 8:
                    break
                n, at = (buf[pos + 2] << 8) | buf[pos + 3], pos + 4
            elif n == 127:
                self.transport.close()  # the harness never sends frames this large
                return
            if size - at < n + 4:
                break
            payload = apply_mask(bytes(buf[at + 4:at + 4 + n]), bytes(buf[at:at + 4]))
            pos = at + 4 + n
            opcode = b0 & 0x0F
            if opcode == 8:  # close: answer and hang up
                self.transport.write(b"\x88\x02" + payload[:2])
                self.transport.close()
                return
            if opcode == 9:  # ping -> pong
                b0 = 0x8A
            head = bytes((b0, n)) if n < 126 else bytes((b0, 126, n >> 8, n & 0xFF))
            self.transport.write(head + payload)
        if pos:
            del buf[:pos]


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1])))
