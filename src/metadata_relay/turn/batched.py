"""The Linux fast path of the TURN UDP edge: the listener and the relay sockets of UDP-client
allocations on one ``epoll`` set, read with ``recvmmsg`` and answered with ``sendmmsg``.

One event-loop callback per wake-up (``add_reader`` on the epoll fd) handles every ready
socket: the listener is drained in batches of :data:`BATCH` datagrams; each ready relay socket
is received straight into the outgoing batch, 4 bytes into its slot, so a ChannelData message
only needs its header written in front, and the whole batch goes to the clients with one
``sendmmsg``. Client and peer addresses stay raw ``sockaddr`` bytes (an 8-byte integer for
IPv4): no ``inet_ntop``, no tuple and no string per datagram. Allocations of UDP clients are
keyed by that raw address (``TurnServer`` treats the client key as opaque).

With ``native_forwarding=True`` (and :mod:`metadata_relay.turn.native` importable) the
per-datagram work of bound channels moves into the C forwarder: one ``Forwarder.poll`` per
wake-up drains every ready socket, forwards ChannelData both ways and hands back only what
needs Python (STUN, Send/Data indications, misses), which then takes the same slow paths.

STUN requests, Send/Data indications and anything unusual take the slow path through the same
:class:`~metadata_relay.turn.server.TurnServer` as the portable transport in
:mod:`metadata_relay.turn.transport`, which stays in use where :func:`mmsg.available` is false.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import random
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from metadata_relay.turn import codec as c
from metadata_relay.turn import mmsg, native
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
ADDRESS_CACHE = 4096
"""Client addresses remembered by the listener's STUN path (raw -> (host, port))."""
PEER_CACHE = 64
"""Raw peer addresses remembered per relay socket (raw -> (host, port))."""
_CD_INTO = struct.Struct("!HH").pack_into
_CD = struct.Struct("!HH").pack


