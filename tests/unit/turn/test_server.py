"""TURN state machine against reference/turn.md section 4.2 (numbers in the test names)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metadata_relay.turn import codec as c
from metadata_relay.turn.codec import Address, Message
from tests.unit.turn.harness import (
    PUBLIC_PEER,
    RELAY_IP,
    T0,
    Client,
    Harness,
    code,
    relayed,
    signed,
)
from tests.unit.turn.test_policy import DENIED_ADDRESSES


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
def alice(h: Harness) -> Client:
    return h.client()


def allocated(h: Harness, **kw: object) -> Client:
    cl = h.client(**kw)  # type: ignore[arg-type]
    assert code(cl.allocate()) == 200
    return cl


# ---- STUN layer --------------------------------------------------------------------------

def test_01_02_binding_returns_xor_mapped_address_and_echoes_fingerprint(alice: Client) -> None:
    for fp in (True, False):
        txid = os.urandom(12)
        resp = alice.request(c.BINDING, txid=txid, sign=False, fingerprint=fp)
        assert (resp.method, resp.cls, resp.txid) == (c.BINDING, c.SUCCESS, txid)
        assert c.parse_xor_address(resp.attrs[c.XOR_MAPPED_ADDRESS], txid) == alice.addr
        assert resp.has_fingerprint is fp
        assert c.SOFTWARE not in resp.attrs and c.MAPPED_ADDRESS not in resp.attrs


def test_03_malformed_input_is_dropped_silently(alice: Client) -> None:
    good = alice.build(c.BINDING, sign=False)
    for bad in (b"", b"\x00", good[:-1], good[:4] + b"\0\0\0\0" + good[8:],
                good[:-1] + bytes([good[-1] ^ 0xFF]), b"\x40\x00\x00\x10" + b"x" * 3):
        assert alice.raw(bad) is None


def test_04_unknown_comprehension_required_attribute_gets_420(alice: Client) -> None:
    resp = alice.request(c.BINDING, [(0x7ABC, b"zz"), (0xC001, b"ok")], sign=False)
    assert code(resp) == 420
    assert resp.attrs[c.UNKNOWN_ATTRIBUTES] == b"\x7a\xbc"
    # comprehension-optional attributes alone are ignored
    assert code(alice.request(c.BINDING, [(0xC001, b"ok")], sign=False)) == 200


def test_07_indications_and_responses_get_no_answer(alice: Client) -> None:
    txid = os.urandom(12)
    for cls in (c.INDICATION, c.SUCCESS, c.ERROR):
        assert alice.raw(c.encode(c.BINDING, cls, txid)) is None
    assert alice.raw(c.encode(c.ALLOCATE, c.SUCCESS, txid)) is None


# ---- authentication ----------------------------------------------------------------------

def test_08_allocate_without_credentials_gets_401_with_realm_and_nonce(alice: Client) -> None:
    resp = alice.allocate(sign=False)
    assert code(resp) == 401
    assert resp.text(c.REALM) == "example.org"
    assert resp.text(c.NONCE)
    assert resp.mi_offset < 0
    assert alice.h.relays == []


def test_09_wrong_password_gets_401(alice: Client) -> None:
    alice.key = b"\0" * 16
    resp = alice.allocate()
    assert code(resp) == 401 and resp.text(c.NONCE)
    assert alice.h.server.auth_failures["bad_integrity"] == 1


@pytest.mark.parametrize("username", ["1000:alice", "abc:alice", "alice", "", "x" * 600])
def test_10_14_expired_or_malformed_usernames_are_refused(h: Harness, username: str) -> None:
    cl = h.client()
    cl.username = username
    resp = cl.allocate()
    assert code(resp) in (400, 401) if len(username) > 513 else code(resp) == 401
    assert h.relays == []


def test_11_any_configured_secret_works_and_others_do_not(h: Harness) -> None:
    assert code(h.client(secret="s2", user="bob").allocate()) == 200
    assert code(h.client(secret="removed", user="carol", addr=("192.0.2.9", 1)).allocate()) \
        == 401


def test_12_stale_nonce_gets_438_with_fresh_nonce_and_retry_succeeds(alice: Client) -> None:
    later = T0 + 601
    resp = alice.allocate(now=later)
    assert code(resp) == 438
    assert resp.text(c.REALM) == "example.org"
    alice.nonce = resp.text(c.NONCE) or ""
    assert code(alice.allocate(now=later)) == 200


def test_13_error_answers_to_authenticated_requests_are_signed(h: Harness) -> None:
    cl = allocated(h)
    errors = [
        cl.allocate(),  # 437
        cl.request(c.CREATE_PERMISSION),  # 400
        cl.permission(("10.0.0.1", 1)),  # 403
        cl.permission(("2606:4700::1", 1)),  # 443
        cl.bind(0x3FFF, PUBLIC_PEER),  # 400
        cl.request(c.REFRESH, [(c.DONT_FRAGMENT, b"")]),  # 420
    ]
    assert [code(e) for e in errors] == [437, 400, 403, 443, 400, 420]
    assert all(signed(e, cl.key) for e in errors)
    other = h.client(addr=("192.0.2.60", 1))
    assert code(other.request(c.REFRESH)) == 437 and signed(other.request(c.REFRESH), other.key)


def test_14_integrity_without_username_realm_or_nonce_gets_400(alice: Client) -> None:
    data = c.encode(c.ALLOCATE, c.REQUEST, os.urandom(12),
                    [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0")], key=alice.key)
    resp = alice.raw(data)
    assert resp is not None and code(resp) == 400


# ---- Allocate ----------------------------------------------------------------------------

def test_15_16_allocate_success_and_lifetimes(h: Harness) -> None:
    cl = h.client()
    resp = cl.allocate()
    assert code(resp) == 200 and signed(resp, cl.key)
    relay = c.parse_xor_address(resp.attrs[c.XOR_RELAYED_ADDRESS], resp.txid)
    assert relay is not None and relay[0] == RELAY_IP and 50000 <= relay[1] <= 50003
    assert c.parse_xor_address(resp.attrs[c.XOR_MAPPED_ADDRESS], resp.txid) == cl.addr
    assert int.from_bytes(resp.attrs[c.LIFETIME], "big") == 600
    for i, (asked, granted) in enumerate([(1, 600), (100000, 3600), (1200, 1200)]):
        other = h.client(addr=("192.0.2.70", 100 + i), user=f"u{i}")
        r = other.allocate((c.LIFETIME, c.uint32(asked)))
        assert int.from_bytes(r.attrs[c.LIFETIME], "big") == granted


@pytest.mark.parametrize(("transport", "expected"), [(None, 400), (99, 442), (6, 442)])
def test_17_requested_transport(alice: Client, transport: int | None, expected: int) -> None:
    attrs = [] if transport is None else [(c.REQUESTED_TRANSPORT, bytes([transport, 0, 0, 0]))]
    assert code(alice.request(c.ALLOCATE, attrs)) == expected
    assert alice.h.relays == []


def test_18_retransmission_gets_same_answer_new_transaction_gets_437(alice: Client) -> None:
    txid = os.urandom(12)
    data = alice.build(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0")], txid=txid)
    first = alice.h.server.handle(data, alice.key_id, alice.addr, False, T0)
    again = alice.h.server.handle(data, alice.key_id, alice.addr, False, T0 + 1)
    assert first == again and first is not None
    assert code(alice.allocate()) == 437
    assert len(alice.h.relays) == 1


def test_19_per_user_quota_gets_486(h: Harness) -> None:
    h2 = Harness(user_quota=2)
    for i in range(2):
        assert code(h2.client(addr=("192.0.2.1", i + 1)).allocate()) == 200
    third = h2.client(addr=("192.0.2.1", 3))
    resp = third.allocate()
    assert code(resp) == 486 and signed(resp, third.key)
    assert code(h2.client(addr=("192.0.2.1", 4), user="bob").allocate()) == 200


def test_19_per_source_address_quota_gets_486() -> None:
    """Issue 13 #5: every session is a new TURN user, so only a per-address cap keeps one
    source from taking every relay port."""
    h = Harness(ports=(50000, 50009), ip_quota=3)
    mallory = [h.client(addr=("192.0.2.1", i + 1), user=f"m{i}") for i in range(4)]
    assert [code(cl.allocate()) for cl in mallory[:3]] == [200] * 3
    resp = mallory[3].allocate()
    assert code(resp) == 486 and signed(resp, mallory[3].key)
    mapped = h.client(addr=("::ffff:192.0.2.1", 9), user="m9")  # the same address
    assert code(mapped.allocate()) == 486
    assert code(h.client(addr=("192.0.2.2", 1), user="newcomer").allocate()) == 200
    assert len(h.pool) == 6  # the range is not exhausted: the cap fired first
    assert code(mallory[0].request(c.REFRESH, [(c.LIFETIME, c.uint32(0))])) == 200
    assert code(mallory[3].allocate()) == 200  # a freed allocation frees quota
    # IPv6: one /64 is one source
    six = [h.client(addr=(f"2001:db8:0:1::{i + 1}", 1), user=f"s{i}") for i in range(4)]
    assert [code(cl.allocate()) for cl in six] == [200, 200, 200, 486]
    assert code(h.client(addr=("2001:db8:0:2::1", 1), user="other64").allocate()) == 200
    h.server.tick(T0 + 600)
    assert h.server.source_counts == {} and h.server.user_counts == {}


def test_20_exhausted_relay_range_gets_508_until_a_port_is_freed() -> None:
    h = Harness(ports=(50000, 50003), user_quota=100)
    clients = [h.client(addr=(f"192.0.2.{i + 1}", 1)) for i in range(5)]
    assert [code(cl.allocate()) for cl in clients[:4]] == [200] * 4
    assert code(clients[4].allocate()) == 508
    assert code(clients[0].request(c.REFRESH, [(c.LIFETIME, c.uint32(0))])) == 200
    assert code(clients[4].allocate()) == 200


def test_21_ipv6_relay_family_gets_440(alice: Client) -> None:
    assert code(alice.allocate((c.REQUESTED_ADDRESS_FAMILY, b"\x02\0\0\0"))) == 440
    assert code(alice.allocate((c.REQUESTED_ADDRESS_FAMILY, b"\x01\0\0\0"))) == 200


# ---- address families (RFC 6156, RFC 8656 section 7.2) ------------------------------------

RELAY_IPV6 = "2001:db8:7::7"
PUBLIC_PEER6: Address = ("2606:4700::1111", 3480)  # never contacted
V4, V6 = c.family_value(4), c.family_value(6)




def address_error(resp: Message) -> tuple[int, int] | None:
    """(family value, code) of ADDRESS-ERROR-CODE, if any."""
    value = resp.attrs.get(c.ADDRESS_ERROR_CODE)
    return None if value is None else (value[0], value[2] * 100 + value[3])


@pytest.fixture
def h6() -> Harness:
    """A node offering IPv4 and IPv6 relays."""
    return Harness(ports=(50000, 50009), relay_ipv6=RELAY_IPV6)


def test_21_requested_family_allocates_that_family(h6: Harness) -> None:
    four = h6.client(addr=("192.0.2.1", 1))
    assert [a[0] for a in relayed(four.allocate())] == [RELAY_IP]  # no attribute: IPv4
    six = h6.client(addr=("192.0.2.1", 2))
    resp = six.allocate((c.REQUESTED_ADDRESS_FAMILY, V6))
    assert code(resp) == 200 and [a[0] for a in relayed(resp)] == [RELAY_IPV6]
    assert address_error(resp) is None
    assert h6.relays[-1].family == 6
    al = six.allocation()
    assert code(six.permission(PUBLIC_PEER6)) == 200
    assert code(six.permission(PUBLIC_PEER)) == 443  # an IPv4 peer: no relay of its family
    six.send_indication(PUBLIC_PEER6, b"six")
    assert h6.relays[-1].sent == [(b"six", PUBLIC_PEER6)]
    msg = c.parse(al.channel_in(b"back", PUBLIC_PEER6) or b"")
    assert msg is not None and c.parse_xor_address(msg.attrs[c.XOR_PEER_ADDRESS], msg.txid) \
        == PUBLIC_PEER6
    assert code(six.bind(0x4000, PUBLIC_PEER6)) == 200
    assert al.channel_in(b"ch", PUBLIC_PEER6) == b"\x40\x00\x00\x02ch"


@pytest.mark.parametrize("value", [b"\x03\0\0\0", b"\x00\0\0\0", b"\x02\0\0", b""])
def test_21_unknown_or_malformed_family_gets_440(h6: Harness, value: bytes) -> None:
    cl = h6.client()
    assert code(cl.allocate((c.REQUESTED_ADDRESS_FAMILY, value))) == 440
    assert h6.relays == []


@pytest.mark.parametrize("ip", [a for a in DENIED_ADDRESSES if ":" in a])
def test_29_denied_ipv6_peers_get_403_on_an_ipv6_relay(h6: Harness, ip: str) -> None:
    cl = h6.client()
    assert code(cl.allocate((c.REQUESTED_ADDRESS_FAMILY, V6))) == 200
    assert code(cl.permission((ip, 3478))) == 403
    assert code(cl.bind(0x4001, (ip, 3478))) == 403
    cl.send_indication((ip, 3478), b"never")
    assert cl.allocation().perms == {} and h6.relays[0].sent == []


def test_21_ipv6_only_node() -> None:
    h = Harness(relay_ip=RELAY_IPV6)
    cl = h.client()
    assert code(cl.allocate((c.REQUESTED_ADDRESS_FAMILY, V4))) == 440
    assert code(cl.allocate((c.ADDITIONAL_ADDRESS_FAMILY, V6))) == 440  # no IPv4 to pair
    resp = cl.allocate()  # no attribute: the only family there is (see _families)
    assert code(resp) == 200 and [a[0] for a in relayed(resp)] == [RELAY_IPV6]


def test_dual_allocation_relays_both_families(h6: Harness) -> None:
    cl = h6.client()
    resp = cl.allocate((c.ADDITIONAL_ADDRESS_FAMILY, V6))
    assert code(resp) == 200 and signed(resp, cl.key)
    assert [a[0] for a in relayed(resp)] == [RELAY_IP, RELAY_IPV6]
    assert address_error(resp) is None
    assert [r.family for r in h6.relays] == [4, 6]
    assert code(cl.permission(PUBLIC_PEER, PUBLIC_PEER6)) == 200
    cl.send_indication(PUBLIC_PEER, b"four")
    cl.send_indication(PUBLIC_PEER6, b"six")
    assert h6.relays[0].sent == [(b"four", PUBLIC_PEER)]
    assert h6.relays[1].sent == [(b"six", PUBLIC_PEER6)]
    assert code(cl.bind(0x4000, PUBLIC_PEER)) == 200 and code(cl.bind(0x4001, PUBLIC_PEER6)) == 200
    al = cl.allocation()
    assert al.channel_out(c.channel_data(0x4001, b"x")) == (b"x", PUBLIC_PEER6)
    assert al.relay_for(PUBLIC_PEER6) is h6.relays[1]
    assert h6.server.user_counts == {"alice": 1}  # one allocation, two relays
    # Refresh naming one family: 0 deletes that relay only (RFC 8656 7.3), the other stays
    assert code(cl.request(c.REFRESH, [(c.LIFETIME, c.uint32(0)),
                                       (c.REQUESTED_ADDRESS_FAMILY, V6)])) == 200
    assert h6.relays[1].closed and not h6.relays[0].closed
    assert set(al.perms) == {PUBLIC_PEER[0]} and al.out_routes == {0x4000: PUBLIC_PEER}
    assert code(cl.request(c.REFRESH, [(c.REQUESTED_ADDRESS_FAMILY, V6)])) == 443
    assert code(cl.permission(PUBLIC_PEER6)) == 443
    assert code(cl.request(c.REFRESH, [(c.LIFETIME, c.uint32(0)),
                                       (c.REQUESTED_ADDRESS_FAMILY, V4)])) == 200
    assert h6.relays[0].closed and h6.server.allocations == {} and len(h6.pool) == 10


def test_dual_allocation_under_the_draft_number_coturn_4_6_sends(h6: Harness) -> None:
    resp = h6.client().allocate((c.ADDITIONAL_ADDRESS_FAMILY_DRAFT, V6))
    assert code(resp) == 200 and [a[0] for a in relayed(resp)] == [RELAY_IP, RELAY_IPV6]
    resp = Harness().client().allocate((c.ADDITIONAL_ADDRESS_FAMILY_DRAFT, V6))
    assert code(resp) == 200 and c.ADDRESS_ERROR_CODE not in resp.attrs
    value = resp.attrs[c.ADDRESS_ERROR_CODE_DRAFT]  # answered in the words it was asked
    assert (value[0], value[2] * 100 + value[3]) == (0x02, 440)


def test_dual_allocation_without_ipv6_says_why_in_address_error_code(h: Harness) -> None:
    cl = h.client()
    resp = cl.allocate((c.ADDITIONAL_ADDRESS_FAMILY, V6))
    assert code(resp) == 200 and [a[0] for a in relayed(resp)] == [RELAY_IP]
    assert address_error(resp) == (0x02, 440)
    full = Harness(ports=(50000, 50000), relay_ipv6=RELAY_IPV6)  # one port: IPv4 takes it
    resp = full.client().allocate((c.ADDITIONAL_ADDRESS_FAMILY, V6))
    assert code(resp) == 200 and address_error(resp) == (0x02, 508)


@pytest.mark.parametrize(("attrs", "expected"), [
    ([(c.ADDITIONAL_ADDRESS_FAMILY, V6), (c.REQUESTED_ADDRESS_FAMILY, V6)], 400),
    ([(c.ADDITIONAL_ADDRESS_FAMILY, V4)], 400),  # IPv4 is never the additional family
    ([(c.ADDITIONAL_ADDRESS_FAMILY, b"\x07\0\0\0")], 400),
])
def test_dual_allocation_bad_combinations_get_400(h6: Harness,
                                                  attrs: list[tuple[int, bytes]],
                                                  expected: int) -> None:
    assert code(h6.client().allocate(*attrs)) == expected
    assert h6.relays == []


def test_dual_allocation_with_even_port_gets_even_ports_in_both_families(h6: Harness) -> None:
    """Without its R bit (no reservation, which is refused anyway) EVEN-PORT goes with a dual
    allocation, as coturn's turnutils_uclient -Z sends it half the time."""
    resp = h6.client().allocate((c.ADDITIONAL_ADDRESS_FAMILY, V6), (c.EVEN_PORT, b"\x00"))
    assert code(resp) == 200 and [p % 2 for _ip, p in relayed(resp)] == [0, 0]


