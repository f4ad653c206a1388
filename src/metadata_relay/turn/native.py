"""The C forwarder's UDP edge (Linux): the TURN listener and the relay sockets of UDP-client
allocations on one ``epoll`` set, drained by ``_forward.Forwarder.poll`` (``_forward.c``).

Why it exists: on T1 the interpreter time of the per-datagram ChannelData loops was the whole
gap to coturn. The C module forwards ChannelData of bound channels both ways and decides
nothing else: one ``poll`` per event-loop wake-up drains every ready socket and hands back
what needs Python — STUN (to :class:`~metadata_relay.turn.server.TurnServer`), ChannelData
without a mirrored route (:meth:`Allocation.channel_out`), peer datagrams without one
(:meth:`Allocation.channel_in`: Data indications, drops) — the decisions the event-loop edge
(:mod:`metadata_relay.turn.transport`) takes for every datagram. Keeping C truthful:

* :func:`routes` turns an allocation's ``out_routes`` into the C table's form; the relay
  calls it from ``Allocation.observer``, i.e. on every rebuild the state machine makes, so a
  route never outlives its channel or permission, and C forgets them when the relay closes.
* :func:`settle` moves the packet/byte counts C made into ``Allocation.pk_out`` etc. (what
  ``/stats`` and ``/metrics`` read) and charges the bytes to the allocation's Python token
  buckets; :func:`seed` copies the buckets' balances back into C after the tick refilled them.
  Both paths thus draw on one balance, reconciled at every tick and every ``/stats`` read:
  over one tick (0.25 s) a client mixing ChannelData with Send indications can overdraw by at
  most one tick's worth, after which the debt blocks it; the long-run rate is exact.
* A datagram handed back for a relay socket carries its allocation's handle: one read before
  a Refresh to 0 closed that allocation (and a new one got the same fd) is dropped.

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
from metadata_relay.turn.codec import Address
from metadata_relay.turn.ports import PortPool
from metadata_relay.turn.server import TurnServer
from metadata_relay.turn.transport import sendto_quietly

try:
    from metadata_relay.turn._forward import Forwarder
except ImportError as exc:  # not built: the event-loop edge serves
    Forwarder = None  # type: ignore[assignment,misc]
    IMPORT_ERROR: str | None = str(exc)
else:
    IMPORT_ERROR = None

ADDRESS_CACHE = 4096
"""Client addresses remembered by the listener (C's key -> (host, port))."""
PEER_CACHE = 64
"""Peer addresses remembered per relay socket (C's key -> (host, port))."""


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
    """``(channel, raw peer sockaddr)`` for every route of ``al`` (its live channels)."""
    out = []
    for number, (host, port) in al.out_routes.items():
        try:
            out.append((number, sockaddr(family, host, port)))
        except (OSError, ValueError):
            continue  # not of the relay's family: unreachable from this socket anyway
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


class NativeUdp:
    """The STUN/TURN UDP port plus every UDP-client relay socket, forwarded in C."""

    def __init__(self, server: TurnServer, sock: socket.socket,
                 clock: Callable[[], float]) -> None:
        if Forwarder is None:
            raise RuntimeError(f"the C forwarder is not built: {IMPORT_ERROR}")
        self.server = server
        self.allocs = server.allocations
        self.clock = clock
        self.sock = sock
        self.fd = sock.fileno()
        self.relays: dict[int, NativeRelay] = {}
        """fd -> the relay socket on it now."""
        self.addresses: dict[Any, Address] = {}
        """C's key of a client address -> (host, port) (bounded)."""
        self.closed = False
        self.fw = Forwarder(self.fd)
        self.ep = select.epoll()
        self.ep.register(self.fd, select.EPOLLIN)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.ep.fileno(), self.wake)

    def sendto(self, data: bytes, addr: Address) -> None:
        sendto_quietly(self.sock, data, addr)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.ep.fileno())
        self.ep.close()
        self.sock.close()

    def relay(self, sock: socket.socket, port: int, pool: PortPool, al: Allocation
              ) -> NativeRelay:
        """The relay socket ``sock`` of the new UDP-client allocation ``al``, forwarded here."""
        return NativeRelay(self, sock, port, pool, al)

    def add(self, relay: NativeRelay) -> None:
        self.relays[relay.fd] = relay
        self.ep.register(relay.fd, select.EPOLLIN)

    def remove(self, relay: NativeRelay) -> None:
        if self.relays.get(relay.fd) is relay:
            del self.relays[relay.fd]
            if not self.closed:
                with contextlib.suppress(OSError, ValueError):
                    self.ep.unregister(relay.fd)

    def wake(self) -> None:
        """One event-loop wake-up: C drains every ready socket; the rest is done here."""
        if self.closed:
            return
        try:
            misses = self.fw.poll(self.ep.fileno())
        except (OSError, ValueError):  # closed under us
            return
        if not misses:
            return
        lfd, relays = self.fd, self.relays
        for fd, handle, data, key, raw in misses:
            if data is None or raw is None:
                # a ready fd the forwarder does not know (cannot happen: every relay is opened
                # in C before it joins the epoll set); stop watching it rather than spin
                with contextlib.suppress(OSError, ValueError):
                    self.ep.unregister(fd)
                continue
            if fd == lfd:
                self._from_client(data, key, raw)
                continue
            # Only to the allocation it was read for: an earlier miss of this batch may have
            # closed that one, and a new allocation may have the same fd by now.
            relay = relays.get(fd)
            if relay is not None and relay.handle == handle:
                relay.from_peer(data, key, raw)

    def _from_client(self, data: bytes, key: Any, raw: bytes) -> None:
        """A listener datagram C did not forward: ChannelData without a mirrored route, STUN,
        or garbage."""
        addr = self.addresses.get(key) or remember(self.addresses, ADDRESS_CACHE, key, raw)
        if addr is None:
            return
        if len(data) >= 4 and data[0] & 0xC0 == 0x40:
            al = self.allocs.get(addr)
            out = al.channel_out(data) if al is not None else None
            if out is not None:
                al.relay.sendto(*out)  # type: ignore[union-attr]
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


