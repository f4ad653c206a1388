"""Clients that talk to the relay byte for byte as mydia's real clients do
(mydia c4efb91, ``lib/mydia/remote_access/relay.ex`` and the player, and its iroh-era successor):

* :class:`ReqClient` — the mydia server's HTTP client (Elixir ``Req`` on Finch/Mint): one
  keep-alive HTTP/1.1 connection, lower-case headers ``accept: application/json``,
  ``user-agent: Mydia/<vsn> (<arch>)``, ``accept-encoding: gzip``; query parameters encoded by
  ``URI.encode_query/1`` (www-form: space → ``+``, ``,`` → ``%2C``); ``json:`` bodies; the body
  gunzipped and JSON-decoded only when the content type says JSON; ``retry: :transient`` (up
  to 3 retries on 408/429/500/502/503/504, honouring ``retry-after``).
* :class:`WebSockexClient` — the mydia server's tunnel socket (WebSockex 0.4.3): a handshake
  with ``Host`` (no port), ``Connection``, ``Upgrade``, ``Sec-WebSocket-Version``,
  ``Sec-WebSocket-Key`` and no extension; text frames of sorted compact JSON (``Jason.encode!``
  of a map); WebSocket pings echoed; a dead process drops TCP without a close frame.
* :class:`DartClient` — the Flutter player (``dart:io``): WebSockets that offer
  ``permessage-deflate; client_max_window_bits`` (and compress when it is accepted), and HTTP
  requests with ``user-agent: Dart/<vsn> (dart:io)``, ``accept-encoding: gzip``, an empty POST
  with ``content-type: application/json``.

Each is written here from the clients' documented behaviour, on raw sockets (h11 for HTTP/1.1
framing, ``websockets``' public client for dart:io's compression), not through the relay's
own code.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import struct
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
from websockets.asyncio.client import ClientConnection, connect

MYDIA_UA = "Mydia/0.6.3 (x86_64-pc-linux-gnu)"
DART_UA = "Dart/3.6 (dart:io)"
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})


def encode_query(params: dict[str, Any]) -> str:
    """``URI.encode_query/1``: www-form encoding (space → ``+``, ``,`` → ``%2C``), in the
    keyword list's order (an Elixir map would be sorted: pass it sorted)."""
    return urlencode([(k, str(v)) for k, v in params.items()])


def jason(obj: Any) -> str:
    """``Jason.encode!`` of an Elixir map: keys sorted, compact."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Response:
    def __init__(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        """The body as received (maybe gzip)."""
        body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
        self.bytes = body
        """The body after Req's ``decompress_body`` step."""
        self.body: Any = body
        """After ``decode_body``: JSON only when the content type is JSON, else bytes."""
        if "json" in headers.get("content-type", "") and body:
            self.body = json.loads(body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.bytes[:80]!r}>"


class _Http11:
    """One HTTP/1.1 connection (h11 framing), reopened when the server closes it."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = f"{self.host}:{self.port}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.conn = h11.Connection(h11.CLIENT)
        self.connections_opened = 0

    async def _ensure(self) -> None:
        if self.writer is None or self.conn.our_state is not h11.IDLE:
            await self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.conn = h11.Connection(h11.CLIENT)
            self.connections_opened += 1

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes | None, timeout: float = 15.0) -> Response:
        await self._ensure()
        assert self.reader is not None and self.writer is not None
        all_headers = [("host", self.host_header), *headers]
        if body is not None:
            all_headers.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        self.writer.write(data)
        await self.writer.drain()
        status, resp_headers, chunks = 0, {}, []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                raw = await asyncio.wait_for(self.reader.read(65536), timeout)
                self.conn.receive_data(raw)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                resp_headers = {k.decode().lower(): v.decode("latin-1")
                                for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        else:
            await self.close()
        return Response(status, resp_headers, b"".join(chunks))


class ReqClient:
    """The mydia server's HTTP client (one pooled keep-alive connection)."""

    def __init__(self, base_url: str, *, second: float = 0.05,
                 extra_headers: list[tuple[str, str]] | None = None) -> None:
        self.http = _Http11(base_url)
        self.second = second
        """Req waits 1 s, 2 s, 4 s (or ``retry-after`` seconds); one such second lasts this
        long here, so tests stay fast."""
        self.extra = extra_headers or []
        self.attempts: list[int] = []

    async def close(self) -> None:
        await self.http.close()

    def _headers(self, content_type: str | None = None) -> list[tuple[str, str]]:
        headers = [("accept", "application/json"), ("user-agent", MYDIA_UA),
                   ("accept-encoding", "gzip"), *self.extra]
        if content_type:
            headers.append(("content-type", content_type))
        return headers

    async def _send(self, method: str, target: str, headers: list[tuple[str, str]],
                    body: bytes | None) -> Response:
        for attempt in range(4):  # 1 + max_retries: 3
            resp = await self.http.request(method, target, headers, body)
            self.attempts.append(resp.status)
            if resp.status not in TRANSIENT or attempt == 3:
                return resp
            retry_after = resp.headers.get("retry-after", "")
            seconds = int(retry_after) if retry_after.isdigit() else 2**attempt
            await asyncio.sleep(seconds * self.second)
        raise AssertionError("unreachable")

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Response:
        target = path + ("?" + encode_query(params) if params else "")
        return await self._send("GET", target, self._headers(), None)

    async def post_json(self, path: str, payload: Any) -> Response:
        body = jason(payload).encode()
        return await self._send("POST", path, self._headers("application/json"), body)


