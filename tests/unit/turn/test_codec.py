"""Codec: RFC 5769 vectors, malformed input dropped, round trips, fuzzing (4.2 #2-7, #35-36)."""

from __future__ import annotations

import hashlib
import ipaddress
import struct
import zlib

from hypothesis import given
from hypothesis import strategies as st

from metadata_relay.turn import codec as c
from metadata_relay.turn.credentials import long_term_key

SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e20746573742063"
    "6c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68"
    "367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e5"
    "7a3bcf"
)
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f72"
    "20002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06b"
    "e7d780280004c07d4c96"
)
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f72"
    "20002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be6"
    "7bf11784c97c8292c275bfe3ed4180280004c8fb0b4c"
)
SAMPLE_LONG_TERM = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae383"
    "83e382afe382b900000015001c662f2f3439396b39353464364f4c33346f4c39465354"
    "7679363473410014000b6578616d706c652e6f72670000080014f67024656dd64a3e02"
    "b8e0712e85c9a28ca89666"
)
SHORT_TERM_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"


def test_rfc5769_sample_request() -> None:
    msg = c.parse(SAMPLE_REQUEST)
    assert msg is not None
    assert (msg.method, msg.cls) == (c.BINDING, c.REQUEST)
    assert msg.txid == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert msg.text(c.SOFTWARE) == "STUN test client"
    assert msg.text(c.USERNAME) == "evtj:h6vY"
    assert msg.has_fingerprint
    assert msg.verify_integrity(SHORT_TERM_PASSWORD)
    assert not msg.verify_integrity(b"wrong")


def test_rfc5769_ipv4_and_ipv6_responses() -> None:
    v4 = c.parse(SAMPLE_IPV4_RESPONSE)
    assert v4 is not None and v4.cls == c.SUCCESS and v4.verify_integrity(SHORT_TERM_PASSWORD)
    assert c.parse_xor_address(v4.attrs[c.XOR_MAPPED_ADDRESS], v4.txid) == ("192.0.2.1", 32853)
    v6 = c.parse(SAMPLE_IPV6_RESPONSE)
    assert v6 is not None and v6.verify_integrity(SHORT_TERM_PASSWORD)
    assert c.parse_xor_address(v6.attrs[c.XOR_MAPPED_ADDRESS], v6.txid) == (
        "2001:db8:1234:5678:11:2233:4455:6677", 32853)
    # our encoder reproduces the XOR-MAPPED-ADDRESS values byte for byte
    assert c.xor_address("192.0.2.1", 32853, v4.txid) == v4.attrs[c.XOR_MAPPED_ADDRESS]
    assert c.xor_address("2001:db8:1234:5678:11:2233:4455:6677", 32853, v6.txid) \
        == v6.attrs[c.XOR_MAPPED_ADDRESS]