def test_refresh_naming_another_family_gets_443(h: Harness) -> None:
    cl = allocated(h)
    assert code(cl.request(c.REFRESH, [(c.REQUESTED_ADDRESS_FAMILY, V6)])) == 443
    assert code(cl.request(c.REFRESH, [(c.REQUESTED_ADDRESS_FAMILY, b"\x09\0\0\0")])) == 443
    assert code(cl.request(c.REFRESH, [(c.REQUESTED_ADDRESS_FAMILY, V4)])) == 200


def test_22_dont_fragment_gets_420_even_port_supported_without_reservation(h: Harness) -> None:
    a = h.client(addr=("192.0.2.1", 1))
    resp = a.allocate((c.DONT_FRAGMENT, b""))
    assert code(resp) == 420 and resp.attrs[c.UNKNOWN_ATTRIBUTES] == b"\x00\x1a"
    assert code(a.allocate((c.RESERVATION_TOKEN, b"12345678"))) == 420
    assert code(a.allocate((c.EVEN_PORT, b"\x80"))) == 508
    resp = a.allocate((c.EVEN_PORT, b"\x00"))
    relay = c.parse_xor_address(resp.attrs[c.XOR_RELAYED_ADDRESS], resp.txid)
    assert relay is not None and relay[1] % 2 == 0


