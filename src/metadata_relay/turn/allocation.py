"""One TURN allocation: its relays, permissions, channels, and every forwarding decision.

What may pass between the client and its peers is decided here and nowhere else, for every
I/O edge (the event-loop transports and the C forwarder's slow path; Send indications come
through the state machine): :meth:`Allocation.channel_out` and :meth:`Allocation.send_out`
for client -> peer, :meth:`Allocation.channel_in` for peer -> client, and
:meth:`Allocation.relay_for`, the relay socket a peer is reached through (one per address
family: a dual allocation, RFC 8656, has an IPv4 and an IPv6 one).

``out_routes`` (channel number -> peer address) and ``in_routes`` (peer address -> channel
number) hold only channels whose permission is alive; the state machine rebuilds them on every
change so the relay path is a dict lookup with no clock reads. An I/O edge that keeps its own
copy of those tables and of :meth:`Allocation.port_range` for each permitted IP (the C
forwarder, :mod:`metadata_relay.turn.native`) sets ``observer``, which every rebuild calls, so
the copy can never outlive a permission or channel.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from metadata_relay.ratelimit import TokenBucket
from metadata_relay.turn.codec import Address, data_indication, ip_family
from metadata_relay.turn.peers import PeerPolicy

MAX_UDP = 65507
"""Largest IPv4 UDP payload: no frame for the client is bigger."""
EVERY_PORT = (0, 65535)
_CD = struct.Struct("!HH").pack
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


class Relay(Protocol):
    """The relay socket of an allocation, provided by the I/O edge."""

    port: int
    sendto: Callable[[bytes, Address], Any]

    def close(self) -> None: ...


class Allocation:
    __slots__ = (
        "by_in", "by_out", "channels", "client_addr", "client_key", "down", "expires",
        "in_routes", "key", "last_response", "last_txid", "observer", "out_routes", "peer_channels",
        "perms", "pk_in", "pk_out", "policy", "relay_addrs", "relays", "restricted", "tcp", "up",
        "user", "username",
    )

    def __init__(self, client_key: Hashable, client_addr: Address, tcp: bool, username: str,
                 user: str, key: bytes, expires: float, policy: PeerPolicy) -> None:
        self.client_key = client_key
        self.policy = policy
        self.client_addr = client_addr
        self.tcp = tcp
        self.username = username
        self.user = user
        self.key = key
        self.expires = expires
        self.relays: dict[int, Relay] = {}
        """Address family (4, 6) -> the relay socket of that family."""
        self.relay_addrs: dict[int, Address] = {}
        """Address family -> the advertised relayed transport address (XOR-RELAYED-ADDRESS)."""
        self.perms: dict[str, float] = {}
        """peer IP -> expiry."""
        self.restricted: set[str] = set()
        """Peer IPs permitted only through the own-relay rule (data limited to relay ports)."""
        self.channels: dict[int, tuple[Address, float]] = {}
        self.peer_channels: dict[Address, int] = {}
        self.out_routes: dict[int, Address] = {}
        self.in_routes: dict[Address, int] = {}
        self.last_txid = b""
        self.last_response = b""
        self.up: TokenBucket | None = None
        """Client -> peer bandwidth bucket (None: unlimited)."""
        self.down: TokenBucket | None = None
        self.pk_out = self.by_out = self.pk_in = self.by_in = 0
        self.observer: Callable[[Allocation], None] | None = None
        """Called after every route rebuild (set by an edge that mirrors the routes)."""

    def channel_out(self, data: bytes) -> tuple[bytes, Address] | None:
        """A ChannelData message from the client (at least 4 bytes, type bits 01; padding
        after the payload allowed): its payload and peer when the channel is bound and the up
        bucket allows it (then counted), else None (dropped)."""
        peer = self.out_routes.get(data[0] << 8 | data[1])
        if peer is None:
            return None
        n = data[2] << 8 | data[3]
        if n + 4 > len(data) or not self._charge_up(n):
            return None
        return data[4 : 4 + n], peer

    def relay_for(self, peer: Address) -> Relay | None:
        """The relay socket ``peer`` is reached through: the one of its address family."""
        return self.relays.get(ip_family(peer[0]))

    def port_range(self, ip: str) -> tuple[int, int] | None:
        """The ports data may use with peer ``ip``: None without a permission; the relay
        range for an IP permitted only through the own-address rule (a ChannelBind to one of
        this server's relay ports: never the node's other services); else every port."""
        if ip not in self.perms:
            return None
        return self.policy.relay_ports if ip in self.restricted else EVERY_PORT

    def permits(self, peer: Address) -> bool:
        """May data pass between the relay and ``peer`` ((host, port))? See
        :meth:`port_range`."""
        ports = self.port_range(peer[0])
        return ports is not None and ports[0] <= peer[1] <= ports[1]

    def send_out(self, peer: Address, data: bytes) -> bool:
        """A Send indication's payload for ``peer``: may it go out of the relay (then
        counted)? Needs a permission for the peer's IP, a relay-range port if that permission
        exists only through the own-address rule, and room in the up bucket."""
        return self.permits(peer) and self._charge_up(len(data))

    def _charge_up(self, n: int) -> bool:
        """``n`` client -> peer bytes: spent from the up bucket if it has them, and counted."""
        b = self.up
        if b is not None and not b.take(n):
            return False
        self.pk_out += 1
        self.by_out += n
        return True

    def channel_in(self, data: bytes, peer: Address) -> bytes | None:
        """A datagram from ``peer`` ((host, port)) on the relay socket: the frame for the
        client — ChannelData (padded to 4 for a TCP client) when the peer has a bound channel,
        else a Data indication when it has a permission (a relay-range port for an own-rule
        one) — if the down bucket allows it (then counted); None: dropped."""
        n = len(data)
        ch = self.in_routes.get(peer)
        if ch is not None and n <= MAX_UDP - 4:
            frame = _CD(ch, n) + data + _PAD[n & 3] if self.tcp else _CD(ch, n) + data
        else:
            if not self.permits(peer):
                return None
            frame = data_indication(peer, data, random.randbytes(12))
            if len(frame) > MAX_UDP:
                return None
        b = self.down
        if b is not None and not b.take(n):
            return None
        self.pk_in += 1
        self.by_in += n
        return frame

    def rebuild_routes(self) -> None:
        perms = self.perms
        out: dict[int, Address] = {}
        inn: dict[Address, int] = {}
        for number, (peer, _exp) in self.channels.items():
            if peer[0] in perms:
                out[number] = peer
                inn[peer] = number
        self.out_routes.clear()
        self.out_routes.update(out)
        self.in_routes.clear()
        self.in_routes.update(inn)
        if self.observer is not None:
            self.observer(self)
