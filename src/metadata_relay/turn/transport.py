"""The event-loop edge of the TURN server: UDP listeners, TCP connections, relay sockets.

These are thin: STUN messages go to :class:`~metadata_relay.turn.server.TurnServer`, relayed
data to the allocation's decisions (:meth:`Allocation.channel_out` for ChannelData from the
client, :meth:`Allocation.channel_in` for a peer's datagram); nothing is decided here. The
other engine, the C forwarder (:mod:`metadata_relay.turn.native`), takes over the listeners,
TCP connections and relay sockets where it is built. Both bind their sockets here: one UDP
and one TCP listener per address family, relay sockets in the allocation's families (IPv6
sockets IPv6-only, so each family's ports are its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any, Protocol

from metadata_relay.observability import get_logger
from metadata_relay.turn import codec as c
from metadata_relay.turn.allocation import Allocation
from metadata_relay.turn.codec import Address
from metadata_relay.turn.peers import Network
from metadata_relay.turn.ports import PortPool
from metadata_relay.turn.proxy import ProxyHeaderError, StreamStart, from_trusted
from metadata_relay.turn.server import TurnServer


class RelayEngine(Protocol):
    """Who else can own the relay sockets of new allocations (the C forwarder's
    ``native.NativeEngine``); without one, the event-loop edge here does."""

    def relay(self, sock: socket.socket, port: int, pool: PortPool, al: Allocation) -> Any: ...

log = get_logger("metadata_relay.turn")

SOCKET_BUFFER = 1 << 20
LISTENER_BUFFER = 8 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
TCP_MAX_BUFFER = 1 << 17
TCP_WRITE_LIMIT = 1 << 18
TCP_BACKLOG = 512


def family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def udp_socket(family: int, ip: str, port: int, buffer: int = SOCKET_BUFFER) -> socket.socket:
    """A non-blocking bound UDP socket with large kernel buffers: beyond net.core.rmem_max
    when the process may (CAP_NET_ADMIN), else up to it. Small buffers overflow under bursts
    (T2: /proc/net/snmp RcvbufErrors) long before the CPU is saturated. IPv6 sockets are
    IPv6-only."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for force, opt in ((SO_RCVBUFFORCE, socket.SO_RCVBUF),
                           (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, buffer)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, buffer)
        sock.bind((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


def tcp_listener(ip: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``ip`` (IPv6 ones IPv6-only)."""
    family = family_of(ip)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((ip, port))
        sock.listen(TCP_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def refused_header(peer: Address, exc: ProxyHeaderError) -> None:
    """Log a PROXY header a trusted peer sent and this server refused (the connection is
    closed): a misconfigured proxy (version 1, a UDP route) shows here."""
    log.warning("turn_proxy_header_refused", peer=f"{peer[0]}:{peer[1]}", reason=str(exc))


def sendto_quietly(sock: socket.socket, data: bytes, addr: Address) -> None:
    """``sock.sendto`` that drops the datagram on an error (full buffer, ICMP), as UDP may."""
    try:  # (not contextlib.suppress: this is on the Send indication path)
        sock.sendto(data, addr)
    except OSError:
        pass


class UdpListener(asyncio.DatagramProtocol):
    """The STUN/TURN UDP port: clients' STUN messages and ChannelData."""

    def __init__(self, server: TurnServer, clock: Callable[[], float]) -> None:
        self.server = server
        self.clock = clock
        self.allocs = server.allocations
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            if data[0] & 0xC0 == 0x40:  # ChannelData: the hot path
                al = self.allocs.get(addr)
                out = al.channel_out(data) if al is not None else None
                if out is not None:
                    relay = al.relay_for(out[1])  # type: ignore[union-attr]
                    if relay is not None:
                        relay.sendto(*out)
                return
        except IndexError:
            return
        response = self.server.handle(data, addr, addr[:2], False, self.clock())
        if response is not None:
            self.transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nothing to do
        pass


class TcpConnection(asyncio.Protocol):
    """One TURN-over-TCP control connection: STUN and padded ChannelData frames, after a PROXY
    header when the peer is a trusted proxy (:class:`~metadata_relay.turn.proxy.StreamStart`)."""

    def __init__(self, server: TurnServer, connections: set[Any],
                 clock: Callable[[], float], trusted: tuple[Network, ...] = ()) -> None:
        self.server = server
        self.connections = connections
        self.clock = clock
        self.trusted = trusted
        self.transport: Any = None
        self.addr: Address = ("0.0.0.0", 0)
        """The client's address: the peer's, or the one a trusted proxy's header names."""
        self.start: StreamStart | None = None
        self.buf = bytearray()
        self.idle_since = clock()
        """Since when it has held no allocation (kept current by the component's tick)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.addr = (peer[0], peer[1])
        self.start = StreamStart(self.addr, from_trusted(peer[0], self.trusted))
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.server.close_client(self)

    def close(self) -> None:
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        start = self.start
        if start is not None:
            try:
                rest = start.feed(data)
            except ProxyHeaderError as exc:
                refused_header(self.addr, exc)
                self.transport.close()
                return
            if rest is None:
                return
            self.addr = start.client
            self.start = None
            data = rest
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        while True:
            n = c.stream_frame_length(buf, pos)
            if n is None or end - pos < (n if n > 0 else 0):
                break
            if n < 0:
                self.transport.close()  # not STUN/TURN framing: stop reading garbage
                buf.clear()
                return
            frame = bytes(buf[pos : pos + n])
            pos += n
            self._frame(frame)
        if pos:
            del buf[:pos]
        if len(buf) > TCP_MAX_BUFFER:
            self.transport.close()
            buf.clear()

    def _frame(self, frame: bytes) -> None:
        response = self.server.handle(frame, self, self.addr, True, self.clock())
        if response is not None and not self.transport.is_closing():
            self.transport.write(response)


class PeerProtocol(asyncio.DatagramProtocol):
    """The event-loop side of an allocation's relay socket: each peer datagram goes to the
    client as :meth:`Allocation.channel_in` decides, through the UDP listener or the client's
    TCP connection (a slow TCP client loses datagrams, as UDP would)."""

    def __init__(self, al: Allocation, listener: Any) -> None:
        self.channel_in = al.channel_in
        self.client_addr = al.client_addr
        self.stream: Any = al.client_key.transport if al.tcp else None  # type: ignore[attr-defined]
        self.listener = listener

    def datagram_received(self, data: bytes, addr: Any) -> None:
        stream = self.stream
        if stream is not None and stream.get_write_buffer_size() > TCP_WRITE_LIMIT:
            return
        frame = self.channel_in(data, addr[:2])  # (host, port), also from an IPv6 socket
        if frame is None:
            return
        if stream is None:
            self.listener.sendto(frame, self.client_addr)
        else:
            stream.write(frame)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nothing to do
        pass


class UdpRelay:
    """An allocation's relay socket: bound synchronously (so 508 is known at once), attached
    to the event loop right after."""

    def __init__(self, sock: socket.socket, port: int, pool: PortPool,
                 protocol: PeerProtocol, tasks: set[asyncio.Task[None]]) -> None:
        self.port = port
        self.sock = sock
        self.pool = pool
        self.protocol = protocol
        self.transport: Any = None
        self.closed = False
        self.tasks = tasks
        self.task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._attach())
        tasks.add(self.task)

    def sendto(self, data: bytes, addr: Address) -> None:
        """Through the event loop's transport once it has the socket; before that, and for an
        empty payload (which asyncio transports silently skip), straight on the socket."""
        transport = self.transport
        if transport is not None and data:
            transport.sendto(data, addr)
        else:
            sendto_quietly(self.sock, data, addr)

    async def _attach(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(lambda: self.protocol,
                                                               sock=self.sock)
            if self.closed:
                transport.close()
                return
            self.transport = transport
        finally:
            if self.task is not None:
                self.tasks.discard(self.task)
            self.task = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        elif self.task is not None:
            self.task.cancel()
            self.sock.close()
        else:
            self.sock.close()
        self.pool.release(self.port)


class RelayOpener:
    """Binds a free port of the relay range in the asked address family for a new allocation
    (``None``: that family's range is exhausted; each family has its own).

    With the C forwarder (``native``) the relay sockets join its epoll set; otherwise each
    relay socket is an event-loop datagram endpoint."""

    def __init__(self, binds: dict[int, str], pools: dict[int, PortPool]) -> None:
        self.binds = binds
        """Address family (4, 6) -> the address relay sockets of that family bind."""
        self.pools = pools
        self.listeners: dict[int, Any] = {}
        """Address family -> the UDP listener's transport (how UDP clients' relay sockets
        reach a client of that family, event-loop edge)."""
        self.native: RelayEngine | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, al: Allocation, family: int, even: bool = False) -> Any:
        pool, bind = self.pools.get(family), self.binds.get(family)
        if pool is None or bind is None:
            return None
        for port in pool.candidates(even=even) or ():
            try:
                sock = udp_socket(family_of(bind), bind, port)
            except OSError:
                continue
            pool.take(port)
            if self.native is not None:
                try:
                    return self.native.relay(sock, port, pool, al)
                except (ValueError, MemoryError):  # the C forwarder refused it: no relay
                    sock.close()
                    pool.release(port)
                    return None
            listener = self.listeners.get(c.ip_family(al.client_addr[0]))
            return UdpRelay(sock, port, pool, PeerProtocol(al, listener), self.tasks)
        return None