# ---- Refresh and lifecycle ---------------------------------------------------------------

def test_24_refresh_sets_lifetime_and_zero_frees_the_port(h: Harness) -> None:
    cl = allocated(h)
    resp = cl.request(c.REFRESH, [(c.LIFETIME, c.uint32(900))])
    assert code(resp) == 200 and int.from_bytes(resp.attrs[c.LIFETIME], "big") == 900
    assert cl.allocation().expires == T0 + 900
    resp = cl.request(c.REFRESH, [(c.LIFETIME, c.uint32(0))])
    assert int.from_bytes(resp.attrs[c.LIFETIME], "big") == 0
    assert h.relays[0].closed and len(h.pool) == 4 and h.server.allocations == {}


def test_25_requests_without_allocation_get_437(alice: Client) -> None:
    assert code(alice.request(c.REFRESH)) == 437
    assert code(alice.permission(PUBLIC_PEER)) == 437
    assert code(alice.bind(0x4000, PUBLIC_PEER)) == 437


def test_26_unrefreshed_allocation_expires_and_frees_its_port(h: Harness) -> None:
    allocated(h)
    h.server.tick(T0 + 599)
    assert len(h.server.allocations) == 1
    h.server.tick(T0 + 600)
    assert h.server.allocations == {} and h.relays[0].closed and len(h.pool) == 4
    assert h.server.user_counts == {}