class NativeRelay:
    """An allocation's relay socket on the :class:`NativeUdp` epoll set (UDP clients)."""

    def __init__(self, endpoint: NativeUdp, sock: socket.socket, port: int, pool: PortPool,
                 al: Allocation) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self.fd = sock.fileno()
        self.port = port
        self.pool = pool
        self.al = al
        self.sendto = functools.partial(sendto_quietly, sock)
        self.peers: dict[Any, Address] = {}
        """C's key of a peer address -> (host, port), learnt on first sight (bounded)."""
        client = sockaddr(endpoint.sock.family, al.client_addr[0], al.client_addr[1])
        self.handle = endpoint.fw.open(self.fd, client)
        """This allocation's handle in C: names this relay only, never a later one."""
        self.closed = False
        seed(endpoint.fw, self.handle, al)
        al.observer = self.routes_changed
        endpoint.add(self)

    def routes_changed(self, al: Allocation) -> None:
        """``Allocation.observer``: mirror the rebuilt routes into C at once (peers are
        reached through the relay socket: its family, not the listener's)."""
        if not self.closed:
            self.endpoint.fw.set_routes(self.handle, routes(al, self.sock.family))

    def from_peer(self, data: bytes, key: Any, raw: bytes) -> None:
        """A peer's datagram C handed back (no mirrored channel, or too big for a frame)."""
        peer = self.peers.get(key) or remember(self.peers, PEER_CACHE, key, raw)
        if peer is None:
            return
        frame = self.al.channel_in(data, peer)
        if frame is not None:
            self.endpoint.sendto(frame, self.al.client_addr)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.endpoint.remove(self)
        settle(self.al, self.endpoint.fw.close(self.handle))  # before the server sums totals
        self.al.observer = None
        self.sock.close()
        self.pool.release(self.port)

