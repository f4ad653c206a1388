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
_REQUEST_LINE = re.compile(rb"(%s+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])" % _TCHAR)
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


def _request_line(line: bytes | bytearray) -> tuple[bytes, bytes, bytes]:
    m = _REQUEST_LINE.fullmatch(line)
    if m is None:
        raise HeadError(400, "Malformed request line")
    method, target, major, minor = m.groups()
    if major != b"1" or minor not in (b"0", b"1"):
        raise HeadError(505, "Only HTTP/1.0 and HTTP/1.1 are supported")
    if target[0] != 0x2F and not (  # "/": origin form
            _ABSOLUTE.fullmatch(target) or (target == b"*" and method == b"OPTIONS")):
        raise HeadError(400, "Malformed request target")
    return bytes(method), bytes(target), b"1.1" if minor == b"1" else b"1.0"


def check_partial(buf: bytes | bytearray, start: int) -> None:
    """:class:`HeadError` as soon as an incomplete head starting at ``start`` cannot become a
    valid one (a TLS handshake, binary noise, a bad request line), rather than at its end."""
    line_end = buf.find(b"\r\n", start)
    if line_end >= 0:
        _request_line(buf[start:line_end])
        return
    method = _METHOD_SO_FAR.match(buf, start)
    end = method.end() if method is not None else start
    if end < len(buf) and (buf[end] != 0x20 or end == start):
        raise HeadError(400, "Malformed request line")


def parse_head(raw: bytes) -> RequestHead:
    """The head ``raw`` (request line and field lines, without the final empty line), or
    :class:`HeadError`."""
    lines = raw.split(b"\r\n")
    method, target, version = _request_line(lines[0])
    if len(lines) > MAX_HEADERS + 1:
        raise HeadError(431, "Too many header fields")
    headers: list[tuple[bytes, bytes]] = []
    length = 0
    seen: set[bytes] = set()
    connection = upgrade = None
    expect = False
    for line in lines[1:]:
        f = _FIELD.fullmatch(line)
        if f is None:
            raise HeadError(400, "Malformed header field")
        name = f[1].lower()
        value = f[2]
        headers.append((name, value))
        if name in _SINGLE:
            if name in seen:
                raise HeadError(400, "Repeated header field")
            seen.add(name)
            value = value.rstrip(b" \t")
            if name == b"content-length":
                if _DIGITS.fullmatch(value) is None:
                    raise HeadError(400, "Malformed Content-Length")
                length = int(value)
            elif name == b"transfer-encoding":
                if version != b"1.1":
                    raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")
                if value.lower() != b"chunked":
                    raise HeadError(501, "Unsupported transfer coding")
            elif name == b"connection":
                connection = [t.strip().lower() for t in value.split(b",")]
            elif name == b"upgrade":
                upgrade = value.lower()
            elif name == b"expect":
                expect = True
    if b"transfer-encoding" in seen:
        if b"content-length" in seen:
            raise HeadError(400, "Both Content-Length and Transfer-Encoding")
        length = CHUNKED
    if version == b"1.1" and b"host" not in seen:
        raise HeadError(400, "Missing Host header")
    if method not in METHODS:
        raise HeadError(501, "Method not implemented")
    keep_alive = version == b"1.1" and (connection is None or b"close" not in connection)
    if upgrade is not None and connection is not None and b"upgrade" in connection:
        if version != b"1.1" or length:
            raise HeadError(400, "Malformed upgrade request")
    else:
        upgrade = None
    return RequestHead(method, target, version, headers, keep_alive, length, upgrade, expect)


# fields a request may carry once: framing (a second one could be read two ways), and the ones
# whose meaning uvicorn and its parser take from different occurrences
_SINGLE = frozenset((b"content-length", b"transfer-encoding", b"connection", b"upgrade",
                     b"host", b"expect"))


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

    def take(self, data: bytes | bytearray) -> int:
        if not self.chunked:
            n = min(self.left, len(data))
            self.left -= n
            self.done = self.left == 0
            return n
        pos, size = 0, len(data)
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
        return pos


_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode())
                 for s in http.HTTPStatus}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <phrase>\\r\\n``, as uvicorn writes it."""
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


class _Date:
    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def __call__(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.line = b"date: %s\r\n" % email.utils.formatdate(now, usegmt=True).encode()
            self.second = second
        return self.line


date_line = _Date()
"""``date: <IMF-fixdate>\\r\\n`` for now (rendered once per second)."""