def test_44_connection_close_deletes_allocation(h: Harness) -> None:
    conn = object()
    cl = h.client(key=conn, tcp=True)
    assert code(cl.allocate()) == 200
    h.server.close_client(conn)
    assert h.server.allocations == {} and h.relays[0].closed


# ---- permissions ---------------------------------------------------------------------------

def test_27_permissions_are_per_ip_last_300s_and_refresh(h: Harness) -> None:
    cl = allocated(h)
    assert code(cl.permission(("8.8.8.8", 1), ("1.1.1.1", 2))) == 200
    al = cl.allocation()
    assert set(al.perms) == {"8.8.8.8", "1.1.1.1"}
    cl.send_indication(("8.8.8.8", 9999), b"any port")  # keyed by IP only
    assert h.relays[0].sent == [(b"any port", ("8.8.8.8", 9999))]
    assert code(cl.permission(("8.8.8.8", 1), now=T0 + 200)) == 200
    h.server.tick(T0 + 300)
    assert set(al.perms) == {"8.8.8.8"}
    cl.send_indication(("1.1.1.1", 2), b"expired")
    assert len(h.relays[0].sent) == 1
    h.server.tick(T0 + 500)
    assert al.perms == {}


def test_28_missing_peer_400_family_mismatch_443(h: Harness) -> None:
    cl = allocated(h)
    assert code(cl.request(c.CREATE_PERMISSION)) == 400
    assert code(cl.permission(("2606:4700::1111", 1))) == 443


