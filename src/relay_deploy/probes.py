"""The outside-in checks verify and status run: DNS A lookup, STUN Binding (over UDP, and
over TLS as a turns: client does), HTTPS /health and an HTTPS GET by server name.

The DNS and STUN wire formats are small sans-I/O encode/parse functions; ``resolve_a``,
``stun_binding`` and ``stun_binding_tls`` are the thin socket edges around them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

# ---- DNS (RFC 1035): one A question, recursion desired --------------------------------------


def encode_dns_query(txid: int, name: str) -> bytes:
    header = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split("."))
    return header + labels + b"\x00" + struct.pack("!HH", 1, 1)


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        if pos >= len(data):
            raise ValueError("truncated name")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length


def parse_dns_answer(txid: int, data: bytes) -> list[str]:
    """A records in a response to our query ``txid``; raises ValueError on garbage/errors."""
    if len(data) < 12:
        raise ValueError("short DNS response")
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", data[:12])
    if rid != txid or not flags & 0x8000:
        raise ValueError("not a response to our query")
    rcode = flags & 0x000F
    if rcode == 3:
        return []
    if rcode != 0:
        raise ValueError(f"DNS error rcode {rcode}")
    pos = 12
    for _ in range(qd):
        pos = _skip_name(data, pos) + 4
    out = []
    for _ in range(an):
        pos = _skip_name(data, pos)
        if pos + 10 > len(data):
            raise ValueError("truncated answer")
        rtype, rclass, _ttl, rdlen = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        rdata = data[pos:pos + rdlen]
        if len(rdata) != rdlen:
            raise ValueError("truncated rdata")
        if rtype == 1 and rclass == 1 and rdlen == 4:
            out.append(str(ipaddress.IPv4Address(rdata)))
        pos += rdlen
    return out


T = TypeVar("T")


def _udp_exchange(host: str, port: int, request: bytes, parse: Callable[[bytes], T],
                  ours: Callable[[bytes], bool], bufsize: int, timeout: float,
                  attempts: int) -> T | None:
    """Send ``request`` up to ``attempts`` times; the first answer ``parse`` accepts.
    Unparsable datagrams are skipped unless ``ours`` says they answer this request (then
    the ValueError is raised); TimeoutError after the last attempt."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        for attempt in range(attempts):
            sock.sendto(request, (host, port))
            try:
                while True:
                    data, _ = sock.recvfrom(bufsize)
                    try:
                        return parse(data)
                    except ValueError:
                        if ours(data):
                            raise
            except TimeoutError:
                if attempt == attempts - 1:
                    raise
    return None


def resolve_a(name: str, server: str, port: int = 53, timeout: float = 3.0,
              attempts: int = 2) -> list[str]:
    txid = int.from_bytes(os.urandom(2), "big")
    query = encode_dns_query(txid, name)
    answer = _udp_exchange(server, port, query, lambda d: parse_dns_answer(txid, d),
                           lambda d: d[:2] == query[:2], 4096, timeout, attempts)
    return answer if answer is not None else []


# ---- STUN (RFC 5389): Binding request, XOR-MAPPED-ADDRESS in the success response ----------

MAGIC_COOKIE = 0x2112A442


def encode_binding_request(txid: bytes) -> bytes:
    assert len(txid) == 12
    return struct.pack("!HHI", 0x0001, 0, MAGIC_COOKIE) + txid


def parse_binding_response(txid: bytes, data: bytes) -> tuple[str, int] | None:
    """The mapped (address, port) of a Binding success for ``txid``; None if none given.
    Raises ValueError for anything that is not that response."""
    if len(data) < 20:
        raise ValueError("short STUN message")
    mtype, length, cookie = struct.unpack("!HHI", data[:8])
    if cookie != MAGIC_COOKIE or data[8:20] != txid:
        raise ValueError("not a response to our request")
    if mtype != 0x0101:
        raise ValueError(f"not a Binding success (type 0x{mtype:04x})")
    if 20 + length > len(data):
        raise ValueError("truncated STUN message")
    pos, end = 20, 20 + length
    mapped = None
    while pos + 4 <= end:
        atype, alen = struct.unpack("!HH", data[pos:pos + 4])
        value = data[pos + 4:pos + 4 + alen]
        if len(value) != alen:
            raise ValueError("truncated attribute")
        if atype in (0x0020, 0x0001) and alen >= 8 and value[1] == 0x01:
            port = struct.unpack("!H", value[2:4])[0]
            raw = value[4:8]
            if atype == 0x0020:
                port ^= MAGIC_COOKIE >> 16
                raw = bytes(a ^ b for a, b in zip(raw, struct.pack("!I", MAGIC_COOKIE),
                                                  strict=True))
            mapped = (str(ipaddress.IPv4Address(raw)), port)
            if atype == 0x0020:
                return mapped
        pos += 4 + alen + (-alen % 4)
    return mapped