def test_rfc5769_long_term_request_verifies_and_rebuilds() -> None:
    msg = c.parse(SAMPLE_LONG_TERM)
    assert msg is not None
    username = msg.text(c.USERNAME)
    assert username == "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert msg.text(c.REALM) == "example.org"
    assert msg.text(c.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    key = long_term_key(username, "example.org", "TheMatrIX")
    assert key == hashlib.md5(f"{username}:example.org:TheMatrIX".encode()).digest()
    assert msg.verify_integrity(key)
    assert not msg.verify_integrity(long_term_key(username, "example.org", "WrongPassword"))
    rebuilt = c.encode(c.BINDING, c.REQUEST, msg.txid, [
        (c.USERNAME, username.encode()),
        (c.NONCE, b"f//499k954d6OL34oL9FSTvy64sA"),
        (c.REALM, b"example.org"),
    ], key=key)
    assert rebuilt == SAMPLE_LONG_TERM


def _with_length(data: bytes, length: int) -> bytes:
    return data[:2] + struct.pack("!H", length) + data[4:]


def test_malformed_messages_are_dropped() -> None:
    good = c.encode(c.BINDING, c.REQUEST, b"x" * 12, [(c.SOFTWARE, b"abc")], fingerprint=True)
    assert c.parse(good) is not None
    bad_cookie = good[:4] + b"\x00\x00\x00\x00" + good[8:]
    assert c.parse(bad_cookie) is None
    assert c.parse(good[:-1]) is None  # length mismatch
    assert c.parse(_with_length(good + b"\x00\x00", len(good) - 20 + 2)) is None  # not % 4
    overrun = c.encode(c.BINDING, c.REQUEST, b"y" * 12, [(c.SOFTWARE, b"abcd")])
    overrun = overrun[:22] + struct.pack("!H", 200) + overrun[24:]
    assert c.parse(overrun) is None
    bad_fp = good[:-1] + bytes([good[-1] ^ 1])
    assert c.parse(bad_fp) is None
    # FINGERPRINT not last
    body = good[20:] + c.ATTR_HEADER.pack(c.SOFTWARE, 4) + b"abcd"
    assert c.parse(_with_length(good[:20], len(body)) + body) is None
    # first two bits must be zero; short input
    assert c.parse(b"\x80" + good[1:]) is None
    assert c.parse(good[:19]) is None
    # MESSAGE-INTEGRITY of the wrong size
    mi = c.encode(c.BINDING, c.REQUEST, b"z" * 12, [(c.MESSAGE_INTEGRITY, b"1234")])
    assert c.parse(mi) is None


def test_attributes_after_integrity_are_ignored_but_fingerprint_checked() -> None:
    key = b"k" * 16
    msg = c.encode(c.ALLOCATE, c.REQUEST, b"t" * 12, [(c.USERNAME, b"a")], key=key)
    extra = c.ATTR_HEADER.pack(c.REALM, 4) + b"evil"
    tampered = _with_length(msg, len(msg) - 20 + 8) + extra
    parsed = c.parse(tampered)
    assert parsed is not None
    assert c.REALM not in parsed.attrs
    assert parsed.verify_integrity(key)


def test_fingerprint_formula() -> None:
    msg = c.encode(c.BINDING, c.REQUEST, b"f" * 12, fingerprint=True)
    crc = (zlib.crc32(msg[:-8]) ^ 0x5354554E) & 0xFFFFFFFF
    assert msg[-4:] == crc.to_bytes(4, "big")


def test_message_type_bits() -> None:
    assert c.message_type(c.ALLOCATE, c.ERROR) == 0x0113
    assert c.message_type(c.CHANNEL_BIND, c.SUCCESS) == 0x0109
    assert c.message_type(c.SEND, c.INDICATION) == 0x0016
    assert c.message_type(c.DATA, c.INDICATION) == 0x0017
    for method in range(0x1000):
        for cls in range(4):
            assert c.split_type(c.message_type(method, cls)) == (method, cls)


def test_unknown_required_attributes() -> None:
    msg = c.parse(c.encode(c.ALLOCATE, c.REQUEST, b"u" * 12, [
        (c.DONT_FRAGMENT, b""), (0x7F00, b"x"), (0xC000, b"y"), (c.LIFETIME, b"\0\0\0\1")]))
    assert msg is not None
    assert c.unknown_required(msg) == [c.DONT_FRAGMENT, 0x7F00]


def test_channel_data_udp_and_stream_framing() -> None:
    assert c.channel_data(0x4000, b"abc") == b"\x40\x00\x00\x03abc"
    assert c.channel_data(0x4000, b"abc", pad=True) == b"\x40\x00\x00\x03abc\x00"
    assert c.parse_channel_data(b"\x40\x00\x00\x03abc\x00") == (0x4000, b"abc")  # padded ok
    assert c.parse_channel_data(b"\x40\x00\x00\x05abc") is None  # length > datagram
    assert c.parse_channel_data(b"\x00\x01\x00\x00") is None
    assert c.stream_frame_length(b"\x40\x00\x00\x03abc\x00") == 8
    assert c.stream_frame_length(b"\x40\x00") is None
    stun = c.encode(c.BINDING, c.REQUEST, b"s" * 12)
    assert c.stream_frame_length(stun) == 20
    assert c.stream_frame_length(b"\xff\x00\x00\x00") == -1
    assert c.stream_frame_length(stun[:6]) is None
    assert c.stream_frame_length(b"\x16\x03\x01\x02\x00\x01\x00\x01") == -1  # TLS hello
    assert c.stream_frame_length(b"\x00\x01\x00\x03") == -1


addresses = st.one_of(
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
    st.tuples(st.ip_addresses(v=6).map(lambda a: a.compressed), st.integers(0, 65535)),
)
attr_values = st.lists(st.tuples(st.integers(0x8030, 0xFFFF).filter(lambda a: a != c.FINGERPRINT),
                                 st.binary(max_size=64)), max_size=6)


@given(method=st.integers(0, 0xFFF), cls=st.integers(0, 3), txid=st.binary(min_size=12,
       max_size=12), attrs=attr_values, key=st.one_of(st.none(), st.binary(min_size=1,
       max_size=20)), fp=st.booleans())
def test_encode_parse_round_trip(method: int, cls: int, txid: bytes,
                                 attrs: list[tuple[int, bytes]], key: bytes | None,
                                 fp: bool) -> None:
    msg = c.parse(c.encode(method, cls, txid, attrs, key=key, fingerprint=fp))
    assert msg is not None
    assert (msg.method, msg.cls, msg.txid, msg.has_fingerprint) == (method, cls, txid, fp)
    first: dict[int, bytes] = {}
    for at, v in attrs:
        first.setdefault(at, v)
    assert msg.attrs == first
    if key is not None:
        assert msg.verify_integrity(key)


@given(addr=addresses, txid=st.binary(min_size=12, max_size=12))
def test_xor_address_round_trip(addr: tuple[str, int], txid: bytes) -> None:
    decoded = c.parse_xor_address(c.xor_address(addr[0], addr[1], txid), txid)
    assert decoded is not None
    assert (ipaddress.ip_address(decoded[0]), decoded[1]) == (ipaddress.ip_address(addr[0]),
                                                               addr[1])


@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    c.parse(data)
    c.parse_channel_data(data)
    c.stream_frame_length(data)
    c.parse_xor_address(data, b"\0" * 12)


@given(st.binary(min_size=0, max_size=200))
def test_random_attribute_bodies_never_raise(body: bytes) -> None:
    body = body[: len(body) & ~3]
    c.parse(struct.pack("!HHI12s", 1, len(body), c.MAGIC_COOKIE, b"r" * 12) + body)