@pytest.mark.parametrize("ip", DENIED_ADDRESSES)
def test_29_denied_peers_get_403_for_permission_and_channel(h: Harness, ip: str) -> None:
    cl = allocated(h)
    assert code(cl.permission((ip, 3478))) == 403
    assert code(cl.bind(0x4001, (ip, 3478))) == 403
    assert cl.allocation().perms == {}
    cl.send_indication((ip, 3478), b"never")
    assert h.relays[0].sent == []


def test_29_allow_list_opens_loopback_only() -> None:
    h = Harness(allowed=["127.0.0.0/8"])
    cl = allocated(h)
    assert code(cl.permission(("127.0.0.1", 1))) == 200
    assert code(cl.permission(("::ffff:127.0.0.1", 1))) == 443  # allowed, but IPv6 family
    assert code(cl.permission(("10.0.0.1", 1))) == 403


def test_30_too_many_permissions_get_508() -> None:
    h = Harness(max_permissions=3)
    cl = allocated(h)
    assert code(cl.permission(("8.8.8.1", 1), ("8.8.8.2", 1), ("8.8.8.3", 1))) == 200
    assert code(cl.permission(("8.8.8.4", 1))) == 508
    assert code(cl.permission(("8.8.8.1", 1))) == 200  # refreshing an existing one is fine


