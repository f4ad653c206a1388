"""STUN/TURN wire format (RFC 8489, RFC 8656): parse bytes into messages, build bytes back.

Pure functions over ``bytes``; nothing here touches a socket. Anything malformed parses to
``None`` so the caller drops it silently (bad cookie, length not a multiple of 4, attribute
overrunning the message, FINGERPRINT not last or wrong).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
FINGERPRINT_XOR = 0x5354554E
HEADER = struct.Struct("!HHI12s")
ATTR_HEADER = struct.Struct("!HH")
CHANNEL_HEADER = struct.Struct("!HH")

# classes
REQUEST = 0
INDICATION = 1
SUCCESS = 2
ERROR = 3

# methods
BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009

# attributes
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
XOR_MAPPED_ADDRESS = 0x0020
RESERVATION_TOKEN = 0x0022
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
ADDITIONAL_ADDRESS_FAMILY = 0x8000
ADDRESS_ERROR_CODE = 0x8001
# the same two before RFC 8656 gave them their numbers (draft-ietf-tram-turnbis): coturn up to
# 4.9, Debian's 4.6.1 turnutils_uclient -Z among them, sends and reads these
ADDITIONAL_ADDRESS_FAMILY_DRAFT = 0x8032
ADDRESS_ERROR_CODE_DRAFT = 0x8033
SOFTWARE = 0x8022
FINGERPRINT = 0x8028

# REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY values (RFC 8656 section 18.10)
FAMILY_VALUES = {4: 0x01, 6: 0x02}

# Comprehension-required attributes (< 0x8000) this server understands; any other one in a
# request gets 420 (DONT-FRAGMENT, RESERVATION-TOKEN, MI-SHA256, USERHASH, ...). EVEN-PORT is
# supported without its R bit (no port reservation).
KNOWN_REQUIRED = frozenset({
    MAPPED_ADDRESS, USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, UNKNOWN_ATTRIBUTES,
    CHANNEL_NUMBER, LIFETIME, XOR_PEER_ADDRESS, DATA_ATTR, REALM, NONCE, XOR_RELAYED_ADDRESS,
    REQUESTED_ADDRESS_FAMILY, REQUESTED_TRANSPORT, XOR_MAPPED_ADDRESS, PRIORITY, USE_CANDIDATE,
    EVEN_PORT,
})

REASONS = {
    300: "Try Alternate", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    420: "Unknown Attribute", 437: "Allocation Mismatch", 438: "Stale Nonce",
    440: "Address Family not Supported", 441: "Wrong Credentials",
    442: "Unsupported Transport Protocol", 443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached", 500: "Server Error", 508: "Insufficient Capacity",
}

Address = tuple[str, int]


def message_type(method: int, cls: int) -> int:
    return ((method & 0x0F80) << 2) | ((method & 0x0070) << 1) | (method & 0x000F) \
        | ((cls & 2) << 7) | ((cls & 1) << 4)


def split_type(t: int) -> tuple[int, int]:
    method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    cls = ((t >> 7) & 2) | ((t >> 4) & 1)
    return method, cls


@dataclass(slots=True)
class Message:
    method: int
    cls: int
    txid: bytes
    attrs: dict[int, bytes] = field(default_factory=dict)
    """First value of each attribute before MESSAGE-INTEGRITY (later ones are ignored)."""
    order: list[int] = field(default_factory=list)
    raw: bytes = b""
    mi_offset: int = -1
    """Offset of the MESSAGE-INTEGRITY attribute in ``raw``, or -1."""
    has_fingerprint: bool = False

    def verify_integrity(self, key: bytes) -> bool:
        """Constant-time check of MESSAGE-INTEGRITY (HMAC-SHA1 with the length adjusted)."""
        off = self.mi_offset
        if off < 0:
            return False
        raw = self.raw
        header = raw[:2] + (off + 24 - 20).to_bytes(2, "big") + raw[4:off]
        mac = hmac.new(key, header, hashlib.sha1).digest()
        return hmac.compare_digest(mac, raw[off + 4 : off + 24])

    def text(self, attr: int) -> str | None:
        value = self.attrs.get(attr)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None


def parse(data: bytes) -> Message | None:
    """Parse one complete STUN message; ``None`` for anything malformed."""
    n = len(data)
    if n < 20 or data[0] & 0xC0:
        return None
    t, length, cookie, txid = HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or length & 3 or length + 20 != n:
        return None
    method, cls = split_type(t)
    msg = Message(method, cls, txid, raw=bytes(data))
    attrs = msg.attrs
    pos = 20
    while pos < n:
        if pos + 4 > n:
            return None
        at, alen = ATTR_HEADER.unpack_from(data, pos)
        vstart = pos + 4
        vend = vstart + alen
        nxt = vstart + ((alen + 3) & ~3)
        if nxt > n:
            return None
        if at == FINGERPRINT:
            if alen != 4 or nxt != n:
                return None
            crc = (zlib.crc32(data[:pos]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if crc != int.from_bytes(data[vstart:vend], "big"):
                return None
            msg.has_fingerprint = True
        elif msg.mi_offset < 0:
            if at == MESSAGE_INTEGRITY:
                if alen != 20:
                    return None
                msg.mi_offset = pos
            else:
                msg.order.append(at)
                if at not in attrs:
                    attrs[at] = bytes(data[vstart:vend])
        pos = nxt
    return msg


def every(msg: Message, attr: int) -> list[bytes]:
    """The value of every occurrence of ``attr`` before MESSAGE-INTEGRITY, in order
    (``Message.attrs`` keeps only the first)."""
    out: list[bytes] = []
    raw = msg.raw
    pos, end = 20, (msg.mi_offset if msg.mi_offset >= 0 else len(raw))
    while pos + 4 <= end:
        at, alen = ATTR_HEADER.unpack_from(raw, pos)
        if at == attr:
            out.append(raw[pos + 4 : pos + 4 + alen])
        pos += 4 + ((alen + 3) & ~3)
    return out


def unknown_required(msg: Message) -> list[int]:
    return [a for a in dict.fromkeys(msg.order) if a < 0x8000 and a not in KNOWN_REQUIRED]


def encode(method: int, cls: int, txid: bytes, attrs: Sequence[tuple[int, bytes]] = (),
           key: bytes | None = None, fingerprint: bool = False) -> bytes:
    """Build a message; sign with MESSAGE-INTEGRITY when ``key`` is given, then FINGERPRINT."""
    parts: list[bytes] = []
    for at, value in attrs:
        parts.append(ATTR_HEADER.pack(at, len(value)))
        parts.append(value)
        pad = -len(value) & 3
        if pad:
            parts.append(b"\x00" * pad)
    body = b"".join(parts)
    t = message_type(method, cls)
    if key is not None:
        header = HEADER.pack(t, len(body) + 24, MAGIC_COOKIE, txid)
        mac = hmac.new(key, header + body, hashlib.sha1).digest()
        body += ATTR_HEADER.pack(MESSAGE_INTEGRITY, 20) + mac
    if fingerprint:
        header = HEADER.pack(t, len(body) + 8, MAGIC_COOKIE, txid)
        crc = (zlib.crc32(header + body) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        return header + body + ATTR_HEADER.pack(FINGERPRINT, 4) + crc.to_bytes(4, "big")
    return HEADER.pack(t, len(body), MAGIC_COOKIE, txid) + body


def error_value(code: int, reason: str | None = None) -> bytes:
    phrase = (reason or REASONS.get(code, "Error")).encode()
    return bytes((0, 0, code // 100, code % 100)) + phrase


def parse_error(value: bytes) -> tuple[int, str]:
    return (value[2] & 7) * 100 + value[3], value[4:].decode("utf-8", "replace")


def ip_family(ip: str) -> int:
    """4 or 6: the address family of an IP address as written."""
    return 6 if ":" in ip else 4


def address_family(value: bytes) -> int | None:
    """A REQUESTED-/ADDITIONAL-ADDRESS-FAMILY value: 4, 6, or None when malformed or unknown."""
    if len(value) != 4:
        return None
    return {0x01: 4, 0x02: 6}.get(value[0])


def family_value(family: int) -> bytes:
    """The 4-byte REQUESTED-ADDRESS-FAMILY value for ``family`` (4 or 6)."""
    return bytes((FAMILY_VALUES[family], 0, 0, 0))


def address_error_value(family: int, code: int) -> bytes:
    """ADDRESS-ERROR-CODE (RFC 8656 section 18.12): which family was not allocated, and why."""
    return bytes((FAMILY_VALUES[family], 0)) + error_value(code)[2:]


def xor_address(ip: str, port: int, txid: bytes) -> bytes:
    """XOR-*-ADDRESS value for ``(ip, port)``."""
    xport = port ^ (MAGIC_COOKIE >> 16)
    if ":" in ip:
        raw = socket.inet_pton(socket.AF_INET6, ip)
        mask = COOKIE_BYTES + txid
        xored = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
        return struct.pack("!BBH", 0, 2, xport) + xored
    raw4 = int.from_bytes(socket.inet_aton(ip), "big") ^ MAGIC_COOKIE
    return struct.pack("!BBHI", 0, 1, xport, raw4)


def parse_xor_address(value: bytes, txid: bytes) -> Address | None:
    """Decode an XOR-*-ADDRESS value; ``None`` when malformed."""
    if len(value) < 4:
        return None
    family = value[1]
    port = int.from_bytes(value[2:4], "big") ^ (MAGIC_COOKIE >> 16)
    if family == 1 and len(value) == 8:
        raw4 = (int.from_bytes(value[4:8], "big") ^ MAGIC_COOKIE).to_bytes(4, "big")
        return socket.inet_ntoa(raw4), port
    if family == 2 and len(value) == 20:
        mask = COOKIE_BYTES + txid
        raw = bytes(a ^ b for a, b in zip(value[4:20], mask, strict=True))
        return socket.inet_ntop(socket.AF_INET6, raw), port
    return None


def uint32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def channel_data(channel: int, payload: bytes, pad: bool = False) -> bytes:
    """A ChannelData message; ``pad`` (for stream transports) pads to a multiple of 4."""
    frame = CHANNEL_HEADER.pack(channel, len(payload)) + payload
    if pad and len(payload) & 3:
        frame += b"\x00" * (-len(payload) & 3)
    return frame


def parse_channel_data(data: bytes) -> tuple[int, bytes] | None:
    """(channel, payload) of a ChannelData datagram (padding allowed); ``None`` if malformed."""
    if len(data) < 4 or data[0] & 0xC0 != 0x40:
        return None
    channel, length = CHANNEL_HEADER.unpack_from(data)
    if length + 4 > len(data):
        return None
    return channel, bytes(data[4 : 4 + length])


def stream_frame_length(buf: bytes | bytearray, pos: int = 0) -> int | None:
    """Length of the frame starting at ``pos`` of a TCP stream (ChannelData padded to 4),
    ``None`` if more bytes are needed, ``-1`` if the stream is garbage (not STUN framing, or
    a STUN header without the magic cookie, e.g. TLS or HTTP on the plain port)."""
    avail = len(buf) - pos
    if avail < 4:
        return None
    first = buf[pos] & 0xC0
    length = (buf[pos + 2] << 8) | buf[pos + 3]
    if first == 0:
        if length & 3:
            return -1
        if avail < 8:
            return None
        if buf[pos + 4 : pos + 8] != COOKIE_BYTES:
            return -1
        return 20 + length
    if first == 0x40:
        return 4 + ((length + 3) & ~3)
    return -1


def data_indication(peer: Address, payload: bytes, txid: bytes) -> bytes:
    """Data indication (XOR-PEER-ADDRESS + DATA, no MESSAGE-INTEGRITY) carrying peer data."""
    return encode(DATA, INDICATION, txid, [
        (XOR_PEER_ADDRESS, xor_address(peer[0], peer[1], txid)),
        (DATA_ATTR, payload),
    ])
