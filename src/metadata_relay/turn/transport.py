"""The event-loop edge of the TURN server: the UDP listener, TCP connections, relay sockets.

These are thin: STUN messages go to :class:`~metadata_relay.turn.server.TurnServer`, relayed
data to the allocation's decisions (:meth:`Allocation.channel_out` for ChannelData from the
client, :meth:`Allocation.channel_in` for a peer's datagram); nothing is decided here. The
other engine, the C forwarder (:mod:`metadata_relay.turn.native`), takes over the UDP listener
and UDP clients' relay sockets where it is built; TCP clients' relay sockets stay here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from metadata_relay.turn import codec as c
from metadata_relay.turn.allocation import Allocation
from metadata_relay.turn.codec import Address
from metadata_relay.turn.ports import PortPool
from metadata_relay.turn.server import TurnServer

if TYPE_CHECKING:
    from metadata_relay.turn.native import NativeUdp

SOCKET_BUFFER = 1 << 20
LISTENER_BUFFER = 8 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
TCP_MAX_BUFFER = 1 << 17
TCP_WRITE_LIMIT = 1 << 18


def udp_socket(family: int, ip: str, port: int, buffer: int = SOCKET_BUFFER) -> socket.socket:
    """A non-blocking bound UDP socket with large kernel buffers: beyond net.core.rmem_max
    when the process may (CAP_NET_ADMIN), else up to it. Small buffers overflow under bursts
    (T2: /proc/net/snmp RcvbufErrors) long before the CPU is saturated."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
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
                    al.relay.sendto(*out)  # type: ignore[union-attr]
                return
        except IndexError:
            return
        response = self.server.handle(data, addr, addr[:2], False, self.clock())
        if response is not None:
            self.transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nothing to do
        pass


class TcpConnection(asyncio.Protocol):
    """One TURN-over-TCP control connection: STUN and padded ChannelData frames."""

    def __init__(self, server: TurnServer, connections: set[TcpConnection],
                 clock: Callable[[], float]) -> None:
        self.server = server
        self.connections = connections
        self.clock = clock
        self.transport: Any = None
        self.addr: Address = ("0.0.0.0", 0)
        self.buf = bytearray()
        self.idle_since = clock()
        """Since when it has held no allocation (kept current by the component's tick)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.addr = (peer[0], peer[1])
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.server.close_client(self)

    def data_received(self, data: bytes) -> None:
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
        if frame[0] & 0xC0 == 0x40:
            al = self.server.allocations.get(self)
            out = al.channel_out(frame) if al is not None else None
            if out is not None:
                al.relay.sendto(*out)  # type: ignore[union-attr]
            return
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
    """Binds a free port of the relay range for a new allocation (``None``: range exhausted).

    With the C forwarder (``native``) the relay sockets of UDP clients join its epoll set;
    otherwise (and for TCP clients) each relay socket is an event-loop datagram endpoint."""

    def __init__(self, bind_ip: str, pool: PortPool) -> None:
        self.bind_ip = bind_ip
        self.family = socket.AF_INET6 if ":" in bind_ip else socket.AF_INET
        self.pool = pool
        self.listener: Any = None
        """The UDP listener's transport (how UDP clients' relay sockets reach them)."""
        self.native: NativeUdp | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, al: Allocation, even: bool = False) -> Any:
        for port in self.pool.candidates(even=even) or ():
            try:
                sock = udp_socket(self.family, self.bind_ip, port)
            except OSError:
                continue
            self.pool.take(port)
            if not al.tcp and self.native is not None:
                try:
                    return self.native.relay(sock, port, self.pool, al)
                except (ValueError, MemoryError):  # the C forwarder refused it: no relay
                    sock.close()
                    self.pool.release(port)
                    return None
            return UdpRelay(sock, port, self.pool, PeerProtocol(al, self.listener), self.tasks)
        return None