def stun_binding(host: str, port: int, timeout: float = 3.0, attempts: int = 3
                 ) -> tuple[str, int] | None:
    """Send a Binding request; the mapped address, or raise TimeoutError/ValueError."""
    txid = os.urandom(12)
    request = encode_binding_request(txid)
    return _udp_exchange(host, port, request, lambda d: parse_binding_response(txid, d),
                         lambda d: d[8:20] == txid, 2048, timeout, attempts)


STUN_HEADER = 20
STUN_MAX_RESPONSE = 2048  # a Binding response is ~40 bytes; more is not an answer to ours
TURN_ALPN = "stun.turn"  # RFC 7443: what TURN-over-TLS clients offer


def tls_context(*, verify: bool = True, ca_file: str = "") -> ssl.SSLContext:
    """A client context: the system's CAs (or only ``ca_file``), host names checked."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _tls_connect(host: str, port: int, server_name: str, context: ssl.SSLContext,
                 timeout: float, alpn: list[str] | None = None) -> ssl.SSLSocket:
    """A TLS connection to ``host:port`` asking for ``server_name`` (SNI), whose certificate
    must be valid for that name. Raises OSError (ssl.SSLError included)."""
    if alpn:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise


def _read_exactly(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def stun_binding_tls(host: str, port: int, server_name: str, *, context: ssl.SSLContext,
                     timeout: float = 3.0) -> tuple[str, int] | None:
    """A STUN Binding over TLS to ``host:port`` with SNI ``server_name`` (TURN over TLS, as
    a ``turns:`` client): the mapped address the server saw. Raises OSError (TLS, refused,
    closed, timeout) or ValueError (an answer that is not our Binding response)."""
    txid = os.urandom(12)
    with _tls_connect(host, port, server_name, context, timeout, [TURN_ALPN]) as tls:
        tls.sendall(encode_binding_request(txid))
        header = _read_exactly(tls, STUN_HEADER)
        length = struct.unpack("!H", header[2:4])[0]
        if STUN_HEADER + length > STUN_MAX_RESPONSE:
            raise ValueError(f"a {length}-byte STUN message is not a Binding response")
        return parse_binding_response(txid, header + _read_exactly(tls, length))


@dataclass(frozen=True)
class HttpsAnswer:
    status: int
    body: bytes


def https_get(host: str, port: int, server_name: str, path: str, *,
              context: ssl.SSLContext, timeout: float = 3.0) -> HttpsAnswer:
    """GET ``https://<server_name><path>`` from ``host:port`` (SNI and Host ``server_name``):
    a server behind an SNI router checked at one address. Raises OSError when unreachable
    or the answer is not HTTP."""
    import http.client

    with _tls_connect(host, port, server_name, context, timeout, ["http/1.1"]) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nAccept: */*\r\n"
                    f"Connection: close\r\n\r\n".encode("ascii"))
        response = http.client.HTTPResponse(tls)
        try:
            response.begin()
            return HttpsAnswer(response.status, response.read(65536))
        except http.client.HTTPException as exc:
            raise OSError(f"not an HTTP answer ({type(exc).__name__})") from None
        finally:
            response.close()

# ---- TCP: does a port answer from here? ---------------------------------------------------


def tcp_answers(host: str, port: int, timeout: float = 3.0) -> bool:
    """A TCP connection to ``host:port`` completes within ``timeout`` (refused, dropped by a
    firewall or unreachable: False)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False

# ---- HTTPS /health --------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    status: int
    version: str
    body_status: str


def get_health(url: str, *, verify_tls: bool = True, ca_file: str = "",
               timeout: float = 10.0) -> Health:
    """GET the health URL; raises OSError (incl. TLS/HTTP-level failures) when unreachable."""
    ctx = tls_context(verify=verify_tls, ca_file=ca_file)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx))
    if not url.startswith(("http://", "https://")):
        raise OSError(f"not an http(s) URL: {url}")
    req = urllib.request.Request(url, headers={"accept": "application/json"})  # noqa: S310
    try:
        with opener.open(req, timeout=timeout) as resp:
            code, raw = int(resp.status), resp.read(65536)
    except urllib.error.HTTPError as exc:
        code, raw = int(exc.code), exc.read(65536)
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return Health(code, str(body.get("version", "")), str(body.get("status", "")))
