"""Credentials, nonces, peer policy, token bucket, port pool."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from metadata_relay.config import load_settings
from metadata_relay.ratelimit import TokenBucket
from metadata_relay.turn.credentials import (
    long_term_key,
    parse_rest_username,
    rest_credential,
    rest_password,
)
from metadata_relay.turn.nonce import NonceFactory
from metadata_relay.turn.peers import IP, PeerPolicy
from metadata_relay.turn.ports import PortPool

DEFAULT_DENIED = load_settings({}).TURN_DENIED_PEERS

# reference/turn.md 4.2 #29, the firefart range-scan list, and one address (or more) in every
# range of the default deny list: each is refused by the policy, the state machine and the
# running server (test_29_*, tests/integration/turn/test_security.py)
DENIED_ADDRESSES = [
    "127.0.0.1", "127.0.0.8", "127.255.255.254", "0.0.0.0", "0.1.2.3", "::", "::1",
    "10.0.0.1", "10.255.255.254", "172.16.0.1", "172.31.255.254", "192.168.0.1",
    "192.168.255.254", "169.254.169.254", "100.64.0.1", "100.127.255.254", "224.0.0.1",
    "239.255.255.254", "240.0.0.1", "255.255.255.254", "255.255.255.255", "192.0.0.1",
    "192.0.0.8", "192.0.0.9", "192.0.0.10", "192.0.0.170", "192.0.0.171", "192.0.0.200",
    "192.0.2.1", "192.31.196.1", "192.52.193.1", "192.88.99.1", "192.88.99.2",
    "192.175.48.1", "198.51.100.1", "203.0.113.1", "198.18.0.1", "198.19.255.254",
    "fe80::1", "fc00::1", "fdff::1", "fec0::1", "feff::1", "64:ff9b::a9fe:a9fe",
    "64:ff9b::808:808", "64:ff9b:1::a00:1", "64:ff9b:1:ffff::1", "100::1", "100:0:0:1::1",
    "2001::1", "2001:0:4136:e378::1", "2001:1::1", "2001:1::2", "2001:1::3", "2001:2::1",
    "2001:3::1", "2001:4:112::1", "2001:10::1", "2001:1f::1", "2001:20::1", "2001:30::1",
    "2001:1ff::1", "2001:db8::1", "2002::1", "2002:a00:1::1", "2620:4f:8000::1", "3fff::1",
    "3fff:fff::1", "5f00::1", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "::ffff:0:0",
    "::ffff:8.8.8.8", "::ffff:0:8.8.8.8", "::ffff:0:a00:1", "::127.0.0.1", "::8.8.8.8",
    "::ffff:192.168.1.1",
]


def test_rest_credential_formula_matches_an_independent_computation() -> None:
    username, password = rest_credential("s3cret", "alice", 3600, now=1_000_000.7)
    assert username == "1003600:alice"
    expected = base64.b64encode(
        hmac.new(b"s3cret", b"1003600:alice", hashlib.sha1).digest()).decode()
    assert password == expected == rest_password("s3cret", username)
    assert long_term_key(username, "r", password) == hashlib.md5(
        f"{username}:r:{password}".encode()).digest()


@pytest.mark.parametrize(("username", "parsed"), [
    ("123:bob", (123, "bob")), ("123", None), ("123:", (123, "")), ("123:a:b", (123, "a:b")),
    ("abc:bob", None), (":bob", None), ("-1:bob", None), ("", None), ("1" * 13 + ":x", None),
    ("\u0661\u0662:x", None),
])
def test_parse_rest_username(username: str, parsed: tuple[int, str] | None) -> None:
    assert parse_rest_username(username) == parsed


def test_nonce_is_stateless_expires_and_cannot_be_forged() -> None:
    nonces = NonceFactory(lifetime=600, key=b"k" * 32)
    n = nonces.issue(1000.0)
    assert nonces.valid(n, 1000.0)
    assert nonces.valid(n, 1599.0)
    assert not nonces.valid(n, 1600.0)  # stale
    assert not nonces.valid(n, 900.0)  # from the future
    assert not NonceFactory(600, key=b"x" * 32).valid(n, 1000.0)  # other key
    forged = f"{2000:08x}" + n[8:]
    assert not nonces.valid(forged, 2000.0)
    assert not nonces.valid("", 1000.0)
    assert not nonces.valid("zz" * 14, 1000.0)


@pytest.mark.parametrize("ip", DENIED_ADDRESSES)
def test_default_deny_list_refuses_private_and_special_addresses(ip: str) -> None:
    policy = PeerPolicy(DEFAULT_DENIED)
    assert not policy.permits_ip(ip)
    assert not policy.permits(ip, 3478)


def test_every_range_of_the_default_deny_list_has_a_denied_address_tested() -> None:
    addresses = [ipaddress.ip_address(a) for a in DENIED_ADDRESSES]
    for net in DEFAULT_DENIED:
        assert any(a in net for a in addresses if a.version == net.version), net


@hsettings(max_examples=2000, deadline=None)
@given(st.ip_addresses())
def test_every_address_the_standard_library_calls_special_is_denied(addr: IP) -> None:
    """A cross-check with independent lists: hypothesis draws often from the IANA registries'
    ranges, and ``ipaddress`` says which addresses are not globally reachable."""
    special = (not addr.is_global or addr.is_private or addr.is_multicast or addr.is_loopback
               or addr.is_link_local or addr.is_unspecified
               or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local))
    if special:
        assert not PeerPolicy(DEFAULT_DENIED).permits_ip(str(addr))


def test_scoped_and_malformed_addresses() -> None:
    policy = PeerPolicy(DEFAULT_DENIED)
    assert not policy.permits_ip("fe80::1%eth0")
    assert policy.permits_ip("2606:4700::1111%eth0")  # a scope changes nothing else
    for bad in ("", "not an ip", "1.2.3", "::g", "1.2.3.4.5", "0x7f.1"):
        assert not policy.permits_ip(bad)


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "192.0.1.1",
                                "192.31.197.1", "100.128.0.1", "2001:200::1", "2003::1",
                                "3ffe::1", "2620:4f:8001::1"])
def test_public_addresses_are_allowed(ip: str) -> None:
    assert PeerPolicy(DEFAULT_DENIED).permits_ip(ip)


def test_allow_list_punches_holes_including_mapped_forms() -> None:
    policy = PeerPolicy(DEFAULT_DENIED, [ipaddress.ip_network("127.0.0.0/8")])
    assert policy.permits_ip("127.0.0.1")
    assert policy.permits_ip("::ffff:127.0.0.1")
    assert not policy.permits_ip("10.0.0.1")
    assert not policy.permits_ip("not an ip")


@pytest.mark.parametrize("own", ["10.0.0.5", "8.8.4.4"])  # denied anyway, and public
def test_own_relay_address_is_reachable_only_on_relay_ports(own: str) -> None:
    policy = PeerPolicy(DEFAULT_DENIED, own_ips=[own], relay_ports=(50000, 50010))
    assert not policy.permits_ip(own)  # no IP-wide permission: every port would be open
    assert not policy.permits_ip(f"::ffff:{own}")
    assert policy.permits(own, 50000)
    assert policy.permits(f"::ffff:{own}", 50010)
    for port in (22, 53, 8472, 10250, 49999, 50011, 65535):
        assert not policy.permits(own, port)
        assert not policy.permits(f"::ffff:{own}", port)
    assert policy.own_allowed() == []


def test_own_address_on_every_port_only_when_the_allow_list_names_it() -> None:
    policy = PeerPolicy(DEFAULT_DENIED, [ipaddress.ip_network("127.0.0.0/8")],
                        own_ips=["127.0.0.1", "8.8.4.4"], relay_ports=(50000, 50010))
    assert policy.permits("127.0.0.1", 22) and policy.permits_ip("127.0.0.1")
    assert not policy.permits("8.8.4.4", 22)
    assert policy.own_allowed() == ["127.0.0.1"]


def test_token_bucket_limits_then_refills() -> None:
    b = TokenBucket(rate=1000, burst=1500, now=0.0)
    assert b.take(1500)
    assert not b.take(1)
    b.refill(0.5)
    assert b.tokens == pytest.approx(500)
    assert b.take(500) and not b.take(1)
    b.refill(100.0)
    assert b.tokens == 1500  # capped at the burst


def test_port_pool_hands_out_each_port_once() -> None:
    pool = PortPool(50000, 50003)
    assert pool.size == 4 and len(pool) == 4
    assert all(p % 2 == 0 for p in pool.candidates(even=True))
    for p in pool.candidates():
        pool.take(p)
    assert pool.candidates() == []
    pool.release(50001)
    pool.release(1)  # outside the range: ignored
    assert pool.candidates() == [50001]
