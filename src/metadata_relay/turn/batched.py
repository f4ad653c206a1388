"""The Linux fast path of the TURN UDP edge: the listener and the relay sockets of UDP-client
allocations on one ``epoll`` set, read with ``recvmmsg`` and answered with ``sendmmsg``.

One event-loop callback per wake-up (``add_reader`` on the epoll fd) handles every ready
socket: the listener is drained in batches of :data:`BATCH` datagrams; each ready relay socket
is received straight into the outgoing batch, 4 bytes into its slot, so a ChannelData message
only needs its header written in front, and the whole batch goes to the clients with one
``sendmmsg``. Client and peer addresses stay raw ``sockaddr`` bytes (an 8-byte integer for
IPv4): no ``inet_ntop``, no tuple and no string per datagram. Allocations of UDP clients are
keyed by that raw address (``TurnServer`` treats the client key as opaque).

STUN requests, Send/Data indications and anything unusual take the slow path through the same
:class:`~metadata_relay.turn.server.TurnServer` as the portable transport in
:mod:`metadata_relay.turn.transport`, which stays in use where :func:`mmsg.available` is false.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import random
import select
import socket
import struct
import sys
import time
from typing import Any

from metadata_relay.turn import codec as c
from metadata_relay.turn import mmsg
from metadata_relay.turn.allocation import Allocation
from metadata_relay.turn.codec import Address
from metadata_relay.turn.ports import PortPool
from metadata_relay.turn.server import TurnServer

BATCH = 64
"""Datagrams per recvmmsg/sendmmsg call."""
SLOT = 65536 + 64
"""Room for the largest UDP payload plus a ChannelData header."""
MAX_UDP = 65507
"""Largest IPv4 UDP payload: anything bigger cannot go to a UDP client."""
LISTENER_ROUNDS = 4
"""recvmmsg calls on the listener per wake-up at most (epoll is level-triggered: the rest
waits for the next wake-up, so relay sockets get their turn)."""
PEER_CACHE = 64
"""Raw peer addresses remembered per relay socket (raw -> (host, port))."""
_CD_INTO = struct.Struct("!HH").pack_into


def raw_key(raw: bytes) -> Any:
    """The allocation key of a raw client address, as the hot path computes it."""
    if int.from_bytes(raw[:2], sys.byteorder) == socket.AF_INET:
        return int.from_bytes(raw[:8], sys.byteorder)
    return bytes(raw[: mmsg.SOCKADDR_SIZE])


class BatchedUdp:
    """The STUN/TURN UDP port plus every UDP-client relay socket (see module docstring)."""

    def __init__(self, server: TurnServer, sock: socket.socket) -> None:
        self.server = server
        self.allocs = server.allocations
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.v4 = sock.family == socket.AF_INET
        self.relays: dict[int, BatchedRelay] = {}
        self.inb = mmsg.Batch(BATCH, SLOT)
        self.out = mmsg.Batch(BATCH, SLOT, pad=4)
        self.pending = 0
        self.closed = False
        self.ep = select.epoll()
        self.ep.register(self.fd, select.EPOLLIN)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.ep.fileno(), self._wake)

    # ---- the interface the component and the portable relays use ----------------------

    def sendto(self, data: bytes, addr: Address) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(data, addr)

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

    def add(self, relay: BatchedRelay) -> None:
        self.relays[relay.fd] = relay
        self.ep.register(relay.fd, select.EPOLLIN)

    def remove(self, relay: BatchedRelay) -> None:
        if self.relays.get(relay.fd) is relay:
            del self.relays[relay.fd]
            if not self.closed:
                with contextlib.suppress(OSError, ValueError):
                    self.ep.unregister(relay.fd)

    # ---- the hot path -------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            events = self.ep.poll(0, 4 * BATCH)
        except (OSError, ValueError):  # closed under us
            return
        fd = self.fd
        relays = self.relays
        for rfd, _ev in events:
            if rfd == fd:
                self._drain_listener()
                continue
            relay = relays.get(rfd)
            if relay is not None:
                self._drain_relay(relay)
        if self.pending:
            self._flush()

    def _flush(self) -> None:
        if not self.closed:
            self.out.send(self.fd, self.pending)
        self.pending = 0

    def _drain_listener(self) -> None:
        inb = self.inb
        fd, allocs, v4 = self.fd, self.allocs, self.v4
        u32, view, names_q = inb.rx_u32, inb.view, inb.rx_name_q
        hu, lu = mmsg.HDR_U32, mmsg.LEN_U32
        for _ in range(LISTENER_ROUNDS):
            n = inb.recv(fd, 0, BATCH)
            for i in range(n):
                ln = u32[i * hu + lu]
                off = i * SLOT
                if ln > SLOT or ln < 4:
                    if 0 < ln <= SLOT:
                        self._stun(i, off, ln)
                    continue
                if view[off] & 0xC0 != 0x40:
                    self._stun(i, off, ln)
                    continue
                # ChannelData: the hot path
                al = allocs.get(names_q[i * 4] if v4 else self._v6_key(i))
                if al is None:
                    continue
                peer = al.out_routes.get(view[off] << 8 | view[off + 1])
                if peer is None:
                    continue
                cl = view[off + 2] << 8 | view[off + 3]
                if cl + 4 > ln:
                    continue
                b = al.up
                if b is not None:
                    b.tokens -= cl
                    if b.tokens < 0:
                        b.tokens += cl
                        continue
                al.pk_out += 1
                al.by_out += cl
                try:
                    al.relay.send_raw(view[off + 4 : off + 4 + cl], peer)  # type: ignore[union-attr]
                except OSError:
                    pass
            if n < BATCH:
                return

    def _v6_key(self, i: int) -> bytes:
        start = i * mmsg.NAME_STRIDE
        return bytes(self.inb.rx_names[start : start + mmsg.SOCKADDR_SIZE])

    def _stun(self, i: int, off: int, ln: int) -> None:
        start = i * mmsg.NAME_STRIDE
        raw = bytes(self.inb.rx_names[start : start + mmsg.SOCKADDR_SIZE])
        try:
            addr = mmsg.sockaddr_to_address(raw)
        except (OSError, ValueError):
            return
        response = self.server.handle(bytes(self.inb.view[off : off + ln]), raw_key(raw), addr,
                                      False, time.time())
        if response is not None:
            self.sendto(response, addr)

    def _drain_relay(self, relay: BatchedRelay) -> None:
        out = self.out
        u32, view, peer_q = out.rx_u32, out.view, out.rx_name_q
        tx_len, tx_name = out.tx_len, out.tx_name
        hu, lu, hp = mmsg.HDR_U32, mmsg.LEN_U32, mmsg.HDR_PTRS
        al = relay.al
        routes, peers, fd, ptr, v4 = al.in_routes, relay.peers, relay.fd, relay.client_ptr, relay.v4
        w = self.pending
        for _ in range(2):
            if w == BATCH:
                self.pending = w
                self._flush()
                w = 0
            n = out.recv(fd, w, BATCH - w)
            for j in range(w, w + n):
                ln = u32[j * hu + lu]
                peer = peers.get(peer_q[j * 4] if v4 else relay.v6_key(j))
                if peer is None:
                    peer = relay.learn(j)
                    if peer is None:
                        continue
                b = al.down
                if b is not None:
                    b.tokens -= ln
                    if b.tokens < 0:
                        b.tokens += ln
                        continue
                ch = routes.get(peer)
                if ch is not None and ln <= MAX_UDP - 4:
                    wo = w * SLOT
                    if w != j:  # an earlier datagram of this read was dropped: close the gap
                        jo = j * SLOT
                        view[wo + 4 : wo + 4 + ln] = view[jo + 4 : jo + 4 + ln]
                    _CD_INTO(view, wo, ch, ln)
                    size = ln + 4
                else:
                    if ln > MAX_UDP:
                        continue
                    frame = relay.indication(bytes(view[j * SLOT + 4 : j * SLOT + 4 + ln]), peer)
                    if frame is None or len(frame) > MAX_UDP:
                        continue
                    size = len(frame)
                    wo = w * SLOT
                    view[wo : wo + size] = frame
                al.pk_in += 1
                al.by_in += ln
                tx_name[w * hp] = ptr
                tx_len[2 * w + 1] = size
                w += 1
            if w < BATCH:
                break
        self.pending = w


class BatchedRelay:
    """An allocation's relay socket on the :class:`BatchedUdp` epoll set (UDP clients)."""

    def __init__(self, endpoint: BatchedUdp, sock: socket.socket, port: int, pool: PortPool,
                 al: Allocation) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self.fd = sock.fileno()
        self.v4 = sock.family == socket.AF_INET
        self.port = port
        self.pool = pool
        self.al = al
        self.send_raw: Any = sock.sendto
        self.peers: dict[Any, Address] = {}
        """Raw peer address key -> (host, port), learnt on first sight."""
        raw = mmsg.address_to_sockaddr(endpoint.family, al.client_addr[0], al.client_addr[1])
        self.client_sa = ctypes.create_string_buffer(raw, mmsg.SOCKADDR_SIZE)
        self.client_ptr = ctypes.addressof(self.client_sa)
        self.closed = False
        endpoint.add(self)

    def sendto(self, data: bytes, addr: Address) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(data, addr)

    def v6_key(self, j: int) -> bytes:
        start = j * mmsg.NAME_STRIDE
        return bytes(self.endpoint.out.rx_names[start : start + mmsg.SOCKADDR_SIZE])

    def learn(self, j: int) -> Address | None:
        start = j * mmsg.NAME_STRIDE
        raw = bytes(self.endpoint.out.rx_names[start : start + mmsg.SOCKADDR_SIZE])
        try:
            host, port = mmsg.sockaddr_to_address(raw)
        except (OSError, ValueError):
            return None
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        if len(self.peers) >= PEER_CACHE:
            self.peers.clear()
        peer = (host, port)
        self.peers[raw_key(raw)] = peer
        return peer

    def indication(self, data: bytes, peer: Address) -> bytes | None:
        if peer[0] not in self.al.perms:
            return None
        return c.data_indication(peer, data, random.randbytes(12))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.send_raw = _discard
        self.endpoint.remove(self)
        self.sock.close()
        self.pool.release(self.port)


def _discard(data: Any, addr: Address) -> None:
    pass
