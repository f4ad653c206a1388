"""HTTP/1.1 on the wire, sans-I/O: request heads parsed strictly, request bodies delimited, and
the status line and date of the answers the listener writes itself.

The public listener (:mod:`.connection`) reads every request head here before uvicorn sees it
and hands uvicorn whole requests only (the head, then the body bytes :class:`Body` delimits).
A head this module does not accept is answered by the listener (400, 431, 501, 505) and the
connection closed, so uvicorn's parser never gets a request whose framing could be read two
ways: request smuggling needs two parsers that disagree, and for the grammar accepted here
(RFC 9112 without its leniencies: CRLF only, no obs-fold, one Content-Length of digits or
``Transfer-Encoding: chunked`` alone, never both) there is nothing to disagree about.
"""

from __future__ import annotations

import email.utils
import http
import re
import time
from dataclasses import dataclass

CHUNKED = -1
""":attr:`RequestHead.length` of a chunked body."""
MAX_HEADERS = 100
METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH",
                     b"TRACE"))
"""Methods handed to the application (it answers 405 where a route does not take one); any
other well-formed method is answered 501 here (CONNECT included: no tunnels)."""

_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_LINE = re.compile(rb"(%s+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])" % _TCHAR)
# field-name ":" OWS field-value OWS; a value is visible ASCII, obs-text, SP and HTAB. The value
# keeps its trailing OWS, as uvicorn's parser hands it to the app (so both paths see the same)
_FIELD = re.compile(rb"(%s+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)" % _TCHAR)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:;[\x20-\x7e\t]*)?")
_ABSOLUTE = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://[\x21-\x2e\x30-\x7e]+/[\x21-\x7e]*")
_METHOD_SO_FAR = re.compile(rb"%s*" % _TCHAR)


