"""Nothing of a payload in any log line (issue 13, item 9), uvicorn's and websockets' loggers
included: the service, run as users run it, gets invalid-UTF-8 WebSocket frames, relayed
frames, oversized and malformed requests that all carry a marker, and its log neither
contains the marker (nor a byte of the frames) nor grows by more than a few lines' worth."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.integration.pairing.helpers import fresh_ip, new_key
from tests.tools import ServiceProcess, start_service

FRAMES = 20
FRAME_BYTES = 60 * 1024


def masked_text(data: bytes) -> bytes:
    key = secrets.token_bytes(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return struct.pack("!BBQ", 0x81, 0x80 | 127, len(data)) + key + masked


def upgrade(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"X-Forwarded-For: {fresh_ip()}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    return s


def close_code(s: socket.socket) -> int | None:
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
        while len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, at = struct.unpack("!H", buf[2:4])[0], 4
            if len(buf) < at + n:
                break
            if buf[0] & 0x0F == 8:
                return int(struct.unpack("!H", buf[at:at + 2])[0])
            buf = buf[at + n:]


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


async def relayed(port: int, marker: str) -> None:
    """A paired instance and player exchange frames carrying the marker."""
    url = f"ws://127.0.0.1:{port}"
    headers = {"x-forwarded-for": fresh_ip()}
    async with websockets.connect(f"{url}/relay/tunnel/websocket",
                                  additional_headers=headers) as inst, \
            websockets.connect(f"{url}/relay/client/websocket",
                               additional_headers={"x-forwarded-for": fresh_ip()}) as player:
        name = "logs-" + secrets.token_hex(4)
        await inst.send(json.dumps({"type": "register", "instance_id": name,
                                    "public_key": new_key()}))
        assert json.loads(await inst.recv())["type"] == "registered"
        await player.send(json.dumps({"type": "connect", "instance_id": name}))
        assert json.loads(await player.recv())["type"] == "connected"
        sid = json.loads(await inst.recv())["session_id"]
        for _ in range(5):
            await player.send(json.dumps({"type": "message", "payload": marker}))
            await inst.send(json.dumps({"type": "relay_message", "session_id": sid,
                                        "payload": marker}))
        got = 0
        while got < 5:
            if json.loads(await asyncio.wait_for(inst.recv(), 5)).get("payload") == marker:
                got += 1


@pytest.fixture(params=["info", "debug"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceProcess]:
    svc = start_service(tmp_path, {"TURN_ENABLED": "false", "LOG_LEVEL": request.param})
    yield svc
    svc.stop()


def test_no_payload_reaches_the_log(service: ServiceProcess) -> None:
    marker = "Pm" + secrets.token_hex(6)  # base64-safe, appears nowhere by chance
    mark = marker.encode()
    asyncio.run(relayed(service.port, marker))
    before = len(service.log())
    for i in range(FRAMES):
        path = ("/relay/client/websocket", "/relay/tunnel/websocket")[i % 2]
        s = upgrade(service.port, f"{path}?q={marker}")  # uvicorn logged path, query, peer
        try:
            payload = (mark * (FRAME_BYTES // len(mark)))[:FRAME_BYTES - 2] + b"\xff\xfe"
            s.sendall(masked_text(payload))
            assert close_code(s) == 1007
        finally:
            s.close()
    big = b"x-data: " + mark * (FRAME_BYTES // len(mark))
    bad_requests = [
        b"GET /health HTTP/1.1\r\nhost: t\r\n" + big + b"\r\n\r\n",  # over the header cap
        b"GET /" + mark * 500 + b" HTTP/1.1\r\nhost: t\r\nx: a\x01" + mark + b"\r\n\r\n",
        b"POST /relay/instances HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
        b"zz" + mark * 100 + b"\r\n",
        mark * 5000 + b"\r\n\r\n",
        b"GET /tmdb/tv/shows/1 HTTP/1.1\r\nhost: t\r\nx-request-id: " + mark
        + b"\x00\r\n\r\n",
    ]
    for i in range(FRAMES):
        answer = exchange(service.port, bad_requests[i % len(bad_requests)])
        assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 ")), answer[:100]
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")  # all of the above is logged
        assert b" 200 " in s.recv(4096)
    log = service.log()
    assert marker not in log, [line for line in log.splitlines() if marker in line][:3]
    assert "127.0.0.1:" not in log.replace(f"127.0.0.1:{service.port}", ""), [
        line for line in log.splitlines() if "127.0.0.1:" in line][:3]  # no client address
    grown = len(log) - before
    assert grown < 40 * 1024, log[before:][-3000:]  # was 6 MB for the frames alone
