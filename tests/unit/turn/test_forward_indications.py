"""The C forwarder's Send and Data indications on real loopback UDP sockets: a Send indication
to a permitted peer goes out of the relay, a peer datagram without a channel comes back as a
Data indication; everything C cannot decide from the mirrored permissions goes to Python, and
what C forwards is exactly what the Python path (TurnServer, Allocation) would have."""

from __future__ import annotations

import os
import socket
import zlib

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from metadata_relay.turn import codec as c
from metadata_relay.turn import native
from metadata_relay.turn.allocation import MAX_UDP
from tests.tools import queued_datagrams, require_native
from tests.unit.turn.harness import T0, Harness
from tests.unit.turn.harness import code as answer_code
from tests.unit.turn.test_forward import Rig, sa, udp


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native()


@pytest.fixture
def rig() -> Rig:
    r = Rig()
    yield r  # type: ignore[misc]
    r.close()


def send_indication(peer: tuple[str, int], data: bytes | None, *, fingerprint: bool = False,
                    extra: list[tuple[int, bytes]] | None = None,
                    txid: bytes | None = None) -> bytes:
    txid = txid or os.urandom(12)
    attrs = [(c.XOR_PEER_ADDRESS, c.xor_address(peer[0], peer[1], txid))]
    if data is not None:
        attrs.append((c.DATA_ATTR, data))
    return c.encode(c.SEND, c.INDICATION, txid, [*attrs, *(extra or [])],
                    fingerprint=fingerprint)


def back_data(back: list[tuple[object, ...]]) -> list[object]:
    return [item[2] for item in back]


def test_send_indication_to_a_permitted_peer_goes_out_of_the_relay(rig: Rig) -> None:
    rig.permit(rig.peer)
    peer = rig.peer.getsockname()
    for fp in (False, True):
        rig.client.send(send_indication(peer, b"via send %d" % fp, fingerprint=fp))
    assert rig.poll() == []
    assert queued_datagrams(rig.peer) == [b"via send 0", b"via send 1"]
    assert rig.fw.pull(rig.handle) == (2, 20, 0, 0)


def test_what_c_cannot_decide_goes_back_to_python(rig: Rig) -> None:
    other = udp("127.0.0.1")
    rig.permit(rig.peer, lo=1, hi=rig.peer.getsockname()[1])  # ports up to the peer's only
    peer = rig.peer.getsockname()
    above = (peer[0], peer[1] + 1)
    good = send_indication(peer, b"ok", fingerprint=True)
    bad_fp = good[:-1] + bytes([good[-1] ^ 1])
    cases = [
        send_indication(above, b"port outside the permitted range"),
        send_indication(("127.0.0.2", 9), b"no permission for this IP"),
        send_indication(("::1", peer[1]), b"no relay of that family"),
        send_indication(peer, None),  # no DATA
        c.encode(c.SEND, c.INDICATION, txid := os.urandom(12), [
            (c.XOR_PEER_ADDRESS, c.xor_address(peer[0], peer[1], txid)),
            (c.MESSAGE_INTEGRITY, bytes(20)), (c.DATA_ATTR, b"data after integrity")]),
        bad_fp,
        c.encode(c.BINDING, c.REQUEST, os.urandom(12)),
        c.encode(c.SEND, c.REQUEST, os.urandom(12)),  # a Send request is no indication
        good[:-4],  # truncated
    ]
    for data in cases:
        rig.client.send(data)
    back = rig.poll()
    assert back_data(back)[:2] == cases[:2]
    assert len(back) == len(cases)
    assert queued_datagrams(rig.peer) == []
    other.close()


def test_the_first_peer_and_data_before_message_integrity_count(rig: Rig) -> None:
    rig.permit(rig.peer)
    peer = rig.peer.getsockname()
    txid = os.urandom(12)
    first = c.encode(c.SEND, c.INDICATION, txid, [
        (0xC001, b"unknown optional"), (c.DATA_ATTR, b"first"),
        (c.XOR_PEER_ADDRESS, c.xor_address(peer[0], peer[1], txid)),
        (c.DATA_ATTR, b"second"), (c.XOR_PEER_ADDRESS, c.xor_address("8.8.8.8", 1, txid)),
        (c.MESSAGE_INTEGRITY, bytes(20)), (c.DATA_ATTR, b"after integrity")])
    rig.client.send(first)
    assert rig.poll() == []
    assert queued_datagrams(rig.peer) == [b"first"]


