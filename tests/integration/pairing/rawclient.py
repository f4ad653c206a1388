"""A WebSocket client that can stop reading for real: sans-I/O ``websockets`` protocol over
a raw socket with a tiny receive buffer (library clients keep reading into memory)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


class RawClient:
    def __init__(self, sock: socket.socket, proto: ClientProtocol) -> None:
        self.sock = sock
        self.proto = proto
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, ws_url: str, headers: dict[str, str]) -> RawClient:
        uri = parse_uri(ws_url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (uri.host, uri.port))
        proto = ClientProtocol(uri, max_size=None)
        request = proto.connect()
        for k, v in headers.items():
            request.headers[k] = v
        proto.send_request(request)
        self = cls(sock, proto)
        await self._flush()
        while True:
            data = await self.loop.sock_recv(sock, 65536)
            proto.receive_data(data)
            if any(isinstance(e, Response) for e in proto.events_received()):
                return self

    async def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                await self.loop.sock_sendall(self.sock, chunk)

    async def send(self, msg: dict[str, Any]) -> None:
        self.proto.send_text(json.dumps(msg).encode())
        await self._flush()

    async def read_until_close(self, timeout: float = 20.0) -> tuple[int, int | None]:
        """Read everything: (text frames received, close code)."""
        frames = 0
        async with asyncio.timeout(timeout):
            while True:
                data = await self.loop.sock_recv(self.sock, 1 << 20)
                self.proto.receive_data(data)
                for event in self.proto.events_received():
                    if getattr(event, "opcode", None) is Opcode.TEXT:
                        frames += 1
                    elif getattr(event, "opcode", None) is Opcode.CLOSE:
                        rcvd = self.proto.close_rcvd
                        return frames, rcvd.code if rcvd else None
                if not data:
                    return frames, None

    def close(self) -> None:
        self.sock.close()
