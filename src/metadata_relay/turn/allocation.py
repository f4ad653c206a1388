"""One TURN allocation: its relay, permissions, channels, and the hot-path lookup tables.

``out_routes`` (channel number -> peer address) and ``in_routes`` (peer address -> channel
number) hold only channels whose permission is alive; the state machine rebuilds them on every
change so the relay path is a dict lookup with no clock reads. An I/O edge that keeps its own
copy of those tables (the C forwarder, :mod:`metadata_relay.turn.native`) sets ``observer``,
which every rebuild calls, so the copy can never outlive a permission or channel.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol

from metadata_relay.turn.codec import Address
from metadata_relay.turn.ratelimit import TokenBucket


class Relay(Protocol):
    """The relay socket of an allocation, provided by the I/O edge."""

    port: int
    sendto: Callable[[bytes, Address], Any]

    def close(self) -> None: ...


class Allocation:
    __slots__ = (
        "by_in", "by_out", "channels", "client_addr", "client_key", "down", "expires",
        "in_routes", "key", "last_response", "last_txid", "observer", "out_routes", "peer_channels",
        "perms", "pk_in", "pk_out", "relay", "relay_addr", "restricted", "tcp", "up", "user",
        "username",
    )

    def __init__(self, client_key: Hashable, client_addr: Address, tcp: bool, username: str,
                 user: str, key: bytes, expires: float) -> None:
        self.client_key = client_key
        self.client_addr = client_addr
        self.tcp = tcp
        self.username = username
        self.user = user
        self.key = key
        self.expires = expires
        self.relay: Relay | None = None
        self.relay_addr: Address = ("0.0.0.0", 0)
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
        """A ChannelData message from the client (at least 4 bytes, type bits 01): its
        payload and peer when the channel is bound and the up bucket allows it (then counted),
        else None (dropped). The edges' batched hot loops inline the same steps."""
        peer = self.out_routes.get(data[0] << 8 | data[1])
        if peer is None:
            return None
        n = data[2] << 8 | data[3]
        if n + 4 > len(data):
            return None
        b = self.up
        if b is not None and not b.take(n):
            return None
        self.pk_out += 1
        self.by_out += n
        return data[4 : 4 + n], peer

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
