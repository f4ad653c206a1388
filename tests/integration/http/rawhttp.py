"""A raw HTTP/1.1 client for the listener's tests: bytes out, responses parsed by hand (a
client library would normalise exactly what these tests look at), and the paths they use."""

from __future__ import annotations

import itertools
import re
import socket
from dataclasses import dataclass

WARM = "/tmdb/tv/shows/1399"
WARM2 = "/tmdb/tv/search?query=lost&page=1"
_cold = itertools.count(1000)


def cold_path() -> str:
    return f"/tmdb/movies/{next(_cold)}"


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in wire order
    body: bytes

    def get(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        assert len(values) <= 1, (name, values)
        return values[0] if values else None


def parse_head(raw: bytes) -> tuple[int, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    m = re.fullmatch(r"HTTP/1\.1 (\d{3}) .*", lines[0])
    assert m is not None, lines[0]
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(": ")
        assert sep and name == name.lower() and name.strip() == name, line
        headers.append((name, value))
    return int(m.group(1)), headers


class Conn:
    """A raw HTTP/1.1 client connection: bytes out, responses parsed by hand."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise EOFError(self.buf[:200])
        self.buf += chunk

    def response(self, head: bool = False) -> Resp:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, headers = parse_head(raw)
        assert not any(n == "transfer-encoding" for n, _ in headers)
        length = dict(headers).get("content-length")
        n = 0 if head or status in (204, 304) or length is None else int(length)
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return Resp(status, headers, body)

    def closed_by_server(self) -> bool:
        """True when the server closed the connection (after any buffered bytes)."""
        if self.buf:
            return False
        return self.sock.recv(1) == b""


def req(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
