"""The TURN state machine (RFC 8656 over RFC 8489), sans-I/O.

:meth:`TurnServer.handle` takes one STUN message's bytes, the client's 5-tuple key and address
and the current time, and returns the response bytes (or ``None``). Relay sockets come from an
injected ``opener`` (the I/O edge), one per address family of the allocation (RFC 8656: an
IPv4 or an IPv6 relay, or both for a dual allocation); Send indications go out through
``Allocation.relay_for``.
Periodic :meth:`TurnServer.tick` expires allocations, permissions and channels and refills
the bandwidth buckets.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from metadata_relay.ratelimit import TokenBucket
from metadata_relay.turn import codec as c
from metadata_relay.turn.allocation import Allocation, Relay
from metadata_relay.turn.codec import Address, Message
from metadata_relay.turn.credentials import (
    MAX_USERNAME_BYTES,
    candidate_keys,
    parse_rest_username,
)
from metadata_relay.turn.nonce import NonceFactory
from metadata_relay.turn.peers import PeerPolicy, normalise

Opener = Callable[[Allocation, int, bool], Relay | None]
"""(allocation, address family 4 or 6, even port wanted) -> relay socket of that family, or
None when no port is free."""
UDP_TRANSPORT = 17


@dataclass
class TurnConfig:
    realm: str
    secrets: tuple[str, ...]
    relay_ips: tuple[str, ...]
    """Advertised relay addresses (XOR-RELAYED-ADDRESS), at most one per address family: the
    families this server allocates relays in."""
    default_lifetime: int = 600
    max_lifetime: int = 3600
    permission_lifetime: int = 300
    channel_lifetime: int = 600
    nonce_lifetime: int = 600
    user_quota: int = 10
    ip_quota: int = 16
    """Allocations per client address (IPv6: per /64, what one subscriber gets): well below
    the relay range, so no single source can take every relay port."""
    max_rate: int = 0
    """Bytes per second per allocation and direction; 0 = unlimited."""
    max_permissions: int = 64
    software: str | None = None
    channel_max: int = 0x7FFF
    """Highest channel number accepted. RFC 8656 narrows the range to 0x4FFF, but Debian's
    coturn 4.6.1 ``turnutils_uclient`` (and browsers built on RFC 5766) pick up to 0x7FFF, so
    the RFC 5766 range is accepted by default; set 0x4FFF for strict RFC 8656."""


def source(ip: str) -> str:
    """What :attr:`TurnConfig.ip_quota` counts: the client's IPv4 address (also when written
    IPv4-mapped), or the /64 of its IPv6 address."""
    addr = normalise(ip)
    if addr is None:
        return ip
    if addr.version == 6:
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class TurnServer:
    def __init__(self, config: TurnConfig, policy: PeerPolicy, opener: Opener,
                 nonces: NonceFactory | None = None) -> None:
        self.config = config
        self.policy = policy
        self.opener = opener
        self.nonces = nonces or NonceFactory(config.nonce_lifetime)
        self.allocations: dict[Hashable, Allocation] = {}
        self.user_counts: Counter[str] = Counter()
        self.source_counts: Counter[str] = Counter()
        self.relay_ips = {c.ip_family(ip): ip for ip in config.relay_ips}
        """Address family -> advertised relay address: the families offered."""
        # counters (read by metrics and /stats)
        self.auth_failures: Counter[str] = Counter()
        self.error_responses: Counter[int] = Counter()
        self.allocations_total = 0
        self.closed_totals = [0, 0, 0, 0]  # pk_out, by_out, pk_in, by_in of deleted allocations

    # ---- entry points -------------------------------------------------------------------

    def handle(self, data: bytes, client_key: Hashable, client_addr: Address, tcp: bool,
               now: float) -> bytes | None:
        """One STUN message or ChannelData frame from a client: the answer to send back, if
        any. ChannelData goes out of the allocation's relay as :meth:`Allocation.channel_out`
        decides (the I/O edges' own fast paths take the same decision)."""
        if data[:1] and data[0] & 0xC0 == 0x40:
            al = self.allocations.get(client_key)
            if al is not None and len(data) >= 4:
                out = al.channel_out(data)
                if out is not None:
                    relay = al.relay_for(out[1])
                    if relay is not None:
                        relay.sendto(*out)
            return None
        msg = c.parse(data)
        if msg is None:
            return None
        if msg.cls == c.REQUEST:
            if msg.method == c.BINDING:
                return self._binding(msg, client_addr)
            al = self.allocations.get(client_key)
            if al is not None and msg.txid == al.last_txid:
                return al.last_response  # retransmission: the same answer again
            handler = self._handlers.get(msg.method)
            if handler is None:
                return self._error(msg, 400, None)
            return handler(self, msg, client_key, client_addr, tcp, al, now)
        if msg.cls == c.INDICATION and msg.method == c.SEND:
            self._send_indication(msg, self.allocations.get(client_key))
        return None  # responses and other indications never get an answer

    def close_client(self, client_key: Hashable) -> None:
        """The client's connection is gone (TCP close): delete its allocation now."""
        al = self.allocations.get(client_key)
        if al is not None:
            self.delete(al)

    def delete(self, al: Allocation) -> None:
        if self.allocations.get(al.client_key) is not al:
            return
        del self.allocations[al.client_key]
        for counts, k in ((self.user_counts, al.user),
                          (self.source_counts, source(al.client_addr[0]))):
            counts[k] -= 1
            if counts[k] <= 0:
                del counts[k]
        al.out_routes.clear()
        al.in_routes.clear()
        for relay in al.relays.values():
            relay.close()  # first: an edge may settle the allocation's counters here
        al.relays.clear()
        t = self.closed_totals
        t[0] += al.pk_out
        t[1] += al.by_out
        t[2] += al.pk_in
        t[3] += al.by_in

    def tick(self, now: float) -> None:
        """Expire what is due; refill bandwidth buckets."""
        for al in list(self.allocations.values()):
            if al.expires <= now:
                self.delete(al)
                continue
            if al.up is not None and al.down is not None:
                al.up.refill(now)
                al.down.refill(now)
            changed = False
            if al.perms:
                for ip, exp in list(al.perms.items()):
                    if exp <= now:
                        del al.perms[ip]
                        al.restricted.discard(ip)
                        changed = True
            if al.channels:
                for number, (peer, exp) in list(al.channels.items()):
                    if exp <= now:
                        del al.channels[number]
                        del al.peer_channels[peer]
                        changed = True
            if changed:
                al.rebuild_routes()

    def shutdown(self) -> None:
        for al in list(self.allocations.values()):
            self.delete(al)

    # ---- counters -----------------------------------------------------------------------

    def totals(self) -> tuple[int, int, int, int]:
        t = list(self.closed_totals)
        for al in self.allocations.values():
            t[0] += al.pk_out
            t[1] += al.by_out
            t[2] += al.pk_in
            t[3] += al.by_in
        return t[0], t[1], t[2], t[3]

    def permission_count(self) -> int:
        return sum(len(a.perms) for a in self.allocations.values())

    def channel_count(self) -> int:
        return sum(len(a.channels) for a in self.allocations.values())

    # ---- responses ----------------------------------------------------------------------

    def _software(self) -> list[tuple[int, bytes]]:
        s = self.config.software
        return [(c.SOFTWARE, s.encode())] if s else []

    def _error(self, msg: Message, code: int, key: bytes | None,
               extra: list[tuple[int, bytes]] | None = None) -> bytes:
        self.error_responses[code] += 1
        attrs = [(c.ERROR_CODE, c.error_value(code)), *(extra or ()), *self._software()]
        return c.encode(msg.method, c.ERROR, msg.txid, attrs, key=key,
                        fingerprint=key is not None or msg.has_fingerprint)

    def _challenge(self, msg: Message, code: int, now: float, key: bytes | None = None) -> bytes:
        """401/438: REALM and a fresh NONCE; signed only with a ``key`` the request proved."""
        return self._error(msg, code, key, [
            (c.REALM, self.config.realm.encode()),
            (c.NONCE, self.nonces.issue(now).encode()),
        ])

    def _success(self, msg: Message, attrs: list[tuple[int, bytes]], key: bytes) -> bytes:
        return c.encode(msg.method, c.SUCCESS, msg.txid, [*attrs, *self._software()],
                        key=key, fingerprint=True)

    def _binding(self, msg: Message, client_addr: Address) -> bytes:
        if c.unknown_required(msg):
            return self._unknown(msg, None)
        attrs = [(c.XOR_MAPPED_ADDRESS, c.xor_address(client_addr[0], client_addr[1], msg.txid)),
                 *self._software()]
        return c.encode(c.BINDING, c.SUCCESS, msg.txid, attrs, fingerprint=msg.has_fingerprint)

    def _unknown(self, msg: Message, key: bytes | None) -> bytes:
        unknown = c.unknown_required(msg)
        value = b"".join(u.to_bytes(2, "big") for u in unknown)
        return self._error(msg, 420, key, [(c.UNKNOWN_ATTRIBUTES, value)])

    # ---- authentication -----------------------------------------------------------------

    def _authenticate(self, msg: Message, al: Allocation | None, now: float
                      ) -> tuple[bytes, str, str] | bytes:
        """(key, username, user) or the error response to send."""
        if msg.mi_offset < 0:
            self.auth_failures["missing_credentials"] += 1
            return self._challenge(msg, 401, now)
        username = msg.text(c.USERNAME)
        nonce = msg.text(c.NONCE)
        realm = msg.text(c.REALM)
        if username is None or nonce is None or realm is None \
                or len(msg.attrs[c.USERNAME]) > MAX_USERNAME_BYTES:
            self.auth_failures["malformed"] += 1
            return self._error(msg, 400, None)
        if not self.nonces.valid(nonce, now):
            self.auth_failures["stale_nonce"] += 1
            return self._challenge(msg, 438, now)
        if realm != self.config.realm:
            self.auth_failures["wrong_realm"] += 1
            return self._challenge(msg, 401, now)
        parsed = parse_rest_username(username)
        if parsed is None:
            self.auth_failures["bad_username"] += 1
            return self._challenge(msg, 401, now)
        expiry, user = parsed
        # An existing session keeps its key (a secret retired since still serves it).
        keys = ([al.key] if al is not None and al.username == username
                else candidate_keys(self.config.secrets, username, self.config.realm))
        key = next((k for k in keys if msg.verify_integrity(k)), None)
        if key is None:
            self.auth_failures["bad_integrity"] += 1
            return self._challenge(msg, 401, now)
        if expiry < now:
            # Every request, not only Allocate: else Refresh would hold the ports for ever.
            self.auth_failures["expired"] += 1
            return self._challenge(msg, 401, now, key)
        return key, username, user

    def _lifetime(self, msg: Message) -> int:
        cfg = self.config
        raw = msg.attrs.get(c.LIFETIME)
        if raw is None or len(raw) != 4:
            return cfg.default_lifetime
        requested = int.from_bytes(raw, "big")
        if requested == 0:
            return 0
        return max(cfg.default_lifetime, min(requested, cfg.max_lifetime))

    def _remember(self, al: Allocation, msg: Message, response: bytes) -> bytes:
        al.last_txid = msg.txid
        al.last_response = response
        return response

    # ---- methods ------------------------------------------------------------------------

    def _allocate(self, msg: Message, client_key: Hashable, client_addr: Address, tcp: bool,
                  al: Allocation | None, now: float) -> bytes | None:
        auth = self._authenticate(msg, al, now)
        if isinstance(auth, bytes):
            return auth
        key, username, user = auth
        if c.unknown_required(msg):
            return self._unknown(msg, key)
        if al is not None:
            return self._error(msg, 437, key)
        transport = msg.attrs.get(c.REQUESTED_TRANSPORT)
        if transport is None or len(transport) != 4:
            return self._error(msg, 400, key)
        if transport[0] != UDP_TRANSPORT:
            return self._error(msg, 442, key)
        families = self._families(msg, key)
        if isinstance(families, bytes):
            return families
        even = msg.attrs.get(c.EVEN_PORT)
        if even is not None and (len(even) != 1 or even[0] & 0x80):
            return self._error(msg, 508, key)  # R bit: port reservation is not offered
        src = source(client_addr[0])
        if self.user_counts[user] >= self.config.user_quota \
                or self.source_counts[src] >= self.config.ip_quota:
            return self._error(msg, 486, key)
        lifetime = self._lifetime(msg) or self.config.default_lifetime
        new = Allocation(client_key, client_addr, tcp, username, user, key, now + lifetime,
                         self.policy)
        rate = self.config.max_rate
        if rate > 0:  # before the opener: the edge may copy the buckets (C forwarder)
            burst = max(rate, 65536)
            new.up = TokenBucket(rate, burst, now)
            new.down = TokenBucket(rate, burst, now)
        missing: list[tuple[int, bytes]] = []
        error_attr = c.ADDRESS_ERROR_CODE_DRAFT if c.ADDITIONAL_ADDRESS_FAMILY_DRAFT in msg.attrs \
            and c.ADDITIONAL_ADDRESS_FAMILY not in msg.attrs else c.ADDRESS_ERROR_CODE
        for family in families:
            relay = self.opener(new, family, even is not None) \
                if family in self.relay_ips else None
            if relay is None:
                if family == families[0]:  # the one asked for (or IPv4 of a dual allocation)
                    return self._error(msg, 508, key)
                code = 508 if family in self.relay_ips else 440
                missing.append((error_attr, c.address_error_value(family, code)))
                continue
            new.relays[family] = relay
            new.relay_addrs[family] = (self.relay_ips[family], relay.port)
        self.allocations[client_key] = new
        self.user_counts[user] += 1
        self.source_counts[src] += 1
        self.allocations_total += 1
        response = self._success(msg, [
            *((c.XOR_RELAYED_ADDRESS, c.xor_address(ip, port, msg.txid))
              for ip, port in new.relay_addrs.values()),
            (c.LIFETIME, c.uint32(lifetime)),
            (c.XOR_MAPPED_ADDRESS, c.xor_address(client_addr[0], client_addr[1], msg.txid)),
            *missing,
        ], key)
        return self._remember(new, msg, response)

    def _families(self, msg: Message, key: bytes) -> list[int] | bytes:
        """The relay address families an Allocate asks for, first the one that must be
        allocated (RFC 8656 section 7.2), or the error answer: REQUESTED-ADDRESS-FAMILY
        names one (440 when not offered); ADDITIONAL-ADDRESS-FAMILY (IPv6 only; also under
        its draft number, as coturn's older clients send it) asks for IPv4 and IPv6 (the IPv6
        relay may then be missing, said by ADDRESS-ERROR-CODE); both at once are a 400.
        Without either: IPv4 — or, on a node that offers only IPv6, IPv6
        (RFC 8656 says 440, but the clients that never send the attribute, aioice and
        libwebrtc among them, would then get nothing from an IPv6-only relay; coturn's
        ``--allocation-default-address-family`` exists for the same reason)."""
        requested = msg.attrs.get(c.REQUESTED_ADDRESS_FAMILY)
        additional = msg.attrs.get(c.ADDITIONAL_ADDRESS_FAMILY,
                                   msg.attrs.get(c.ADDITIONAL_ADDRESS_FAMILY_DRAFT))
        if requested is not None and additional is not None:
            return self._error(msg, 400, key)
        if additional is not None:
            if c.address_family(additional) != 6:
                return self._error(msg, 400, key)
            if 4 not in self.relay_ips:
                return self._error(msg, 440, key)
            return [4, 6]
        if requested is not None:
            family = c.address_family(requested)
            if family is None or family not in self.relay_ips:
                return self._error(msg, 440, key)
            return [family]
        return [4 if 4 in self.relay_ips or not self.relay_ips else next(iter(self.relay_ips))]

    def _refresh(self, msg: Message, client_key: Hashable, client_addr: Address, tcp: bool,
                 al: Allocation | None, now: float) -> bytes | None:
        owner = self._owner(msg, al, now)
        if isinstance(owner, bytes):
            return owner
        key, al = owner
        requested = msg.attrs.get(c.REQUESTED_ADDRESS_FAMILY)
        family = None if requested is None else c.address_family(requested)
        if requested is not None and family not in al.relays:
            return self._error(msg, 443, key)  # RFC 6156 section 5.2: not this allocation's
        lifetime = self._lifetime(msg)
        if lifetime == 0 and family is not None and len(al.relays) > 1:
            self._drop_family(al, family)  # one relay of a dual allocation (RFC 8656 7.3)
        elif lifetime == 0:
            self.delete(al)
        else:
            al.expires = now + lifetime
        return self._remember(al, msg, self._success(msg, [(c.LIFETIME, c.uint32(lifetime))], key))

    @staticmethod
    def _drop_family(al: Allocation, family: int) -> None:
        """Close the ``family`` relay of a dual allocation, with its permissions and channels;
        the other relay stays (and keeps the allocation's single lifetime)."""
        al.relays.pop(family).close()
        del al.relay_addrs[family]
        for ip in [ip for ip in al.perms if c.ip_family(ip) == family]:
            del al.perms[ip]
            al.restricted.discard(ip)
        for number, (peer, _exp) in list(al.channels.items()):
            if c.ip_family(peer[0]) == family:
                del al.channels[number]
                del al.peer_channels[peer]
        al.rebuild_routes()

    def _peers(self, msg: Message, key: bytes) -> list[Address] | bytes:
        peers: list[Address] = []
        for value in c.every(msg, c.XOR_PEER_ADDRESS):  # CreatePermission may repeat it
            peer = c.parse_xor_address(value, msg.txid)
            if peer is None:
                return self._error(msg, 400, key)
            peers.append(peer)
        if not peers:
            return self._error(msg, 400, key)
        return peers

    def _owner(self, msg: Message, al: Allocation | None, now: float
               ) -> bytes | tuple[bytes, Allocation]:
        """Authenticate a request on an existing allocation (Refresh, CreatePermission,
        ChannelBind): the error answer, or the message-integrity key and the allocation."""
        auth = self._authenticate(msg, al, now)
        if isinstance(auth, bytes):
            return auth
        key = auth[0]
        if c.unknown_required(msg):
            return self._unknown(msg, key)
        if al is None or al.username != auth[1]:
            return self._error(msg, 437, key)
        return key, al

    def _check_peer(self, msg: Message, al: Allocation, peer: Address, key: bytes,
                    port_known: bool) -> bytes | None:
        ip, port = peer
        allowed = self.policy.permits(ip, port) if port_known else self.policy.permits_ip(ip)
        if not allowed:
            return self._error(msg, 403, key)
        if c.ip_family(ip) not in al.relays:
            return self._error(msg, 443, key)  # no relay of the peer's family
        return None

    def _create_permission(self, msg: Message, client_key: Hashable, client_addr: Address,
                           tcp: bool, al: Allocation | None, now: float) -> bytes | None:
        owner = self._owner(msg, al, now)
        if isinstance(owner, bytes):
            return owner
        key, al = owner
        peers = self._peers(msg, key)
        if isinstance(peers, bytes):
            return peers
        for peer in peers:
            err = self._check_peer(msg, al, peer, key, port_known=False)
            if err is not None:
                return err
        new_ips = {p[0] for p in peers} - al.perms.keys()
        if len(al.perms) + len(new_ips) > self.config.max_permissions:
            return self._error(msg, 508, key)
        expiry = now + self.config.permission_lifetime
        for ip, _port in peers:
            al.perms[ip] = expiry
        if new_ips:
            al.rebuild_routes()
        return self._remember(al, msg, self._success(msg, [], key))

    def _channel_bind(self, msg: Message, client_key: Hashable, client_addr: Address,
                      tcp: bool, al: Allocation | None, now: float) -> bytes | None:
        owner = self._owner(msg, al, now)
        if isinstance(owner, bytes):
            return owner
        key, al = owner
        raw_channel = msg.attrs.get(c.CHANNEL_NUMBER)
        raw_peer = msg.attrs.get(c.XOR_PEER_ADDRESS)
        if raw_channel is None or len(raw_channel) != 4 or raw_peer is None:
            return self._error(msg, 400, key)
        number = int.from_bytes(raw_channel[:2], "big")
        peer = c.parse_xor_address(raw_peer, msg.txid)
        if peer is None or not 0x4000 <= number <= self.config.channel_max:
            return self._error(msg, 400, key)
        err = self._check_peer(msg, al, peer, key, port_known=True)
        if err is not None:
            return err
        bound = al.channels.get(number)
        if bound is not None and bound[0] != peer:
            return self._error(msg, 400, key)
        other = al.peer_channels.get(peer)
        if other is not None and other != number:
            return self._error(msg, 400, key)
        if peer[0] not in al.perms and len(al.perms) >= self.config.max_permissions:
            return self._error(msg, 508, key)
        al.channels[number] = (peer, now + self.config.channel_lifetime)
        al.peer_channels[peer] = number
        al.perms[peer[0]] = now + self.config.permission_lifetime
        if not self.policy.permits_ip(peer[0]):
            al.restricted.add(peer[0])
        al.rebuild_routes()
        return self._remember(al, msg, self._success(msg, [], key))

    def _send_indication(self, msg: Message, al: Allocation | None) -> None:
        if al is None:
            return
        raw_peer = msg.attrs.get(c.XOR_PEER_ADDRESS)
        data = msg.attrs.get(c.DATA_ATTR)
        if raw_peer is None or data is None:
            return
        peer = c.parse_xor_address(raw_peer, msg.txid)
        if peer is None:
            return
        relay = al.relay_for(peer)
        if relay is not None and al.send_out(peer, data):
            relay.sendto(data, peer)

    _handlers: dict[int, Callable[..., bytes | None]] = {
        c.ALLOCATE: _allocate,
        c.REFRESH: _refresh,
        c.CREATE_PERMISSION: _create_permission,
        c.CHANNEL_BIND: _channel_bind,
    }

