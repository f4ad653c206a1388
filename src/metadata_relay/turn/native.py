"""The C forwarder's edge (Linux): the TURN UDP listeners, TCP client connections and every
relay socket on one ``epoll`` set, drained by ``_forward.Forwarder.poll`` (``_forward.c``).

Why it exists: on T1 the interpreter time of the per-packet loops was the whole gap to
coturn, for UDP ChannelData first, then (T1-t, T1-s) for TCP client legs and Send/Data
indications. The C module forwards ChannelData of bound channels and Send/Data indications of
permitted peers, both ways, over UDP and TCP, and decides nothing else: one ``poll`` per
event-loop wake-up drains every ready socket and hands back what needs Python — STUN (to
:class:`~metadata_relay.turn.server.TurnServer`), client frames without a mirrored route,
peer datagrams without a channel or permission (:meth:`Allocation.channel_in`), closed
streams — the decisions the event-loop edge (:mod:`metadata_relay.turn.transport`) takes
for every packet. Keeping C truthful:

* :func:`routes` and :func:`permissions` turn an allocation's ``out_routes`` and
  :meth:`Allocation.port_range` of each permitted IP into the C tables' form; each relay
  pushes them from ``Allocation.observer``, i.e. on every rebuild the state machine makes, so
  a route or permission never outlives its channel or permission in Python, and C forgets
  them when the relay closes.
* :func:`settle` moves the packet/byte counts C made into ``Allocation.pk_out`` etc. (what
  ``/stats`` and ``/metrics`` read) and charges the bytes to the allocation's Python token
  buckets; :func:`seed` copies the buckets' balances back into C after the tick refilled them.
  Both paths thus draw on one balance, reconciled at every tick and every ``/stats`` read:
  over one tick (0.25 s) a client mixing the paths can overdraw by at most one tick's worth,
  after which the debt blocks it; the long-run rate is exact.
* A datagram handed back for a relay socket carries its allocation's handle, a frame handed
  back for a stream its connection's: one read before a Refresh to 0 or a close (and a new
  allocation or connection on the same fd) is dropped.
* TCP clients' bytes reach C only once the start of the stream is known: from a trusted proxy
  Python reads the PROXY header first (:class:`~metadata_relay.turn.proxy.StreamStart`).

:data:`Forwarder` is ``None`` when the extension is not built (no compiler at install time,
not Linux): the event-loop edge serves then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import socket
import sys
from collections.abc import Callable
from typing import Any

from metadata_relay.turn.allocation import Allocation
from metadata_relay.turn.codec import Address, ip_family
from metadata_relay.turn.peers import Network
from metadata_relay.turn.ports import PortPool
from metadata_relay.turn.proxy import ProxyHeaderError, StreamStart, from_trusted
from metadata_relay.turn.server import TurnServer
from metadata_relay.turn.transport import refused_header, sendto_quietly

try:
    from metadata_relay.turn._forward import STREAM_BACKLOG, Forwarder
except ImportError as exc:  # not built: the event-loop edge serves
    Forwarder = None  # type: ignore[assignment,misc]
    STREAM_BACKLOG = 0
    IMPORT_ERROR: str | None = str(exc)
else:
    IMPORT_ERROR = None

ADDRESS_CACHE = 4096
"""Client addresses remembered per listener (C's key -> (host, port))."""
PEER_CACHE = 64
"""Peer addresses remembered per relay socket (C's key -> (host, port))."""
ACCEPTS = 64
"""TCP connections accepted per wake-up of a listening socket at most."""
PREAMBLE_READ = 4096


def available() -> bool:
    """The extension is importable (Linux: it needs epoll, recvmmsg and sendmmsg)."""
    return Forwarder is not None and hasattr(select, "epoll")


def sockaddr(family: int, host: str, port: int) -> bytes:
    """(host, port) -> raw ``sockaddr_in``/``sockaddr_in6`` bytes, as C takes them."""
    if family == socket.AF_INET6:
        return (family.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big") + bytes(4)
                + socket.inet_pton(socket.AF_INET6, host) + bytes(4))
    return (family.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
            + socket.inet_pton(socket.AF_INET, host) + bytes(8))


def address(raw: bytes) -> Address:
    """Raw ``sockaddr_in``/``sockaddr_in6`` bytes (as C hands them back) -> (host, port)."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


def remember(cache: dict[Any, Address], limit: int, key: Any, raw: bytes) -> Address | None:
    """The (host, port) of ``raw``, kept in ``cache`` under C's ``key`` for it (at most
    ``limit`` entries: a flood of new addresses only empties the cache)."""
    try:
        addr = address(raw)
    except (OSError, ValueError):
        return None
    if len(cache) >= limit:
        cache.clear()
    cache[key] = addr
    return addr


def routes(al: Allocation, family: int) -> list[tuple[int, bytes]]:
    """``(channel, raw peer sockaddr)`` for every route of ``al`` to a peer of ``family``
    (a relay socket of that family reaches only those)."""
    out = []
    for number, (host, port) in al.out_routes.items():
        try:
            out.append((number, sockaddr(family, host, port)))
        except (OSError, ValueError):
            continue  # the other family's: its relay socket mirrors it
    return out


def permissions(al: Allocation, family: int) -> list[tuple[bytes, int, int]]:
    """``(raw IP, lowest port, highest port)`` for every permitted peer IP of ``family``:
    :meth:`Allocation.port_range`, the ports data may use with it."""
    out = []
    for ip in al.perms:
        ports = al.port_range(ip)
        if ports is None:
            continue
        try:
            out.append((socket.inet_pton(family, ip), *ports))
        except (OSError, ValueError):
            continue
    return out


def settle(al: Allocation, counts: tuple[int, int, int, int]) -> None:
    """Add counts pulled from C (pk_out, by_out, pk_in, by_in) to ``al`` and its buckets."""
    pk_out, by_out, pk_in, by_in = counts
    if pk_out or pk_in:
        al.pk_out += pk_out
        al.by_out += by_out
        al.pk_in += pk_in
        al.by_in += by_in
        if al.up is not None and al.down is not None:
            al.up.tokens -= by_out
            al.down.tokens -= by_in


def seed(fw: Forwarder, handle: int, al: Allocation) -> None:
    """Give C the allocation's current bucket balances (None: unlimited)."""
    if al.up is not None and al.down is not None:
        fw.set_tokens(handle, al.up.tokens, al.down.tokens)
    else:
        fw.set_tokens(handle, None, None)


