"""Bodies are capped while they stream: a 64 MiB body, announced or chunked, is answered 413
after at most the route's limit was read, and the process does not grow by the body."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.tools import ServiceProcess

MIB = 1024 * 1024


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def post_streaming(port: int, path: str, total: int, *, chunked: bool) -> tuple[int, bytes]:
    """POST ``total`` bytes of JSON-looking garbage; stop sending once the server answers."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    head += "transfer-encoding: chunked\r\n\r\n" if chunked else f"content-length: {total}\r\n\r\n"
    block = b"[" + b"1," * (MIB // 2 - 1) + b"1"  # 1 MiB
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode())
        sent = 0
        s.setblocking(False)
        answer = b""
        while sent < total and b"\r\n\r\n" not in answer:
            chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
            try:
                s.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            sent += len(block)
            try:
                answer += s.recv(65536)
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
        s.setblocking(True)
        s.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                data = s.recv(65536)
                if not data:
                    break
                answer += data
            head_end = answer.index(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in answer[:head_end].split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(answer) < head_end + 4 + length:
                answer += s.recv(65536)
        except (ConnectionResetError, ValueError, StopIteration):
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_64_mib_body_gets_413_without_growing_the_process(service: ServiceProcess,
                                                          chunked: bool) -> None:
    before = rss_kb(service.proc.pid)
    status, body = post_streaming(service.port, "/relay/instances", 64 * MIB, chunked=chunked)
    assert status == 413
    assert json.loads(body)["error"] == "payload_too_large"
    assert rss_kb(service.proc.pid) - before < 32 * 1024
    # the service still answers
    status, _ = post_streaming(service.port, "/relay/claim/ABCD2345", 0, chunked=False)
    assert status in (400, 429)
