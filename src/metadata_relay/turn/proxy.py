"""PROXY protocol version 2 at the start of a TURN TCP stream, sans-I/O.

``turns:`` on port 443 is Traefik's: it terminates TLS and forwards the plain stream to the
TURN TCP listener with a PROXY v2 header naming the client (haproxy's proxy-protocol.txt,
section 2.2). Without it every TLS client would look like Traefik: XOR-MAPPED-ADDRESS,
``TURN_IP_QUOTA`` and the logs would all see the proxy.

Who may send one: only a peer in ``TRUSTED_PROXIES`` (the list the HTTP edge trusts with
``X-Forwarded-For``). From anyone else the 12 signature bytes are not STUN framing, so the
stream is garbage and closed like any other. From a trusted peer the header is **optional**: a
trusted address may also be a plain TURN client (a loopback test client, a pod on the node's
network), and a STUN or ChannelData frame can never begin with the signature, so the first
bytes tell the two apart. The cost of optional: a trusted proxy configured *without* PROXY
protocol would let its clients send their own header and pick their address; Traefik's route
for the relay always sends one, and a trusted network is trusted with ``X-Forwarded-For``
already.

What is accepted: version 2, command PROXY with a TCP over IPv4/IPv6 address block (the
client's address is the header's source; an IPv4-mapped IPv6 source is unmapped), or command
LOCAL, or family UNSPEC or UNIX (then the connection's own address stands, as the
specification says). TLVs are skipped after checking they fit. Refused (the connection is
closed): version 1's text header (Traefik can send either; configure v2), any other version
or command, UDP address blocks (this is the TCP listener), an address block shorter than its
family needs, TLVs overrunning the header, and headers longer than :data:`MAX_HEADER`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from metadata_relay.turn.codec import Address
from metadata_relay.turn.peers import Network, normalise

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
HEADER_FIXED = 16
MAX_HEADER = HEADER_FIXED + 2048
"""Largest header accepted: the address block plus room for the TLVs a proxy adds (SNI,
ALPN, TLS details); a longer one is refused rather than buffered."""
LOCAL, PROXY = 0x0, 0x1
TCP_V4, TCP_V6 = 0x11, 0x21
UNSPEC, UNIX_STREAM, UNIX_DGRAM = 0x00, 0x31, 0x32
_KEEP_OWN = frozenset({UNSPEC, UNIX_STREAM, UNIX_DGRAM})


class ProxyHeaderError(ValueError):
    """The stream starts with a PROXY header this server refuses (the message says why)."""


def from_trusted(ip: str, trusted: Iterable[Network]) -> bool:
    """Is ``ip`` (as the socket reports it; IPv4-mapped forms unmapped) in ``trusted``?"""
    addr = normalise(ip)
    return addr is not None and any(addr in net for net in trusted
                                    if net.version == addr.version)


def read_header(buf: bytes | bytearray) -> tuple[Address | None, int] | None:
    """The PROXY header at the start of ``buf`` from a trusted peer: ``(source, length)``
    once complete — ``source`` is the client's address, or None when the connection's own
    address stands (LOCAL, UNSPEC, UNIX, or no header at all, then ``length`` is 0) — or
    None while more bytes are needed to tell. Raises :class:`ProxyHeaderError`."""
    n = len(buf)
    head = bytes(buf[:12])
    if not SIGNATURE.startswith(head):
        if V1_PREFIX.startswith(bytes(buf[:6])):
            if n < len(V1_PREFIX):
                return None
            raise ProxyHeaderError("PROXY protocol version 1 (text) header: only version 2 "
                                   "is accepted")
        return None, 0  # a plain TURN stream
    if n < HEADER_FIXED:
        return None
    ver_cmd, fam = buf[12], buf[13]
    length = HEADER_FIXED + (buf[14] << 8 | buf[15])
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"PROXY protocol version {ver_cmd >> 4}: only 2 is accepted")
    command = ver_cmd & 0x0F
    if command not in (LOCAL, PROXY):
        raise ProxyHeaderError(f"unknown PROXY command {command}")
    if length > MAX_HEADER:
        raise ProxyHeaderError(f"PROXY header of {length} bytes (at most {MAX_HEADER})")
    if command == PROXY and fam not in (TCP_V4, TCP_V6, *_KEEP_OWN):
        raise ProxyHeaderError(f"PROXY address family/transport 0x{fam:02x} on a TCP stream")
    if n < length:
        return None
    block = {TCP_V4: 12, TCP_V6: 36, UNIX_STREAM: 216, UNIX_DGRAM: 216}.get(fam, 0)
    if command == PROXY and HEADER_FIXED + block > length:
        raise ProxyHeaderError("PROXY address block shorter than its family needs")
    _check_tlvs(buf, HEADER_FIXED + block if command == PROXY else length, length)
    if command == LOCAL or fam in _KEEP_OWN:
        return None, length
    if fam == TCP_V4:
        host = socket.inet_ntop(socket.AF_INET, bytes(buf[16:20]))
        port = buf[24] << 8 | buf[25]
    else:
        host = socket.inet_ntop(socket.AF_INET6, bytes(buf[16:32]))
        port = buf[48] << 8 | buf[49]
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
        if mapped is not None:
            host = str(mapped)
    return (host, port), length


def _check_tlvs(buf: bytes | bytearray, pos: int, end: int) -> None:
    """Every TLV (type, 16-bit length, value) between ``pos`` and ``end`` fits exactly."""
    while pos < end:
        if pos + 3 > end:
            raise ProxyHeaderError("truncated TLV in the PROXY header")
        pos += 3 + (buf[pos + 1] << 8 | buf[pos + 2])
        if pos > end:
            raise ProxyHeaderError("TLV overruns the PROXY header")



class StreamStart:
    """The first bytes of one TURN TCP connection, for either I/O edge: from a trusted peer an
    optional PROXY header is taken off (:func:`read_header`), from anyone else nothing is."""

    __slots__ = ("buf", "client")

    def __init__(self, peer: Address, trusted: bool) -> None:
        self.client = peer
        """The client's address: the peer's, or the PROXY header's source once read."""
        self.buf: bytearray | None = bytearray() if trusted else None

    def feed(self, data: bytes) -> bytes | None:
        """The stream's bytes from ``data`` on, once its start is known (then ``client`` is
        final); None while more are needed. Raises :class:`ProxyHeaderError`."""
        if self.buf is None:
            return data
        self.buf += data
        found = read_header(self.buf)
        if found is None:
            return None
        source, length = found
        if source is not None:
            self.client = source
        rest = bytes(self.buf[length:])
        self.buf = None
        return rest