class NativeEngine:
    """The TURN listeners, TCP clients and relay sockets, forwarded in C."""

    def __init__(self, server: TurnServer, clock: Callable[[], float],
                 connections: set[Any], trusted: tuple[Network, ...] = ()) -> None:
        if Forwarder is None:
            raise RuntimeError(f"the C forwarder is not built: {IMPORT_ERROR}")
        self.server = server
        self.allocs = server.allocations
        self.clock = clock
        self.connections = connections
        """Every TCP client connection (the component closes idle ones)."""
        self.trusted = trusted
        self.ep = select.epoll()
        self.fw = Forwarder(self.ep.fileno())
        self.listeners: dict[int, socket.socket] = {}
        """fd -> a UDP listener."""
        self.by_family: dict[int, socket.socket] = {}
        """Address family (4, 6) -> the UDP listener clients of that family use."""
        self.addresses: dict[Any, Address] = {}
        """C's key of a client address -> (host, port) (bounded)."""
        self.acceptors: list[socket.socket] = []
        self.relays: dict[int, NativeRelay] = {}
        """fd -> the relay socket on it now."""
        self.streams: dict[int, NativeStream] = {}
        """fd -> the attached TCP client connection on it now."""
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.ep.fileno(), self.wake)

    # ---- sockets -------------------------------------------------------------------------

    def add_udp(self, sock: socket.socket) -> None:
        """A bound UDP listener (STUN, ChannelData and Send indications of UDP clients)."""
        fd = sock.fileno()
        self.fw.listen(fd)
        self.ep.register(fd, select.EPOLLIN)
        self.listeners[fd] = sock
        self.by_family[4 if sock.family == socket.AF_INET else 6] = sock

    def add_tcp(self, sock: socket.socket) -> None:
        """A listening TCP socket: its connections are accepted here and framed in C."""
        self.acceptors.append(sock)
        self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPTS):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of fds, aborted before accept: try again at the next wake
                return
            if self.closed:
                sock.close()
                return
            NativeStream(self, sock, (peer[0], peer[1]),
                         from_trusted(peer[0], self.trusted))

    def sendto(self, data: bytes, addr: Address) -> None:
        """To a UDP client, through the listener of its family."""
        sock = self.by_family.get(ip_family(addr[0]))
        if sock is not None:
            sendto_quietly(sock, data, addr)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in list(self.streams.values()):
            stream.close()
        for sock in self.acceptors:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(sock.fileno())
            sock.close()
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.ep.fileno())
        self.ep.close()
        for sock in self.listeners.values():
            sock.close()

    # ---- relays ----------------------------------------------------------------------------

    def relay(self, sock: socket.socket, port: int, pool: PortPool, al: Allocation
              ) -> NativeRelay:
        """The relay socket ``sock`` of the new allocation ``al``, forwarded here."""
        return NativeRelay(self, sock, port, pool, al)

    def mirror(self, al: Allocation) -> None:
        """``Allocation.observer``: every relay of ``al`` pushes its share of the rebuilt
        routes and permissions into C at once."""
        for relay in al.relays.values():
            if isinstance(relay, NativeRelay):
                relay.push()

    def watch(self, fd: int) -> None:
        self.ep.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        if not self.closed:
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(fd)

    # ---- the wake-up -----------------------------------------------------------------------

    def wake(self) -> None:
        """One event-loop wake-up: C drains every ready socket; the rest is done here."""
        if self.closed:
            return
        try:
            misses = self.fw.poll()
        except (OSError, ValueError):  # closed under us
            return
        if not misses:
            return
        listeners, relays, streams = self.listeners, self.relays, self.streams
        for fd, handle, data, key, raw in misses:
            stream = streams.get(fd)
            if stream is not None:
                if stream.handle == handle:  # else: a connection closed since
                    if data is None:
                        stream.close()
                    else:
                        stream.frame(data)
                continue
            if data is None or raw is None:
                if handle == 0:
                    # a ready fd the forwarder does not know (cannot happen: every socket is
                    # known to C before it joins the epoll set); stop watching it, not spin
                    self.unwatch(fd)
                continue
            if fd in listeners:
                self._from_client(data, key, raw)
                continue
            # Only to the allocation it was read for: an earlier miss of this batch may have
            # closed that one, and a new allocation may have the same fd by now.
            relay = relays.get(fd)
            if relay is not None and relay.handle == handle:
                relay.from_peer(data, key, raw)

    def _from_client(self, data: bytes, key: Any, raw: bytes) -> None:
        """A listener datagram C did not forward: STUN, ChannelData or a Send indication
        without a mirrored route or permission, or garbage."""
        addr = self.addresses.get(key) or remember(self.addresses, ADDRESS_CACHE, key, raw)
        if addr is None:
            return
        response = self.server.handle(data, addr, addr, False, self.clock())
        if response is not None:
            self.sendto(response, addr)

    def settle(self) -> None:
        """Move C's counts into the allocations (before a tick or a read)."""
        for relay in self.relays.values():
            settle(relay.al, self.fw.pull(relay.handle))

    def seed(self) -> None:
        """Give C the buckets' balances (after the tick refilled them)."""
        for relay in self.relays.values():
            if relay.al.up is not None:
                seed(self.fw, relay.handle, relay.al)