# ---- channels ------------------------------------------------------------------------------

def test_31_channel_number_range(h: Harness) -> None:
    cl = allocated(h)
    assert code(cl.bind(0x4000, ("8.8.8.8", 1))) == 200
    assert code(cl.bind(0x7FFF, ("8.8.8.8", 2))) == 200  # RFC 5766 range accepted by default
    assert code(cl.bind(0x3FFF, ("8.8.8.8", 3))) == 400
    assert code(cl.bind(0x8000, ("8.8.8.8", 4))) == 400
    strict = Harness(channel_max=0x4FFF)
    s = allocated(strict)
    assert code(s.bind(0x4FFF, ("8.8.8.8", 1))) == 200
    assert code(s.bind(0x5000, ("8.8.8.8", 2))) == 400


def test_31_32_channel_bind_installs_permission_and_stays_consistent(h: Harness) -> None:
    cl = allocated(h)
    assert code(cl.request(c.REFRESH, [(c.LIFETIME, c.uint32(3600))])) == 200
    peer, other = ("8.8.8.8", 5000), ("8.8.4.4", 5000)
    assert code(cl.bind(0x4000, peer)) == 200
    al = cl.allocation()
    assert "8.8.8.8" in al.perms
    assert al.out_routes == {0x4000: peer} and al.in_routes == {peer: 0x4000}
    assert code(cl.bind(0x4000, peer, now=T0 + 500)) == 200  # refresh
    assert code(cl.bind(0x4001, peer)) == 400  # same peer, other channel
    assert code(cl.bind(0x4000, other)) == 400  # same channel, other peer
    assert code(cl.bind(0x4001, other)) == 200
    h.server.tick(T0 + 1099)
    assert 0x4000 in al.channels
    h.server.tick(T0 + 1100)
    assert 0x4000 not in al.channels and 0x4000 not in al.out_routes
    assert 0x4001 not in al.out_routes  # its permission (300 s) lapsed: no relaying


