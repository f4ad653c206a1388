"""Drive the sans-I/O TURN state machine directly: a client that signs requests, and a relay
port that records what the server would send (no sockets; the transports are tested in
tests/integration and tests/interop)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from typing import Any

from metadata_relay.config import load_settings
from metadata_relay.turn import codec as c
from metadata_relay.turn.allocation import Allocation
from metadata_relay.turn.codec import Address, Message
from metadata_relay.turn.credentials import long_term_key, rest_credential
from metadata_relay.turn.nonce import NonceFactory
from metadata_relay.turn.peers import PeerPolicy
from metadata_relay.turn.ports import PortPool
from metadata_relay.turn.server import TurnConfig, TurnServer

REALM = "example.org"
RELAY_IP = "203.0.113.7"
T0 = 1_800_000_000.0
DENIED = load_settings({}).TURN_DENIED_PEERS
PUBLIC_PEER: Address = ("8.8.8.8", 3480)  # never contacted: the relay below only records


class RecordingRelay:
    def __init__(self, port: int, pool: PortPool, family: int = 4) -> None:
        self.port = port
        self.pool = pool
        self.family = family
        self.sent: list[tuple[bytes, Address]] = []
        self.closed = False

    def sendto(self, data: bytes, addr: Address) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        self.closed = True
        self.pool.release(self.port)


class Harness:
    def __init__(self, ports: tuple[int, int] = (50000, 50003), allowed: Sequence[str] = (),
                 relay_ip: str = RELAY_IP, relay_ipv6: str | None = None,
                 **config: Any) -> None:
        self.pool = PortPool(*ports)
        self.relays: list[RecordingRelay] = []
        relay_ips = (relay_ip, *([relay_ipv6] if relay_ipv6 else []))
        cfg = TurnConfig(realm=REALM, secrets=("s1", "s2"), relay_ips=relay_ips, **config)
        policy = PeerPolicy(DENIED, [ipaddress.ip_network(a) for a in allowed],
                            own_ips=relay_ips, relay_ports=ports)
        self.server = TurnServer(cfg, policy, self.open, NonceFactory(600, key=b"n" * 32))

    def open(self, al: Allocation, family: int, even: bool) -> RecordingRelay | None:
        for port in self.pool.candidates(even=even):
            self.pool.take(port)
            relay = RecordingRelay(port, self.pool, family)
            self.relays.append(relay)
            return relay
        return None

    def client(self, **kw: Any) -> Client:
        return Client(self, **kw)


class Client:
    def __init__(self, h: Harness, addr: Address = ("192.0.2.50", 40000), user: str = "alice",
                 secret: str = "s1", ttl: int = 3600, now: float = T0, tcp: bool = False,
                 key: Any = None) -> None:
        self.h = h
        self.addr = addr
        self.key_id = key if key is not None else addr
        self.tcp = tcp
        self.username, self.password = rest_credential(secret, user, ttl, now)
        self.key = long_term_key(self.username, REALM, self.password)
        self.nonce = h.server.nonces.issue(now)

    def raw(self, data: bytes, now: float = T0) -> Message | None:
        out = self.h.server.handle(data, self.key_id, self.addr, self.tcp, now)
        if out is None:
            return None
        msg = c.parse(out)
        assert msg is not None, "server sent something unparsable"
        return msg

    def build(self, method: int, attrs: Sequence[tuple[int, bytes]] = (), *,
              txid: bytes | None = None, sign: bool = True, fingerprint: bool = True) -> bytes:
        txid = txid or os.urandom(12)
        full = list(attrs)
        if sign:
            full += [(c.USERNAME, self.username.encode()), (c.REALM, REALM.encode()),
                     (c.NONCE, self.nonce.encode())]
        return c.encode(method, c.REQUEST, txid, full, key=self.key if sign else None,
                        fingerprint=fingerprint)

    def request(self, method: int, attrs: Sequence[tuple[int, bytes]] = (), now: float = T0,
                **kw: Any) -> Message:
        msg = self.raw(self.build(method, attrs, **kw), now)
        assert msg is not None
        return msg

    def allocate(self, *extra: tuple[int, bytes], now: float = T0, **kw: Any) -> Message:
        """Allocate with REQUESTED-TRANSPORT UDP and ``extra`` attributes."""
        return self.request(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0"), *extra],
                            now, **kw)

    def peer(self, peer: Address, txid: bytes) -> tuple[int, bytes]:
        return c.XOR_PEER_ADDRESS, c.xor_address(peer[0], peer[1], txid)

    def permission(self, *peers: Address, now: float = T0) -> Message:
        txid = os.urandom(12)
        return self.request(c.CREATE_PERMISSION, [self.peer(p, txid) for p in peers], now,
                            txid=txid)

    def bind(self, channel: int, peer: Address, now: float = T0) -> Message:
        txid = os.urandom(12)
        return self.request(c.CHANNEL_BIND, [
            (c.CHANNEL_NUMBER, channel.to_bytes(2, "big") + b"\0\0"), self.peer(peer, txid)],
            now, txid=txid)

    def send_indication(self, peer: Address | None, data: bytes | None) -> None:
        txid = os.urandom(12)
        attrs = []
        if peer is not None:
            attrs.append(self.peer(peer, txid))
        if data is not None:
            attrs.append((c.DATA_ATTR, data))
        out = self.h.server.handle(c.encode(c.SEND, c.INDICATION, txid, attrs), self.key_id,
                                   self.addr, self.tcp, T0)
        assert out is None  # indications never get an answer

    def allocation(self) -> Allocation:
        return self.h.server.allocations[self.key_id]


def code(msg: Message) -> int:
    if msg.cls == c.SUCCESS:
        return 200
    return c.parse_error(msg.attrs[c.ERROR_CODE])[0]


def relayed(resp: Message) -> list[Address]:
    """Every XOR-RELAYED-ADDRESS of an Allocate answer (a dual allocation has two)."""
    out = [c.parse_xor_address(value, resp.txid)
           for value in c.every(resp, c.XOR_RELAYED_ADDRESS)]
    assert None not in out
    return out  # type: ignore[return-value]


def signed(msg: Message, key: bytes) -> bool:
    return msg.has_fingerprint and msg.verify_integrity(key)