class NativeStream:
    """One TURN-over-TCP client connection, framed in C (the key of its allocation)."""

    def __init__(self, engine: NativeEngine, sock: socket.socket, peer: Address,
                 trusted: bool) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = peer
        """The client's address: the peer's, or the one a trusted proxy's header names."""
        self.handle = 0
        """The connection's handle in C once attached (0 while a PROXY header is read)."""
        self.closed = False
        self.idle_since = engine.clock()
        """Since when it has held no allocation (kept current by the component's tick)."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        engine.connections.add(self)
        self.start = StreamStart(peer, trusted)
        if trusted:
            engine.loop.add_reader(self.fd, self._preamble)
        else:
            self._attach(b"")

    def _preamble(self) -> None:
        """Read from a trusted peer until a PROXY header (or its absence) is known."""
        try:
            data = self.sock.recv(PREAMBLE_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        try:
            rest = self.start.feed(data)
        except ProxyHeaderError as exc:
            refused_header(self.addr, exc)
            self.close()
            return
        if rest is not None:
            self.engine.loop.remove_reader(self.fd)
            self.addr = self.start.client
            self._attach(rest)

    def _attach(self, initial: bytes) -> None:
        engine = self.engine
        try:
            self.handle = engine.fw.attach(self.fd, initial)
        except (ValueError, MemoryError, RuntimeError):
            self.close()  # more than a frame with the header, or the forwarder is busy
            return
        engine.streams[self.fd] = self
        engine.watch(self.fd)
        if initial:
            engine.loop.call_soon(engine.wake)  # frame what came with the header now

    def frame(self, data: bytes) -> None:
        """A frame C did not forward: STUN, or ChannelData/Send without a mirrored route or
        permission."""
        response = self.engine.server.handle(data, self, self.addr, True, self.engine.clock())
        if response is not None:
            self.write(response)

    def write(self, data: bytes) -> None:
        if self.handle and not self.closed and not self.engine.fw.write(self.handle, data):
            self.close()  # the client went away, or never reads

    def backlog(self) -> int:
        return self.engine.fw.backlog(self.handle) if self.handle and not self.closed else 0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        engine = self.engine
        engine.connections.discard(self)
        engine.server.close_client(self)  # its relays first: they name this connection in C
        if self.handle:
            if engine.streams.get(self.fd) is self:
                del engine.streams[self.fd]
            engine.unwatch(self.fd)
            with contextlib.suppress(KeyError, RuntimeError):
                engine.fw.detach(self.handle)
        else:
            with contextlib.suppress(Exception):
                engine.loop.remove_reader(self.fd)
        self.sock.close()


class NativeRelay:
    """A relay socket of an allocation on the :class:`NativeEngine` epoll set."""

    def __init__(self, engine: NativeEngine, sock: socket.socket, port: int, pool: PortPool,
                 al: Allocation) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.port = port
        self.pool = pool
        self.al = al
        self.sendto = functools.partial(sendto_quietly, sock)
        self.peers: dict[Any, Address] = {}
        """C's key of a peer address -> (host, port), learnt on first sight (bounded)."""
        fw = engine.fw
        partner = None  # the other family's relay of a dual allocation, if open
        for other in al.relays.values():
            if isinstance(other, NativeRelay) and not other.closed:
                partner = other.handle
        client = al.client_key
        self.stream: NativeStream | None = client if isinstance(client, NativeStream) else None
        if self.stream is not None:
            self.handle = fw.open_stream(self.fd, self.stream.handle, partner)
        else:
            host, cport = al.client_addr
            listener = engine.by_family[ip_family(host)]
            self.handle = fw.open(self.fd, listener.fileno(),
                                  sockaddr(listener.family, host, cport), partner)
        """This relay's handle in C: names this relay only, never a later one."""
        self.closed = False
        seed(fw, self.handle, al)
        self.push()
        al.observer = engine.mirror
        engine.relays[self.fd] = self
        engine.watch(self.fd)

    def push(self) -> None:
        """Mirror the allocation's routes and permissions of this socket's family into C."""
        if not self.closed:
            family = self.sock.family
            self.engine.fw.set_routes(self.handle, routes(self.al, family),
                                      permissions(self.al, family))

    def from_peer(self, data: bytes, key: Any, raw: bytes) -> None:
        """A peer's datagram C handed back (no channel or permission mirrored, too big)."""
        stream = self.stream
        if stream is not None and stream.backlog() > STREAM_BACKLOG:
            return  # a slow TCP client loses datagrams, as UDP would
        peer = self.peers.get(key) or remember(self.peers, PEER_CACHE, key, raw)
        if peer is None:
            return
        frame = self.al.channel_in(data, peer)
        if frame is None:
            return
        if stream is not None:
            stream.write(frame)
        else:
            self.engine.sendto(frame, self.al.client_addr)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        engine = self.engine
        if engine.relays.get(self.fd) is self:
            del engine.relays[self.fd]
            engine.unwatch(self.fd)
        settle(self.al, engine.fw.close(self.handle))  # before the server sums totals
        if not any(isinstance(r, NativeRelay) and not r.closed for r in self.al.relays.values()):
            self.al.observer = None
        self.sock.close()
        self.pool.release(self.port)