def test_33_38_routes_follow_permission(h: Harness) -> None:
    cl = allocated(h)
    al = cl.allocation()
    assert code(cl.bind(0x4000, PUBLIC_PEER)) == 200
    h.server.tick(T0 + 300)  # permission lapses before the channel does
    assert al.out_routes == {} and al.in_routes == {}
    assert code(cl.permission(PUBLIC_PEER, now=T0 + 301)) == 200
    assert al.out_routes == {0x4000: PUBLIC_PEER}


# ---- indications ---------------------------------------------------------------------------

def test_37_send_indication_needs_permission_and_attributes(h: Harness) -> None:
    cl = allocated(h)
    cl.send_indication(PUBLIC_PEER, b"no permission")
    assert code(cl.permission(PUBLIC_PEER)) == 200
    cl.send_indication(PUBLIC_PEER, None)
    cl.send_indication(None, b"no peer")
    cl.send_indication(PUBLIC_PEER, b"hello")
    assert h.relays[0].sent == [(b"hello", PUBLIC_PEER)]
    assert cl.allocation().pk_out == 1 and cl.allocation().by_out == 5


def test_39_data_indication_format() -> None:
    txid = os.urandom(12)
    msg = c.parse(c.data_indication(("8.8.8.8", 53), b"abc", txid))
    assert msg is not None and (msg.method, msg.cls) == (c.DATA, c.INDICATION)
    assert c.parse_xor_address(msg.attrs[c.XOR_PEER_ADDRESS], txid) == ("8.8.8.8", 53)
    assert msg.attrs[c.DATA_ATTR] == b"abc" and msg.mi_offset < 0


def test_bandwidth_limit_drops_send_indications_over_the_rate() -> None:
    h = Harness(max_rate=1000)
    cl = allocated(h)
    assert code(cl.permission(PUBLIC_PEER)) == 200
    for _ in range(100):
        cl.send_indication(PUBLIC_PEER, b"x" * 1000)
    assert len(h.relays[0].sent) == 65  # the burst (64 KiB) passes, the rest is dropped
    h.server.tick(T0 + 5)
    cl.send_indication(PUBLIC_PEER, b"x" * 1000)
    assert len(h.relays[0].sent) == 66


# ---- security, capacity --------------------------------------------------------------------

def test_40_unauthenticated_answers_stay_small(alice: Client) -> None:
    req = alice.build(c.BINDING, sign=False)
    resp = alice.h.server.handle(req, alice.addr, alice.addr, False, T0)
    assert resp is not None and len(resp) <= 2 * len(req)
    req = alice.build(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0"),
                                   (c.LIFETIME, c.uint32(600))], sign=False)
    resp = alice.h.server.handle(req, alice.addr, alice.addr, False, T0)
    assert resp is not None and len(resp) <= 2.5 * len(req)