def test_peer_datagram_without_channel_is_a_data_indication(rig: Rig) -> None:
    rig.permit(rig.peer)
    for payload in (b"", b"x", b"four", b"seven!!", bytes(1000)):
        rig.peer.sendto(payload, rig.relay.getsockname())
    assert rig.poll() == []
    frames = queued_datagrams(rig.client)
    assert len(frames) == 5
    for frame, payload in zip(frames, (b"", b"x", b"four", b"seven!!", bytes(1000)),
                              strict=True):
        msg = c.parse(frame)
        assert msg is not None and (msg.method, msg.cls) == (c.DATA, c.INDICATION)
        assert msg.attrs[c.DATA_ATTR] == payload
        assert c.parse_xor_address(msg.attrs[c.XOR_PEER_ADDRESS], msg.txid) \
            == rig.peer.getsockname()
        assert msg.mi_offset < 0 and not msg.has_fingerprint
        # byte for byte what the Python path builds (but for the random transaction id)
        assert frame == c.data_indication(rig.peer.getsockname(), payload, msg.txid)
    assert len({c.parse(f).txid for f in frames}) == 5  # type: ignore[union-attr]
    assert rig.fw.pull(rig.handle) == (0, 0, 5, 1012)


def test_unpermitted_peers_and_oversize_go_back_to_python(rig: Rig) -> None:
    rig.permit(rig.peer)
    stranger = udp("127.0.0.2")
    rig.relay.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rig.peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    stranger.sendto(b"not permitted", rig.relay.getsockname())
    largest = 65468  # 36 + 65468 = 65504; one byte more needs 3 of padding: 65508
    assert len(c.data_indication(rig.peer.getsockname(), bytes(largest), bytes(12))) <= MAX_UDP
    assert len(c.data_indication(rig.peer.getsockname(), bytes(largest + 1), bytes(12))) \
        > MAX_UDP
    rig.peer.sendto(bytes(largest + 1), rig.relay.getsockname())
    rig.peer.sendto(bytes(largest), rig.relay.getsockname())
    back = rig.poll()
    assert sorted(len(d) for d in back_data(back)) == [13, largest + 1]  # type: ignore[arg-type]
    assert [len(f) for f in queued_datagrams(rig.client)] == [36 + largest]
    stranger.close()


def test_buckets_limit_indications_both_ways(rig: Rig) -> None:
    rig.permit(rig.peer)
    rig.fw.set_tokens(rig.handle, 250.0, 250.0)
    for _ in range(3):
        rig.client.send(send_indication(rig.peer.getsockname(), b"u" * 100))
        rig.peer.sendto(b"d" * 100, rig.relay.getsockname())
    assert rig.poll() == []  # over the rate: dropped in C, not handed to Python
    assert queued_datagrams(rig.peer) == [b"u" * 100] * 2
    assert len(queued_datagrams(rig.client)) == 2
    assert rig.fw.pull(rig.handle) == (2, 200, 2, 200)


def test_ipv6_indications_both_ways() -> None:
    rig = Rig("::1")
    try:
        rig.permit(rig.peer)
        peer = rig.peer.getsockname()[:2]
        rig.client.send(send_indication(peer, b"six up", fingerprint=True))
        rig.peer.sendto(b"six down", rig.relay.getsockname())
        assert rig.poll() == []
        assert queued_datagrams(rig.peer) == [b"six up"]
        [frame] = queued_datagrams(rig.client)
        msg = c.parse(frame)
        assert msg is not None and msg.attrs[c.DATA_ATTR] == b"six down"
        assert frame == c.data_indication(peer, b"six down", msg.txid)
    finally:
        rig.close()