class BatchedUdp:
    """The STUN/TURN UDP port plus every UDP-client relay socket (see module docstring)."""

    def __init__(self, server: TurnServer, sock: socket.socket, native_forwarding: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.server = server
        self.clock = clock
        self.allocs = server.allocations
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.v4 = sock.family == socket.AF_INET
        self.relays: dict[int, BatchedRelay] = {}
        self.inb = mmsg.Batch(BATCH, SLOT)
        self.out = mmsg.Batch(BATCH, SLOT, pad=4)
        self.pending = 0
        self.addresses: dict[Any, Address] = {}
        """Raw client address key -> (host, port) for the STUN path (bounded)."""
        self.closed = False
        self.ep = select.epoll()
        self.ep.register(self.fd, select.EPOLLIN)
        self.fw: native.Forwarder | None = None
        """The C forwarder, when asked for and built (see :mod:`metadata_relay.turn.native`)."""
        if native_forwarding and native.available():
            self.fw = native.Forwarder(self.fd)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.ep.fileno(), self._wake_native if self.fw else self._wake)

    # ---- the interface the component and the portable relays use ----------------------

    def sendto(self, data: bytes, addr: Address) -> None:
        try:  # (not contextlib.suppress: this is on the Send indication path)
            self.sock.sendto(data, addr)
        except OSError:
            pass

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

    # ---- the C forwarder ------------------------------------------------------------------

    def _wake_native(self) -> None:
        fw = self.fw
        if fw is None or self.closed:
            return
        try:
            misses = fw.poll(self.ep.fileno())
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
                self._listener_datagram(data, key, raw)
            else:
                # Only to the allocation it was read for: an earlier miss of this batch may
                # have closed that one and a new allocation may have the same fd by now.
                relay = relays.get(fd)
                if relay is not None and relay.handle == handle:
                    relay.peer_datagram(data, key, raw)

    def settle(self) -> None:
        """Move the C forwarder's counts into the allocations (before a tick or a read)."""
        fw = self.fw
        if fw is None:
            return
        for relay in self.relays.values():
            if relay.handle:
                native.settle(relay.al, fw.pull(relay.handle))

    def seed(self) -> None:
        """Give the C forwarder the buckets' balances (after the tick refilled them)."""
        fw = self.fw
        if fw is None:
            return
        for relay in self.relays.values():
            if relay.handle and relay.al.up is not None:
                native.seed(fw, relay.handle, relay.al)

    def _listener_datagram(self, data: bytes, key: Any, raw: bytes) -> None:
        """One listener datagram the forwarder did not forward: ChannelData without a
        (mirrored) route, STUN, or garbage."""
        ln = len(data)
        if ln >= 4 and data[0] & 0xC0 == 0x40:
            al = self.allocs.get(key)
            out = al.channel_out(data) if al is not None else None
            if out is not None:
                with contextlib.suppress(OSError):
                    al.relay.send_raw(*out)  # type: ignore[union-attr]
            return
        addr = self._address(key, raw)
        if addr is None:
            return
        response = self.server.handle(data, key, addr, False, self.clock())
        if response is not None:
            self.sendto(response, addr)

    # ---- the hot path -------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            events = self.ep.poll(0, 4 * BATCH)
        except (OSError, ValueError):  # closed under us
            return
        lfd = self.fd
        relays = self.relays
        out = self.out
        recv, u32, peer_q, view = out.recv, out.rx_u32, out.rx_name_q, out.view
        tx_len, tx_name = out.tx_len, out.tx_name
        hu, lu, hp = mmsg.HDR_U32, mmsg.LEN_U32, mmsg.HDR_PTRS
        w = self.pending
        for rfd, _ev in events:
            if rfd == lfd:
                self._drain_listener()
                continue
            relay = relays.get(rfd)
            if relay is None:
                continue
            if w == BATCH:
                self.pending = w
                self._flush()
                w = 0
            n = recv(rfd, w, BATCH - w)
            if not n:
                continue
            end = w + n
            al = relay.al
            if al.down is not None or not relay.v4:
                w = self._relay_general(relay, w, end)
                continue
            # peer -> client over a channel: write the header in front, queue the slot
            lens = u32[w * hu + lu : end * hu : hu].tolist()
            keys = peer_q[w * 4 : end * 4 : 4].tolist()
            peers, routes = relay.peers, al.in_routes
            w0 = w
            nb = k = 0
            for j, ln, key in zip(range(w, end), lens, keys, strict=True):
                ch = routes.get(peers.get(key))  # type: ignore[arg-type]
                if ch is None or ln > MAX_UDP - 4:
                    # not a bound channel (or too big): the rest of this read goes the
                    # general way (Data indications, drops and the compaction they need)
                    w = self._relay_general(relay, j, end, w)
                    break
                _CD_INTO(view, j * SLOT, ch, ln)
                tx_len[2 * j + 1] = ln + 4
                nb += ln
                k += 1
                w += 1
            if w > w0:
                tx_name[w0 * hp : w * hp : hp] = relay.ptrs[: w - w0]
            al.pk_in += k
            al.by_in += nb
        self.pending = w
        if w:
            self._flush()

    def _flush(self) -> None:
        if not self.closed:
            self.out.send(self.fd, self.pending)
        self.pending = 0

    def _relay_general(self, relay: BatchedRelay, start: int, end: int, w: int = -1) -> int:
        """Datagrams ``start..end-1`` received on ``relay`` (slot ``j`` holds datagram ``j``,
        4 bytes in), queued from slot ``w`` on (default ``start``): rate limit, Data
        indications, drops and the compaction they need. Returns the next free slot."""
        if w < 0:
            w = start
        out = self.out
        u32, view, tx_len, tx_name = out.rx_u32, out.view, out.tx_len, out.tx_name
        hu, lu, hp = mmsg.HDR_U32, mmsg.LEN_U32, mmsg.HDR_PTRS
        al = relay.al
        for j in range(start, end):
            ln = u32[j * hu + lu]
            key = relay.peer_key(j)
            peer = relay.peers.get(key) or relay.learn(j, key)
            if peer is None:
                continue
            b = al.down
            if b is not None and not b.take(ln):
                continue
            ch = al.in_routes.get(peer)
            wo = w * SLOT
            if ch is not None and ln <= MAX_UDP - 4:
                if w != j:  # an earlier datagram was dropped: close the gap
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
                view[wo : wo + size] = frame
            al.pk_in += 1
            al.by_in += ln
            tx_name[w * hp] = relay.client_ptr
            tx_len[2 * w + 1] = size
            w += 1
        return w

    def _drain_listener(self) -> None:
        inb = self.inb
        fd, allocs, v4 = self.fd, self.allocs, self.v4
        u32, view, names_q, heads = inb.rx_u32, inb.view, inb.rx_name_q, inb.head_u32
        hu, lu, step = mmsg.HDR_U32, mmsg.LEN_U32, SLOT // 4
        for _ in range(LISTENER_ROUNDS):
            n = inb.recv(fd, 0, BATCH)
            if not n:
                return
            lens = u32[lu : n * hu : hu].tolist()
            keys = names_q[0 : n * 4 : 4].tolist() if v4 else [
                self._v6_key(i) for i in range(n)]
            # the first 4 bytes of each datagram as a little-endian integer:
            # byte 0 (type bits, channel high) is h & 0xFF ... byte 3 (length low) is h >> 24
            for i, h, ln, key in zip(range(n), heads[0 : n * step : step].tolist(), lens, keys,
                                     strict=True):
                if h & 0xC0 != 0x40 or ln < 4:
                    if 0 < ln <= SLOT:
                        self._stun(i, i * SLOT, ln, key)
                    continue
                # ChannelData: the hot path
                al = allocs.get(key)
                if al is None:
                    continue
                peer = al.out_routes.get((h & 0xFF) << 8 | (h >> 8 & 0xFF))
                if peer is None:
                    continue
                cl = (h >> 8 & 0xFF00) | h >> 24
                if cl + 4 > ln:
                    continue
                b = al.up
                if b is not None and not b.take(cl):
                    continue
                al.pk_out += 1
                al.by_out += cl
                off = i * SLOT + 4
                try:
                    al.relay.send_raw(view[off : off + cl], peer)  # type: ignore[union-attr]
                except OSError:
                    pass
            if n < BATCH:
                return

    def _v6_key(self, i: int) -> bytes:
        start = i * mmsg.NAME_STRIDE
        return bytes(self.inb.rx_names[start : start + mmsg.SOCKADDR_SIZE])

    def _stun(self, i: int, off: int, ln: int, key: Any) -> None:
        """A STUN message (or garbage) on the listener: the state machine answers it."""
        addr = self.addresses.get(key)
        if addr is None:
            start = i * mmsg.NAME_STRIDE
            addr = self._address(key, bytes(self.inb.rx_names[start : start + mmsg.SOCKADDR_SIZE]))
            if addr is None:
                return
        response = self.server.handle(bytes(self.inb.view[off : off + ln]), key, addr, False,
                                      self.clock())
        if response is not None:
            self.sendto(response, addr)

    def _address(self, key: Any, raw: bytes) -> Address | None:
        """(host, port) of a raw client address, remembered under its key (bounded)."""
        addr = self.addresses.get(key)
        if addr is None:
            try:
                addr = mmsg.sockaddr_to_address(raw)
            except (OSError, ValueError):
                return None
            if len(self.addresses) >= ADDRESS_CACHE:
                self.addresses.clear()
            self.addresses[key] = addr
        return addr


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
        self.ptrs = memoryview(array.array("Q" if mmsg.HDR_PTRS == 8 else "I",
                                           [self.client_ptr] * BATCH))
        """The client address pointer BATCH times (msg_name of a run of queued slots)."""
        self.closed = False
        self.handle = 0
        """This allocation's handle in the endpoint's C forwarder (0: none)."""
        fw = endpoint.fw
        if fw is not None:
            self.handle = fw.open(self.fd, raw)
            native.seed(fw, self.handle, al)
            al.observer = self.routes_changed
        endpoint.add(self)

    def routes_changed(self, al: Allocation) -> None:
        """``Allocation.observer``: mirror the rebuilt routes into the C forwarder at once."""
        fw = self.endpoint.fw
        if fw is not None and self.handle:
            # peers are reached through the relay socket: its family, not the listener's
            fw.set_routes(self.handle, native.routes(al, self.sock.family))

    def peer_datagram(self, data: bytes, key: Any, raw: bytes) -> None:
        """A peer's datagram the C forwarder handed back: no mirrored channel (a Data
        indication if permitted), or too big for a ChannelData frame."""
        peer = self.peers.get(key)
        if peer is None:
            peer = self._learn(key, raw)
            if peer is None:
                return
        al = self.al
        ln = len(data)
        b = al.down
        if b is not None and not b.take(ln):
            return
        ch = al.in_routes.get(peer)
        if ch is not None and ln <= MAX_UDP - 4:
            frame = _CD(ch, ln) + data
        else:
            if ln > MAX_UDP:
                return
            indication = self.indication(data, peer)
            if indication is None or len(indication) > MAX_UDP:
                return
            frame = indication
        al.pk_in += 1
        al.by_in += ln
        self.endpoint.sendto(frame, al.client_addr)

    def sendto(self, data: bytes, addr: Address) -> None:
        try:  # (not contextlib.suppress: this is on the Send indication path)
            self.sock.sendto(data, addr)
        except OSError:
            pass

    def peer_key(self, j: int) -> Any:
        """The key of the peer address of datagram ``j`` of the outgoing batch."""
        if self.v4:
            return self.endpoint.out.rx_name_q[j * 4]
        start = j * mmsg.NAME_STRIDE
        return bytes(self.endpoint.out.rx_names[start : start + mmsg.SOCKADDR_SIZE])

    def learn(self, j: int, key: Any) -> Address | None:
        """Remember the (host, port) of datagram ``j``'s peer under ``key``."""
        start = j * mmsg.NAME_STRIDE
        names = self.endpoint.out.rx_names
        return self._learn(key, bytes(names[start : start + mmsg.SOCKADDR_SIZE]))

    def _learn(self, key: Any, raw: bytes) -> Address | None:
        try:
            host, port = mmsg.sockaddr_to_address(raw)
        except (OSError, ValueError):
            return None
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        if len(self.peers) >= PEER_CACHE:
            self.peers.clear()
        peer = (host, port)
        self.peers[key] = peer
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
        fw = self.endpoint.fw
        if fw is not None and self.handle:
            native.settle(self.al, fw.close(self.handle))  # before the server sums the totals
            self.handle = 0
            self.al.observer = None
        self.sock.close()
        self.pool.release(self.port)


def _discard(data: Any, addr: Address) -> None:
    pass