def test_42_thousand_failed_authentications_open_no_relay(h: Harness) -> None:
    for i in range(1000):
        cl = h.client(addr=("192.0.2.1", i + 1))
        cl.key = b"\1" * 16
        assert code(cl.allocate()) == 401
    assert h.relays == [] and h.server.allocations == {} and len(h.pool) == 4
    assert h.server.auth_failures["bad_integrity"] == 1000


# RELAY_IP is in TEST-NET-3 (denied), like a private relay address; 8.8.4.4 stands for a
# public one, which the deny list does not cover (issue 13 #4: every port was open)
@pytest.mark.parametrize("own", [RELAY_IP, "8.8.4.4"])
def test_45_relay_to_own_relay_ports_only(own: str) -> None:
    h = Harness(relay_ip=own)
    cl = allocated(h)
    for ip in (own, f"::ffff:{own}"):
        assert code(cl.permission((ip, 50001))) in (403, 443)  # IP-wide: refused
    for port in (22, 53, 8472, 10250, 49999, 50004):
        assert code(cl.bind(0x4000, (own, port))) == 403
    assert code(cl.bind(0x4000, (own, 50001))) == 200
    assert cl.allocation().restricted == {own}
    for port in (22, 53, 8472, 10250, 49999, 50004):
        cl.send_indication((own, port), b"host service")
    cl.send_indication((own, 50002), b"other relay")
    assert h.relays[0].sent == [(b"other relay", (own, 50002))]


def test_46_expired_credential_gets_a_signed_401_on_every_request(h: Harness) -> None:
    """Issue 13 #5: Refresh, CreatePermission and ChannelBind kept succeeding after the REST
    credential's timestamp, so a client could hold its relay port for ever."""
    cl = h.client(ttl=60)
    assert code(cl.allocate()) == 200
    al = cl.allocation()
    assert code(cl.permission(PUBLIC_PEER, now=T0 + 60)) == 200  # the last valid second
    later = T0 + 61
    cl.nonce = h.server.nonces.issue(later)
    answers = [cl.request(c.REFRESH, [(c.LIFETIME, c.uint32(3600))], now=later),
               cl.request(c.REFRESH, [(c.LIFETIME, c.uint32(0))], now=later),
               cl.permission(("8.8.4.4", 1), now=later),
               cl.bind(0x4000, PUBLIC_PEER, now=later)]
    for resp in answers:
        assert code(resp) == 401 and signed(resp, cl.key)  # aioice drops unsigned ones
        assert resp.text(c.REALM) == "example.org" and resp.text(c.NONCE)
    assert h.server.auth_failures["expired"] == 4
    assert al.expires == T0 + 600 and set(al.perms) == {PUBLIC_PEER[0]} and al.channels == {}
    h.server.tick(T0 + 600)  # nothing extended it: it ends with its lifetime
    assert h.server.allocations == {} and h.relays[0].closed


def test_46_expired_credential_cannot_allocate_even_with_a_valid_signature(h: Harness) -> None:
    cl = h.client(ttl=60)
    later = T0 + 61
    cl.nonce = h.server.nonces.issue(later)
    resp = cl.allocate(now=later)
    assert code(resp) == 401 and signed(resp, cl.key)
    assert h.relays == [] and h.server.auth_failures["expired"] == 1


def test_refresh_by_another_user_on_same_5_tuple_gets_437(h: Harness) -> None:
    allocated(h)
    mallory = h.client(user="mallory")
    assert code(mallory.request(c.REFRESH, [(c.LIFETIME, c.uint32(0))])) == 437
    assert len(h.server.allocations) == 1


@given(data=st.binary(max_size=200), header=st.booleans())
@settings(max_examples=300, deadline=None)
def test_random_input_never_raises_in_the_state_machine(data: bytes, header: bool) -> None:
    h = Harness()
    cl = allocated(h)
    if header:  # a plausible header so the attribute walk is reached
        body = data[: len(data) & ~3]
        data = c.HEADER.pack(c.message_type(c.ALLOCATE, c.REQUEST), len(body),
                             c.MAGIC_COOKIE, os.urandom(12)) + body
    h.server.handle(data, cl.key_id, cl.addr, False, T0)
    h.server.handle(data, ("192.0.2.99", 1), ("192.0.2.99", 1), False, T0)
    h.server.tick(T0 + 1)
