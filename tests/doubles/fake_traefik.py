"""Traefik's websecure entry point (443) as the deployment configures it, on loopback, and
what stands behind its TCP routes.

- :class:`FakeTraefik` reads each connection's TLS ClientHello, routes it by SNI like the
  IngressRouteTCPs: ``terminate`` routes finish the handshake with the route's certificate
  (real TLS, OpenSSL through ``ssl.MemoryBIO``) and forward the plain stream to the backend
  with a PROXY protocol v2 header first (the ServersTransportTCP); ``passthrough`` routes
  forward the raw TLS bytes. An unknown or missing SNI is dropped. It connects to backends
  from ``backend_source`` (another loopback address), so a backend that ignored the PROXY
  header would see the proxy's address, not the client's.
- :class:`FakeTurnTcp` is a TURN TCP listener's STUN side behind it: it takes a PROXY v2
  header from trusted peers only and answers Binding requests (aioice's STUN codec) with the
  client's address from that header.
- :class:`FakeIrohRelay` is an iroh relay's HTTPS (its own TLS): ``/healthz`` as iroh-relay
  answers it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aioice import stun

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A PROXY protocol v2 header, PROXY command, TCP over IPv4 (as Traefik sends it)."""
    addresses = (ipaddress.IPv4Address(source[0]).packed +
                 ipaddress.IPv4Address(destination[0]).packed +
                 struct.pack("!HH", source[1], destination[1]))
    return PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + \
        addresses


def client_hello_sni(record: bytes) -> str | None:
    """The server name of a TLS ClientHello record (None when there is none)."""
    if len(record) < 5 or record[0] != 0x16:
        return None
    body = record[5:]
    if not body or body[0] != 0x01:
        return None
    pos = 4 + 2 + 32  # handshake header, client version, random
    pos += 1 + body[pos]  # session id
    pos += 2 + struct.unpack("!H", body[pos:pos + 2])[0]  # cipher suites
    pos += 1 + body[pos]  # compression methods
    end = pos + 2 + struct.unpack("!H", body[pos:pos + 2])[0]
    pos += 2
    while pos + 4 <= end:
        kind, length = struct.unpack("!HH", body[pos:pos + 4])
        if kind == 0:  # server_name: list length, type 0 (host_name), name length, name
            name_len = struct.unpack("!H", body[pos + 7:pos + 9])[0]
            return body[pos + 9:pos + 9 + name_len].decode("ascii")
        pos += 4 + length
    return None


@dataclass
class TlsRoute:
    backend: tuple[str, int]
    context: ssl.SSLContext | None = None  # None: passthrough
    proxy_protocol: bool = True


@dataclass
class FakeTraefik:
    routes: dict[str, TlsRoute] = field(default_factory=dict)
    backend_source: str = "127.0.0.2"
    connections: int = 0
    refused: list[str | None] = field(default_factory=list)  # SNIs no route matched

    async def start(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        self.connections += 1
        try:
            header = await reader.readexactly(5)
            record = header + await reader.readexactly(struct.unpack("!H", header[3:5])[0])
            sni = client_hello_sni(record)
            route = self.routes.get(sni or "")
            if route is None:
                self.refused.append(sni)
                return
            up_reader, up_writer = await asyncio.open_connection(
                *route.backend, local_addr=(self.backend_source, 0))
            try:
                if route.context is None:
                    up_writer.write(record)
                    await _pipe_both(reader, writer, up_reader, up_writer)
                else:
                    await _terminate(route, record, reader, writer, up_reader, up_writer)
            finally:
                up_writer.close()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _pipe_both(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                     b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    await asyncio.gather(_pipe(a_reader, b_writer), _pipe(b_reader, a_writer),
                         return_exceptions=True)


async def _terminate(route: TlsRoute, hello: bytes, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader,
                     up_writer: asyncio.StreamWriter) -> None:
    """TLS server side over memory BIOs (the ClientHello is already read), then the plain
    stream to the backend behind a PROXY v2 header."""
    assert route.context is not None
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = route.context.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(hello)

    async def flush() -> None:
        if pending := outgoing.read():
            writer.write(pending)
            await writer.drain()

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await flush()
            data = await reader.read(65536)
            if not data:
                return
            incoming.write(data)
    await flush()
    if route.proxy_protocol:
        client = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        up_writer.write(proxy_v2_header(client[:2], local[:2]))

    async def client_to_backend() -> None:
        while data := await reader.read(65536):
            incoming.write(data)
            while True:
                try:
                    plain = tls.read(65536)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    return
                up_writer.write(plain)
            await flush()
            await up_writer.drain()

    async def backend_to_client() -> None:
        while data := await up_reader.read(65536):
            tls.write(data)
            await flush()

    await asyncio.gather(client_to_backend(), backend_to_client(), return_exceptions=True)


# ---- behind the routes -------------------------------------------------------------------


@dataclass
class FakeTurnTcp:
    """STUN Binding over TCP behind a PROXY v2 sender (the relay's TURN TCP listener)."""

    trusted: str = "127.0.0.0/8"
    bindings: int = 0
    seen: list[tuple[str, int]] = field(default_factory=list)  # mapped addresses answered

    async def start(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        peer = writer.get_extra_info("peername")[:2]
        try:
            head = await reader.readexactly(16)
            if head[:12] == PROXY_V2_SIGNATURE and ipaddress.ip_address(peer[0]) in \
                    ipaddress.ip_network(self.trusted):
                body = await reader.readexactly(struct.unpack("!H", head[14:16])[0])
                if head[12:14] == bytes([0x21, 0x11]):
                    peer = (str(ipaddress.IPv4Address(body[:4])),
                            struct.unpack("!H", body[8:10])[0])
                head = await reader.readexactly(20)
            else:
                head += await reader.readexactly(4)
            while True:
                length = struct.unpack("!H", head[2:4])[0]
                message = stun.parse_message(head + await reader.readexactly(length))
                if message.message_method == stun.Method.BINDING:
                    self.bindings += 1
                    self.seen.append(peer)
                    response = stun.Message(message_method=stun.Method.BINDING,
                                            message_class=stun.Class.RESPONSE,
                                            transaction_id=message.transaction_id)
                    response.attributes["XOR-MAPPED-ADDRESS"] = peer
                    writer.write(bytes(response))
                    await writer.drain()
                head = await reader.readexactly(20)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


@dataclass
class FakeIrohRelay:
    """An iroh relay's HTTPS side: it terminates TLS itself (passthrough behind Traefik)."""

    version: str = "0.96.1"
    up: bool = True
    health_checks: int = 0

    def app(self) -> web.Application:
        async def healthz(request: web.Request) -> web.Response:
            self.health_checks += 1
            if not self.up:
                return web.Response(status=503)
            body: dict[str, Any] = {"status": "ok", "version": self.version,
                                    "git_hash": "unknown"}
            return web.Response(body=json.dumps(body), content_type="application/json")

        async def no_content(request: web.Request) -> web.Response:
            return web.Response(status=204)

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/generate_204", no_content)
        return app