class HeadError(Exception):
    """A request head the listener answers itself; ``status`` and a short ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes  # b"1.1" or b"1.0"
    headers: list[tuple[bytes, bytes]]  # (lower-case name, value as uvicorn gives it), in order
    keep_alive: bool  # uvicorn's rule: HTTP/1.1 without "Connection: close"
    length: int  # Content-Length (0 without one), or CHUNKED
    upgrade: bytes | None  # lower-case Upgrade value of an upgrade request, else None
    expect: bool  # an Expect header (100-continue): the application's business


def head_end(buf: bytes | bytearray, start: int) -> int:
    """Index of the ``\\r\\n\\r\\n`` ending the head that starts at ``start``, or -1."""
    return buf.find(b"\r\n\r\n", start)


def skip_empty_lines(buf: bytes | bytearray) -> int:
    """How many bytes of empty lines (CRLF) precede the request line (RFC 9112 §2.2)."""
    pos = 0
    while buf.startswith(b"\r\n", pos):
        pos += 2
    return pos


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    m = _REQUEST_LINE.fullmatch(line)
    if m is None:
        raise HeadError(400, "Malformed request line")
    method, target, version = m.groups()
    if version != b"1.1" and version != b"1.0":
        raise HeadError(505, "Only HTTP/1.0 and HTTP/1.1 are supported")
    if target[0] != 0x2F and not (  # "/": origin form
            _ABSOLUTE.fullmatch(target) or (target == b"*" and method == b"OPTIONS")):
        raise HeadError(400, "Malformed request target")
    return method, target, version


def check_partial(buf: bytes | bytearray, start: int) -> bool:
    """:class:`HeadError` as soon as an incomplete head starting at ``start`` cannot become a
    valid one (a TLS handshake, binary noise, a bad request line), rather than at its end;
    True once its request line is complete (and valid)."""
    line_end = buf.find(b"\r\n", start)
    if line_end >= 0:
        _request_line(bytes(buf[start:line_end]))
        return True
    method = _METHOD_SO_FAR.match(buf, start)
    end = method.end() if method is not None else start
    if end < len(buf) and (buf[end] != 0x20 or end == start):
        raise HeadError(400, "Malformed request line")
    return False


def parse_head(raw: bytes) -> RequestHead:
    """The head ``raw`` (request line and field lines, without the final empty line), or
    :class:`HeadError`. The ``headers`` of the result may be shared: read them only."""
    line_end = raw.find(b"\r\n")
    if line_end < 0:
        line, fields = raw, b""
    else:
        line, fields = raw[:line_end], raw[line_end:]
    m = _REQUEST_LINE.fullmatch(line)
    if m is None:
        raise HeadError(400, "Malformed request line")
    method, target, version = m.groups()
    if (version != b"1.1" and version != b"1.0") or target[0] != 0x2F:
        method, target, version = _request_line(line)  # not the usual line: all the checks
    parsed = _SECTIONS_SEEN.get(fields)
    if parsed is None:
        parsed = _fields(fields)
    headers, hosts, framing = parsed
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        raise HeadError(400, "Missing or repeated Host header")
    if method not in METHODS:
        raise HeadError(501, "Method not implemented")
    if framing is None:  # the common case: nothing but plain fields
        return RequestHead(method, target, version, headers, version == b"1.1", 0, None, False)
    return _with_framing(method, target, version, headers, framing)


Fields = tuple[list[tuple[bytes, bytes]], int, "dict[bytes, bytes] | None"]
SECTIONS_SEEN_MAX, SECTION_SEEN_MAX_BYTES = 1024, 1024
FIELDS_SEEN_MAX, FIELD_SEEN_MAX_BYTES = 4096, 256
_SECTIONS_SEEN: dict[bytes, Fields] = {}
_FIELDS_SEEN: dict[bytes, tuple[bytes, bytes]] = {}
"""Field sections and field lines parsed before: clients send the same lines (Host,
User-Agent, Accept...), often the same section, with every request. Pure and bounded: short
ones only, cleared when full (at most about 1 MiB + 1 MiB of keys, whatever clients send)."""


def _fields(section: bytes) -> Fields:
    """(fields as (lower-case name, value), how many Host fields, the _FRAMING fields with
    their values OWS-stripped or None) of ``section``: ``\\r\\n``-led field lines."""
    lines = section.split(b"\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise HeadError(431, "Too many header fields")
    headers: list[tuple[bytes, bytes]] = []
    append = headers.append
    seen = _FIELDS_SEEN
    hosts = 0
    framing: dict[bytes, bytes] | None = None
    for line in lines[1:]:
        pair = seen.get(line)
        if pair is None:
            pair = _field(line)
        append(pair)
        name = pair[0]
        if name == b"host":
            hosts += 1
        elif name in _FRAMING:
            if framing is None:
                framing = {}
            elif name in framing:
                raise HeadError(400, "Repeated header field")
            framing[name] = pair[1].rstrip(b" \t")
    parsed = (headers, hosts, framing)
    if len(section) <= SECTION_SEEN_MAX_BYTES:
        if len(_SECTIONS_SEEN) >= SECTIONS_SEEN_MAX:
            _SECTIONS_SEEN.clear()
        _SECTIONS_SEEN[section] = parsed
    return parsed


def _field(line: bytes) -> tuple[bytes, bytes]:
    f = _FIELD.fullmatch(line)
    if f is None:
        raise HeadError(400, "Malformed header field")
    pair = (f[1].lower(), f[2])
    if len(line) <= FIELD_SEEN_MAX_BYTES:
        if len(_FIELDS_SEEN) >= FIELDS_SEEN_MAX:
            _FIELDS_SEEN.clear()
        _FIELDS_SEEN[line] = pair
    return pair


def _with_framing(method: bytes, target: bytes, version: bytes,
                  headers: list[tuple[bytes, bytes]], framing: dict[bytes, bytes]
                  ) -> RequestHead:
    length = 0
    value = framing.get(b"content-length")
    if value is not None:
        if _DIGITS.fullmatch(value) is None:
            raise HeadError(400, "Malformed Content-Length")
        length = int(value)
    value = framing.get(b"transfer-encoding")
    if value is not None:
        if version != b"1.1":
            raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if value.lower() != b"chunked":
            raise HeadError(501, "Unsupported transfer coding")
        if b"content-length" in framing:
            raise HeadError(400, "Both Content-Length and Transfer-Encoding")
        length = CHUNKED
    value = framing.get(b"connection")
    connection = None if value is None else [t.strip().lower() for t in value.split(b",")]
    keep_alive = version == b"1.1" and (connection is None or b"close" not in connection)
    upgrade = framing.get(b"upgrade")
    if upgrade is not None and connection is not None and b"upgrade" in connection:
        if version != b"1.1" or length:
            raise HeadError(400, "Malformed upgrade request")
        upgrade = upgrade.lower()
    else:
        upgrade = None
    return RequestHead(method, target, version, headers, keep_alive, length, upgrade,
                       b"expect" in framing)


# fields a request may carry once (as Host): framing (a second one could be read two ways), and
# the ones whose meaning uvicorn and its parser take from different occurrences
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection", b"upgrade",
                      b"expect"))


class BodyError(Exception):
    """Chunked framing broken mid-body: the connection cannot be answered, only closed."""


class Body:
    """Delimits one request body in a stream: :meth:`take` says how many of the bytes given
    belong to it, :attr:`done` once it is complete. Chunked bodies are checked strictly (hex
    sizes, CRLF after each chunk's data, well-formed trailer fields, lines of at most
    ``max_line`` bytes): :class:`BodyError` otherwise."""

    __slots__ = ("_line", "_state", "chunked", "done", "left", "max_line")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, length: int, max_line: int) -> None:
        self.chunked = length == CHUNKED
        self.left = 0 if self.chunked else length  # bytes still to come (of this chunk)
        self.done = length == 0
        self.max_line = max_line
        self._state = self._SIZE if self.chunked else self._DATA
        self._line = b""  # a chunk-size, chunk-end or trailer line read so far

    def take(self, data: bytes | bytearray, start: int = 0) -> int:
        """How many bytes of ``data[start:]`` belong to the body."""
        if not self.chunked:
            n = min(self.left, len(data) - start)
            self.left -= n
            self.done = self.left == 0
            return n
        pos, size = start, len(data)
        while pos < size and not self.done:
            state = self._state
            if state == self._DATA:
                n = min(self.left, size - pos)
                pos += n
                self.left -= n
                if self.left == 0:
                    self._state = self._DATA_END
                continue
            end = data.find(b"\n", pos)
            stop = size if end < 0 else end + 1
            self._line += bytes(data[pos:stop])
            pos = stop
            if len(self._line) > self.max_line:
                raise BodyError("line too long")
            if end < 0:
                continue
            line, self._line = self._line, b""
            if not line.endswith(b"\r\n"):
                raise BodyError("bare LF")
            line = line[:-2]
            if state == self._DATA_END:
                if line:
                    raise BodyError("chunk longer than its size")
                self._state = self._SIZE
            elif state == self._SIZE:
                m = _CHUNK_SIZE.fullmatch(line)
                if m is None:
                    raise BodyError("malformed chunk size")
                self.left = int(m[1], 16)
                self._state = self._DATA if self.left else self._TRAILER
            elif line:  # a trailer field
                if _FIELD.fullmatch(line) is None:
                    raise BodyError("malformed trailer field")
            else:
                self.done = True
        return pos - start


STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode())
                for s in http.HTTPStatus}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <phrase>\\r\\n``, as uvicorn writes it."""
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


_date = [-1, b""]  # the second and the line rendered for it


def date_line() -> bytes:
    """``date: <IMF-fixdate>\\r\\n`` for now (rendered once per second)."""
    now = time.time()
    second = int(now)
    if second != _date[0]:
        _date[1] = b"date: %s\r\n" % email.utils.formatdate(now, usegmt=True).encode()
        _date[0] = second
    return _date[1]  # type: ignore[return-value]