class WebSockexClient:
    """The mydia server's tunnel socket, on a raw TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.closed = False
        self.pings_answered = 0

    @classmethod
    async def connect(cls, base_url: str, path: str = "/relay/tunnel/websocket",
                      extra_headers: list[tuple[str, str]] | None = None) -> WebSockexClient:
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: Upgrade",
                 "Upgrade: websocket", "Sec-WebSocket-Version: 13",
                 f"Sec-WebSocket-Key: {key}"]
        lines += [f"{k}: {v}" for k, v in extra_headers or []]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = head.split(b" ", 2)[1]
        if status != b"101":
            writer.close()
            raise ConnectionError(f"handshake refused: {head!r}")
        return cls(reader, writer)

    async def send(self, msg: dict[str, Any]) -> None:
        self._write_frame(0x1, jason(msg).encode())
        await self.writer.drain()

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    async def _read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self.reader.read(65536)
            if not data:
                self.closed = True
                raise ConnectionError("connection closed by the relay")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    async def _frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = await self._read_exactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self._read_exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self._read_exactly(8))
        if b1 & 0x80:
            raise ConnectionError("server frames must not be masked")
        return bool(b0 & 0x80), b0 & 0x0F, await self._read_exactly(n)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next text message; pings are answered on the way (WebSockex's default)."""

        async def one() -> dict[str, Any]:
            parts: list[bytes] = []
            while True:
                fin, opcode, payload = await self._frame()
                if opcode == 0x9:
                    self._write_frame(0xA, payload)
                    await self.writer.drain()
                    self.pings_answered += 1
                    continue
                if opcode == 0x8:
                    self.closed = True
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    raise ConnectionError(f"closed by the relay: {code} {payload[2:]!r}")
                if opcode == 0x1 or (opcode == 0x0 and parts):
                    parts.append(payload)
                    if fin:
                        msg = json.loads(b"".join(parts))
                        assert isinstance(msg, dict)
                        return msg
                # pongs and binary frames are ignored

        return await asyncio.wait_for(one(), timeout)

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of ``kind``, skipping others (mydia logs unhandled types)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(deadline - loop.time(), 0.01))
            if msg.get("type") == kind:
                return msg

    async def answer_pings_until_closed(self, timeout: float) -> None:
        """An orphaned WebSockex process: reads, answers WebSocket pings, sends nothing."""
        try:
            while True:
                await self.recv(timeout)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            return

    def kill(self) -> None:
        """The process dies: TCP dropped, no close frame."""
        self.closed = True
        self.writer.transport.abort()


class DartClient:
    """The Flutter player: ``dart:io`` HTTP and WebSockets (permessage-deflate offered)."""

    def __init__(self, base_url: str, extra_headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.http = _Http11(base_url)
        self.extra = extra_headers or {}

    async def close(self) -> None:
        await self.http.close()

    def _headers(self) -> list[tuple[str, str]]:
        return [("user-agent", DART_UA), ("accept-encoding", "gzip"), *self.extra.items()]

    async def get(self, path: str) -> Response:
        return await self.http.request("GET", path, self._headers(), None)

    async def delete(self, path: str) -> Response:
        return await self.http.request("DELETE", path, self._headers(), None)

    async def post_empty_json(self, path: str) -> Response:
        """``http.post(url, headers: {'Content-Type': 'application/json'})`` with no body."""
        headers = [*self._headers(), ("content-type", "application/json")]
        return await self.http.request("POST", path, headers, b"")

    async def websocket(self, path: str = "/relay/client/websocket") -> ClientConnection:
        return await connect(
            self.base_url.replace("http://", "ws://") + path,
            compression="deflate",  # offers permessage-deflate; client_max_window_bits
            user_agent_header=DART_UA,
            additional_headers=self.extra,
            ping_interval=None,
        )
