"""PROXY protocol v2 headers at the start of a TURN TCP stream (turn/proxy.py): what a trusted
proxy sends is read whole or asked for more, never half-taken; everything malformed, version
1 and foreign families are refused; a plain TURN stream is told apart at its first byte."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metadata_relay.turn import codec as c
from metadata_relay.turn.proxy import (
    MAX_HEADER,
    SIGNATURE,
    ProxyHeaderError,
    StreamStart,
    from_trusted,
    read_header,
)

ips4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ips6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1))
ports = st.integers(0, 65535)
tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=6).map(
    lambda items: b"".join(bytes([t]) + len(v).to_bytes(2, "big") + v for t, v in items))


def v2(ver_cmd: int, fam: int, body: bytes) -> bytes:
    """A PROXY v2 header built byte by byte from the specification (section 2.2)."""
    return SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", len(body)) + body


def tcp(src: tuple[str, int], dst: tuple[str, int] = ("127.0.0.1", 3478), extra: bytes = b"",
        cmd: int = 0x21) -> bytes:
    family = socket.AF_INET6 if ":" in src[0] else socket.AF_INET
    block = (socket.inet_pton(family, src[0]) + socket.inet_pton(family, dst[0])
             + struct.pack("!HH", src[1], dst[1]))
    return v2(cmd, 0x21 if family == socket.AF_INET6 else 0x11, block + extra)


@given(ip=st.one_of(ips4, ips6), port=ports, extra=tlvs, rest=st.binary(max_size=30))
def test_a_complete_header_names_the_client_and_its_length(ip: str, port: int, extra: bytes,
                                                           rest: bytes) -> None:
    if ":" in ip:  # the form inet_ntop gives, as for any socket address
        ip = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip))
    head = tcp((ip, port), ("::1" if ":" in ip else "127.0.0.1", 3478), extra)
    source, length = read_header(head + rest) or (None, -1)
    mapped = ipaddress.ip_address(ip)
    expected = str(mapped.ipv4_mapped) if isinstance(mapped, ipaddress.IPv6Address) \
        and mapped.ipv4_mapped else ip
    assert source == (expected, port)
    assert length == len(head)


@given(ip=ips4, port=ports, extra=tlvs, data=st.data())
def test_every_truncation_asks_for_more(ip: str, port: int, extra: bytes,
                                        data: st.DataObject) -> None:
    head = tcp((ip, port), extra=extra)
    cut = data.draw(st.integers(0, len(head) - 1))
    assert read_header(head[:cut]) is None


def test_an_ipv4_mapped_source_is_unmapped() -> None:
    assert read_header(tcp(("::ffff:198.51.100.7", 40000), ("::1", 443))) == (
        ("198.51.100.7", 40000), 52)


def test_local_command_and_foreign_families_keep_the_connections_address() -> None:
    assert read_header(v2(0x20, 0x00, b"")) == (None, 16)  # LOCAL (a health check)
    assert read_header(v2(0x20, 0x11, bytes(12))) == (None, 28)  # LOCAL ignores the block
    assert read_header(v2(0x20, 0x77, b"\x02\xff")) == (None, 18)  # whatever it holds
    assert read_header(v2(0x21, 0x00, b"")) == (None, 16)  # PROXY, UNSPEC
    assert read_header(v2(0x21, 0x31, bytes(216))) == (None, 232)  # PROXY, UNIX stream


@pytest.mark.parametrize(("header", "why"), [
    (v2(0x11, 0x11, bytes(12)), "version 1"),
    (v2(0x31, 0x11, bytes(12)), "version 3"),
    (v2(0x22, 0x11, bytes(12)), "command"),
    (v2(0x21, 0x12, bytes(12)), "0x12"),  # UDP over IPv4 on the TCP listener
    (v2(0x21, 0x22, bytes(36)), "0x22"),
    (v2(0x21, 0x41, bytes(12)), "0x41"),
    (v2(0x21, 0x11, bytes(11)), "shorter"),
    (v2(0x21, 0x21, bytes(12)), "shorter"),  # an IPv4-sized block for IPv6
    (v2(0x21, 0x11, bytes(12) + b"\x01\x00"), "truncated TLV"),
    (v2(0x21, 0x11, bytes(12) + b"\x01\x00\x05abc"), "overruns"),
    (v2(0x21, 0x00, b"\x02\xff\xff"), "overruns"),
])
def test_malformed_headers_are_refused(header: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why):
        read_header(header)


def test_oversized_headers_are_refused_before_they_are_buffered() -> None:
    fill = MAX_HEADER - 16 - 12 - 3
    largest = v2(0x21, 0x11, bytes(12) + b"\x01" + fill.to_bytes(2, "big") + bytes(fill))
    assert read_header(largest) == (("0.0.0.0", 0), MAX_HEADER)
    big = SIGNATURE + bytes([0x21, 0x11]) + (MAX_HEADER - 15).to_bytes(2, "big")
    with pytest.raises(ProxyHeaderError, match="bytes"):
        read_header(big)  # only the fixed 16 bytes have arrived: refused at once


def test_version_1_text_header_is_refused_once_recognisable() -> None:
    line = b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 443\r\n"
    for cut in range(1, 6):
        assert read_header(line[:cut]) is None
    with pytest.raises(ProxyHeaderError, match="version 1"):
        read_header(line)


def test_plain_turn_streams_are_told_apart_at_once() -> None:
    binding = c.encode(c.BINDING, c.REQUEST, os.urandom(12), fingerprint=True)
    for stream in (binding, binding[:1], c.channel_data(0x4000, b"x", pad=True),
                   b"\x16\x03\x01", b"GET / HTTP/1.1\r\n"):
        assert read_header(stream) == (None, 0)
    assert read_header(b"") is None and read_header(SIGNATURE[:5]) is None


@given(st.binary(max_size=80))
def test_random_bytes_only_ever_raise_the_refusal(data: bytes) -> None:
    for buf in (data, SIGNATURE + data):
        try:
            result = read_header(buf)
        except ProxyHeaderError:
            continue
        if result is not None:
            source, length = result
            assert 0 <= length <= len(buf)
            assert source is None or isinstance(source[1], int)


def test_trust_is_by_the_proxy_list_with_mapped_forms() -> None:
    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert from_trusted("10.42.0.7", nets) and from_trusted("::ffff:10.42.0.7", nets)
    assert from_trusted("::1", nets)
    assert not from_trusted("127.0.0.1", nets) and not from_trusted("203.0.113.9", nets)
    assert not from_trusted("not an address", nets)


def test_stream_start_takes_the_header_off_once_in_any_split() -> None:
    head = tcp(("198.51.100.7", 40000))
    stream = head + c.channel_data(0x4000, b"payload", pad=True)
    for cut in range(len(stream) + 1):
        start = StreamStart(("127.0.0.1", 5555), trusted=True)
        first = start.feed(stream[:cut])
        rest = start.feed(stream[cut:]) if first is None else first + start.feed(stream[cut:])
        assert rest == stream[len(head):]
        assert start.client == ("198.51.100.7", 40000)


def test_stream_start_of_an_untrusted_peer_passes_everything_through() -> None:
    start = StreamStart(("203.0.113.9", 5555), trusted=False)
    head = tcp(("198.51.100.7", 40000))
    assert start.feed(head) == head  # garbage to the framing, which closes the connection
    assert start.client == ("203.0.113.9", 5555)
    plain = StreamStart(("127.0.0.1", 5555), trusted=True)
    assert plain.feed(b"\x00\x01") == b"\x00\x01" and plain.client == ("127.0.0.1", 5555)
    refused = StreamStart(("127.0.0.1", 5555), trusted=True)
    with pytest.raises(ProxyHeaderError):
        refused.feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