def test_a_dual_allocation_sends_from_the_relay_of_the_peers_family(rig: Rig) -> None:
    relay6, peer6 = udp("::1"), udp("::1")
    rig.ep.register(relay6.fileno())
    second = rig.fw.open(relay6.fileno(), rig.listener.fileno(),
                         sa(rig.family, rig.client.getsockname()), rig.handle)
    try:
        rig.permit(rig.peer)
        rig.fw.set_routes(second, [(0x4001, sa(socket.AF_INET6, peer6.getsockname()))],
                          [(socket.inet_pton(socket.AF_INET6, "::1"), 0, 65535)])
        rig.client.send(send_indication(rig.peer.getsockname(), b"to four"))
        rig.client.send(send_indication(peer6.getsockname()[:2], b"to six"))
        rig.client.send(c.channel_data(0x4001, b"six by channel"))
        peer6.sendto(b"from six", relay6.getsockname())
        assert rig.poll() == []
        assert queued_datagrams(rig.peer) == [b"to four"]
        assert queued_datagrams(peer6) == [b"to six", b"six by channel"]
        assert queued_datagrams(rig.client) == [c.channel_data(0x4001, b"from six")]
        assert rig.fw.pull(rig.handle)[:2] == (1, 7)
        assert rig.fw.pull(second) == (2, 20, 1, 8)
        rig.fw.set_tokens(second, 5.0, 5.0)  # the allocation's one bucket (the first's)
        rig.client.send(send_indication(rig.peer.getsockname(), b"over the rate"))
        assert rig.poll() == [] and queued_datagrams(rig.peer) == []
        rig.fw.set_tokens(rig.handle, None, None)
        rig.fw.close(rig.handle)  # the IPv6 relay carries on alone
        rig.client.send(send_indication(peer6.getsockname()[:2], b"still six"))
        assert rig.poll() == [] and queued_datagrams(peer6) == [b"still six"]
        rig.client.send(send_indication(rig.peer.getsockname(), b"no IPv4 relay any more"))
        assert len(rig.poll()) == 1
        assert rig.fw.close(second)[:2] == (1, 9)
        assert rig.fw.slots == 0
    finally:
        relay6.close()
        peer6.close()


# ---- the C path against the Python path ------------------------------------------------

def python_sends(message: bytes, h: Harness, key: object, client: tuple[str, int]
                 ) -> list[tuple[bytes, tuple[str, int]]]:
    relay = h.relays[0]
    before = len(relay.sent)
    h.server.handle(message, key, client, False, T0)
    return relay.sent[before:]


def mutated(message: bytes, where: int, value: int) -> bytes:
    if not message:
        return message
    i = where % len(message)
    return message[:i] + bytes([value]) + message[i + 1:]


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=64), port_delta=st.sampled_from([0, 0, 1]),
       fingerprint=st.booleans(),
       extra=st.lists(st.tuples(st.sampled_from([0xC001, 0x8022, c.DATA_ATTR,
                                                 c.XOR_PEER_ADDRESS, c.MESSAGE_INTEGRITY,
                                                 c.FINGERPRINT, 0x0003]),
                                st.binary(max_size=24)), max_size=3),
       mutation=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 255))))
def test_c_forwards_exactly_what_python_would(data: bytes, port_delta: int, fingerprint: bool,
                                              extra: list[tuple[int, bytes]],
                                              mutation: tuple[int, int] | None) -> None:
    """Hypothesis: any Send indication, well-formed or not. When C forwards one, the Python
    path forwards the same payload to the same peer; when the Python path forwards one, C
    does too (it hands back nothing it could decide)."""
    rig = Rig()
    try:
        peer = rig.peer.getsockname()
        h = Harness(allowed=["127.0.0.0/8"], ports=(50000, 50003))
        cl = h.client(addr=rig.client.getsockname())
        assert answer_code(cl.allocate()) == 200
        # the peer's port is permitted, the next one is not (the own-address rule's shape)
        al = cl.allocation()
        al.perms[peer[0]] = T0 + 300
        al.restricted.add(peer[0])
        h.server.policy.relay_ports = (peer[1], peer[1])
        rig.fw.set_routes(rig.handle, [], native.permissions(al, socket.AF_INET))
        message = send_indication((peer[0], peer[1] + port_delta), data,
                                  fingerprint=fingerprint, extra=extra)
        if mutation is not None:
            message = mutated(message, *mutation)
        expected = python_sends(message, h, cl.key_id, cl.addr)
        rig.client.send(message)
        back = rig.poll()
        forwarded = queued_datagrams(rig.peer)
        if back:
            assert forwarded == [] and back_data(back) == [message]
            assert expected == [], "C handed back what it could have forwarded"
        else:
            assert [(d, peer) for d in forwarded] == expected
        event("forwarded in C" if forwarded else "handed back" if back else "dropped")
    finally:
        rig.close()


def test_python_and_c_agree_on_a_fingerprint() -> None:
    """The CRC-32 C computes is zlib's (the FINGERPRINT of RFC 8489 section 14.7)."""
    rig = Rig()
    try:
        rig.permit(rig.peer)
        for size in (0, 1, 7, 8, 9, 63, 64, 65, 1000):
            message = send_indication(rig.peer.getsockname(), os.urandom(size),
                                      fingerprint=True)
            crc = (zlib.crc32(message[:-8]) ^ 0x5354554E) & 0xFFFFFFFF
            assert message[-4:] == crc.to_bytes(4, "big")
            rig.client.send(message)
        assert rig.poll() == []
        assert len(queued_datagrams(rig.peer)) == 9
    finally:
        rig.close()
