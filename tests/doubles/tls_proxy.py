"""A Traefik-like TLS-terminating TCP proxy on loopback, for ``turns:``: it accepts TLS with a
self-signed certificate, opens a plain TCP connection to an upstream (the relay's TURN TCP
port) from its own address, writes a PROXY protocol v2 header naming the client (built here
from the specification, section 2.2 of haproxy's proxy-protocol.txt, as Traefik's
go-proxyproto writes it, plus an AUTHORITY TLV with the route's host name) and pipes both
ways. It runs on its own event loop in a thread, so synchronous tests and subprocess clients
can use it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HOSTNAME = "turn.test"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for turn.test and 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(HOSTNAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "turn.crt", directory / "turn.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def proxy_v2(source: tuple[str, int], destination: tuple[str, int], sni: str | None) -> bytes:
    """PROXY v2, command PROXY, TCP over IPv4/IPv6, with an AUTHORITY TLV (0x02)."""
    family = socket.AF_INET6 if ":" in source[0] else socket.AF_INET
    block = (socket.inet_pton(family, source[0]) + socket.inet_pton(family, destination[0])
             + struct.pack("!HH", source[1], destination[1]))
    if sni:
        block += b"\x02" + struct.pack("!H", len(sni)) + sni.encode()
    fam = 0x21 if family == socket.AF_INET6 else 0x11
    return SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(block)) + block


@dataclass
class TlsProxy:
    upstream: tuple[str, int]
    directory: Path
    via: str = "127.0.0.5"
    """The proxy's own address towards the upstream (the address TRUSTED_PROXIES must hold)."""
    port: int = 0
    clients: list[tuple[str, int]] = field(default_factory=list)
    """Every client's address, as the proxy saw it."""
    loop: asyncio.AbstractEventLoop | None = None

    def client_context(self) -> ssl.SSLContext:
        """What a client uses to trust this proxy's certificate."""
        return ssl.create_default_context(cafile=str(self.directory / "turn.crt"))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[:2]
        self.clients.append(peer)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                *self.upstream, local_addr=(self.via, 0))
        except OSError:
            writer.close()
            return
        up_writer.write(proxy_v2(peer, up_writer.get_extra_info("sockname")[:2], HOSTNAME))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError, RuntimeError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    @contextlib.contextmanager
    def running(self) -> Iterator[TlsProxy]:
        cert, key = self_signed(self.directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        started = threading.Event()
        loop = asyncio.new_event_loop()
        self.loop = loop
        server: list[asyncio.Server] = []

        async def start() -> None:
            srv = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
            server.append(srv)
            self.port = srv.sockets[0].getsockname()[1]
            started.set()

        def run() -> None:
            loop.run_until_complete(start())
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert started.wait(10), "the TLS proxy did not start"
        try:
            yield self
        finally:
            async def stop() -> None:
                for srv in server:
                    srv.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
