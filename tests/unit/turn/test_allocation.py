"""Every forwarding decision, made by ``Allocation`` for both engines: ChannelData and Send
indications from the client, datagrams from peers (ChannelData, Data indications), the
own-address rule both ways, buckets and counters."""

from __future__ import annotations

import pytest

from metadata_relay.ratelimit import TokenBucket
from metadata_relay.turn import codec as c
from metadata_relay.turn.allocation import MAX_UDP, Allocation
from metadata_relay.turn.codec import Address
from metadata_relay.turn.peers import PeerPolicy
from tests.unit.turn.harness import DENIED, T0

OWN = "203.0.113.7"
PEER: Address = ("8.8.8.8", 3480)


def allocation(tcp: bool = False, rate: int = 0) -> Allocation:
    policy = PeerPolicy(DENIED, own_ips=[OWN], relay_ports=(50000, 50010))
    al = Allocation(("192.0.2.1", 4000), ("192.0.2.1", 4000), tcp, "1:u", "u", b"k" * 16,
                    T0 + 600, policy)
    if rate:
        al.up, al.down = TokenBucket(rate, rate, T0), TokenBucket(rate, rate, T0)
    return al


def bind(al: Allocation, channel: int, peer: Address) -> None:
    """What a ChannelBind installs (the state machine's part, tested in test_server)."""
    al.channels[channel] = (peer, T0 + 600)
    al.peer_channels[peer] = channel
    al.perms[peer[0]] = T0 + 300
    al.rebuild_routes()


def counters(al: Allocation) -> tuple[int, int, int, int]:
    return al.pk_out, al.by_out, al.pk_in, al.by_in


def test_channel_out_forwards_only_bound_channels_with_a_sane_length() -> None:
    al = allocation()
    bind(al, 0x4000, PEER)
    assert al.channel_out(c.channel_data(0x4000, b"hello")) == (b"hello", PEER)
    assert al.channel_out(c.channel_data(0x4000, b"abc", pad=True) + b"\0" * 4) == (b"abc", PEER)
    assert al.channel_out(c.channel_data(0x4001, b"unbound")) is None
    assert al.channel_out(b"\x40\x00\x00\x09short") is None  # length beyond the datagram
    assert counters(al) == (2, 8, 0, 0)


def test_send_out_needs_a_permission_for_the_peer_ip() -> None:
    al = allocation()
    assert not al.send_out(PEER, b"no permission")
    al.perms[PEER[0]] = T0 + 300
    assert al.send_out((PEER[0], 9999), b"any port")  # permissions are per IP
    assert counters(al) == (1, 8, 0, 0)


def test_channel_in_frames_for_udp_and_tcp_clients() -> None:
    for tcp, pad in ((False, b""), (True, b"\0\0\0")):
        al = allocation(tcp=tcp)
        bind(al, 0x4abc, PEER)
        assert al.channel_in(b"x", PEER) == b"\x4a\xbc\x00\x01x" + pad
        assert al.channel_in(b"four", PEER) == b"\x4a\xbc\x00\x04four"
        assert counters(al) == (0, 0, 2, 5)


def test_channel_in_without_a_channel_is_a_data_indication_if_permitted() -> None:
    al = allocation()
    bind(al, 0x4000, PEER)
    other: Address = (PEER[0], 5000)  # same IP, other port: permitted, no channel
    msg = c.parse(al.channel_in(b"data", other) or b"")
    assert msg is not None and (msg.method, msg.cls) == (c.DATA, c.INDICATION)
    assert msg.attrs[c.DATA_ATTR] == b"data"
    assert c.parse_xor_address(msg.attrs[c.XOR_PEER_ADDRESS], msg.txid) == other
    assert al.channel_in(b"stranger", ("1.1.1.1", 53)) is None
    assert counters(al) == (0, 0, 1, 4)


def test_channel_in_drops_what_no_frame_for_a_udp_client_can_carry() -> None:
    al = allocation()
    bind(al, 0x4000, PEER)
    assert al.channel_in(bytes(MAX_UDP - 4), PEER) is not None
    assert al.channel_in(bytes(MAX_UDP - 3), PEER) is None  # no ChannelData, no indication
    assert counters(al)[2] == 1


@pytest.mark.parametrize(("port", "allowed"), [(50000, True), (50010, True), (22, False),
                                               (49999, False), (50011, False)])
def test_own_address_only_on_relay_ports_both_ways(port: int, allowed: bool) -> None:
    """A permission on the own address comes only from a ChannelBind to a relay port; it
    lets data through from and to relay-range ports, never the node's other services."""
    al = allocation()
    bind(al, 0x4000, (OWN, 50005))
    al.restricted.add(OWN)  # as the state machine marks it (policy.permits_ip is false)
    assert al.send_out((OWN, port), b"out") is allowed
    assert (al.channel_in(b"in", (OWN, port)) is not None) is allowed
    assert al.channel_in(b"channel", (OWN, 50005)) is not None


def test_buckets_drop_and_count_nothing_over_the_rate() -> None:
    al = allocation(rate=1000)
    bind(al, 0x4000, PEER)
    frame = c.channel_data(0x4000, bytes(600))
    assert al.channel_out(frame) is not None and al.channel_out(frame) is None
    assert not al.send_out(PEER, bytes(600))
    assert al.channel_in(bytes(600), PEER) is not None
    assert al.channel_in(bytes(600), PEER) is None
    assert al.channel_in(bytes(600), (PEER[0], 1)) is None  # indications too
    assert counters(al) == (1, 600, 1, 600)
    al.up.refill(T0 + 1)  # type: ignore[union-attr]
    assert al.send_out(PEER, bytes(600))


def test_every_route_rebuild_reaches_the_observer() -> None:
    al = allocation()
    seen: list[dict[int, Address]] = []
    al.observer = lambda a: seen.append(dict(a.out_routes))
    bind(al, 0x4000, PEER)
    del al.perms[PEER[0]]
    al.rebuild_routes()
    assert seen == [{0x4000: PEER}, {}]
    assert al.channel_out(c.channel_data(0x4000, b"x")) is None
    assert al.channel_in(b"x", PEER) is None
