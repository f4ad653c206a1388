"""The synchronous relay lane (``http/websocket.py``): relayed frames skip the ASGI queue and
are written at once when nothing is queued. These drive the real process (which serves with
that lane) and, where noted, the plain ``websockets-sansio`` protocol (the ASGI fallback)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
from pathlib import Path

import pytest
import websockets

from tests.integration.pairing.helpers import (
    Relay,
    fresh_ip,
    new_key,
    recv,
    recv_type,
    send,
)
from tests.relay_server import serve_relay


async def _pair(relay: Relay, name: str, compression: str | None = "deflate"
                ) -> tuple[websockets.ClientConnection, websockets.ClientConnection, str]:
    """A registered instance and a connected player. With ``compression=None`` frames are
    plain (split by the relay's own reader); with permessage-deflate, websockets inflates
    them and hands them to the same lane."""
    inst = await relay.instance(compression=compression)
    await send(inst, {"type": "register", "instance_id": name, "public_key": new_key()})
    assert (await recv(inst))["type"] == "registered"
    player = await relay.client(compression=compression)
    await send(player, {"type": "connect", "instance_id": name})
    assert (await recv(player))["type"] == "connected"
    sid = (await recv(inst))["session_id"]
    return inst, player, sid


def _payload(i: int) -> str:
    return base64.b64encode(f"{i:06d}".encode() + b"z" * 600).decode()


async def order_kept_across_lanes(relay: Relay, compression: str | None = None) -> None:
    """Frames that must await (instance ``ping`` writes the database; unknown types) are
    interleaved with relayed frames sent back to back: every relayed frame arrives, in
    order, both ways, and the awaited ones are answered."""
    inst, player, sid = await _pair(relay, f"order-{compression}", compression)
    n = 300
    for i in range(n):
        await inst.send(json.dumps({"type": "relay_message", "session_id": sid,
                                    "payload": _payload(i)}))
        if i % 25 == 0:
            await send(inst, {"type": "ping"})
            await send(player, {"type": "no_such_type"})
        await player.send(json.dumps({"type": "message", "payload": _payload(i)}))
    got_player = [json.loads(await player.recv(10)) for _ in range(n)]
    assert [m["payload"] for m in got_player] == [_payload(i) for i in range(n)]
    got_inst: list[str] = []
    pongs = 0
    while len(got_inst) < n:
        msg = json.loads(await inst.recv(10))
        if msg["type"] == "pong":
            pongs += 1
            continue
        assert msg["type"] == "relay_message" and msg["session_id"] == sid
        got_inst.append(msg["payload"])
    assert got_inst == [_payload(i) for i in range(n)]
    while pongs < n // 25:
        assert (await recv(inst))["type"] == "pong"
        pongs += 1
    await player.close()
    await inst.close()


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_order_kept_across_lanes(relay: Relay, compression: str | None) -> None:
    await order_kept_across_lanes(relay, compression)


async def test_order_kept_on_plain_asgi(tmp_path: Path) -> None:
    async with serve_relay(tmp_path, ws="websockets-sansio") as url:
        await order_kept_across_lanes(Relay(url))


async def test_garbage_between_relayed_frames(relay: Relay) -> None:
    """Malformed frames on paired sockets are dropped; the session keeps relaying."""
    inst, player, sid = await _pair(relay, "garbage")
    bad = ["", "{", "[]", "null", '{"type":5}', '{"type":"message","payload":"a\\"b"}',
           '{"type":"message","payload":5}', '{"type":"relay_message","session_id":5}',
           '{"type":"relay_message","session_id":[1],"payload":"aGk="}',
           '{"type":"relay_message","session_id":"nope","payload":"aGk="}']
    for frame in bad:
        await player.send(frame)
        await inst.send(frame)
    await send(player, {"type": "message", "payload": "aGk="})
    assert (await recv_type(inst, "relay_message"))["payload"] == "aGk="
    await send(inst, {"type": "relay_message", "session_id": sid, "payload": "b2s="})
    assert (await recv_type(player, "message"))["payload"] == "b2s="
    # the unknown session got its error, nothing reached a foreign session
    await player.close()
    await inst.close()


def _masked(first: int, data: bytes) -> bytes:
    """A client frame: ``first`` is the FIN/RSV/opcode byte."""
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    if len(data) < 126:
        return struct.pack("!BB", first, 0x80 | len(data)) + key + masked
    return struct.pack("!BBQ", first, 0x80 | 127, len(data)) + key + masked


def _masked_text(data: bytes) -> bytes:
    return _masked(0x81, data)


class _Frames:
    """Server frames read from a raw socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    async def next(self) -> tuple[int, bytes]:
        while True:
            if len(self.buf) >= 2:
                n, at = self.buf[1] & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, at = struct.unpack("!H", self.buf[2:4])[0], 4
                if len(self.buf) >= at + n:
                    frame = (self.buf[0] & 0x0F, self.buf[at:at + n])
                    self.buf = self.buf[at + n:]
                    return frame
            chunk = await asyncio.to_thread(self.sock.recv, 65536)
            if not chunk:
                raise ConnectionError("closed without a close frame")
            self.buf += chunk


async def _upgrade(url: str, path: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\nX-Forwarded-For: {fresh_ip()}\r\n\r\n"
                  ).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.to_thread(sock.recv, 4096)
    assert b" 101 " in head.split(b"\r\n", 1)[0]
    return sock


async def _close_code(sock: socket.socket) -> int | None:
    """Read until the server's close frame; its status code."""
    buf = b""
    while True:
        chunk = await asyncio.to_thread(sock.recv, 65536)
        if not chunk:
            return None
        buf += chunk
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            at = 2 if n < 126 else 4
            if n == 126 and len(buf) >= 4:
                n = struct.unpack("!H", buf[2:4])[0]
            if len(buf) < at + n:
                break
            if buf[0] & 0x0F == 8:
                return int(struct.unpack("!H", buf[at:at + 2])[0])
            buf = buf[at + n:]


async def test_control_fragmented_and_oversized_frames_on_the_lane(relay: Relay) -> None:
    """Frames the lane does not split itself go to websockets whole or for good: a ping
    gets its pong, a fragmented message still arrives, then an oversized frame → 1009."""
    sock = await _upgrade(relay.url, "/relay/client/websocket")
    frames = _Frames(sock)
    try:
        ping = b'{"type":"ping"}'
        sock.sendall(_masked_text(ping))  # a plain frame first: the lane's own reader
        assert await frames.next() == (1, b'{"type":"pong"}')
        sock.sendall(_masked(0x89, b"are you there") + _masked_text(ping))
        assert await frames.next() == (0xA, b"are you there")
        assert await frames.next() == (1, b'{"type":"pong"}')
        sock.sendall(_masked(0x01, ping[:5]) + _masked(0x80, ping[5:]))  # two fragments
        assert await frames.next() == (1, b'{"type":"pong"}')
        sock.sendall(_masked(0x81, b" " * (64 * 1024 + 1)))
        opcode, data = await frames.next()
        assert opcode == 8 and struct.unpack("!H", data[:2])[0] == 1009
    finally:
        sock.close()
    # and straight from the lane's own reader (no fragment handed the stream back first)
    sock = await _upgrade(relay.url, "/relay/client/websocket")
    frames = _Frames(sock)
    try:
        sock.sendall(_masked_text(ping))
        assert await frames.next() == (1, b'{"type":"pong"}')
        sock.sendall(_masked_text(ping) + _masked(0x81, b" " * (64 * 1024 + 1)))
        assert await frames.next() == (1, b'{"type":"pong"}')
        opcode, data = await frames.next()
        assert opcode == 8 and struct.unpack("!H", data[:2])[0] == 1009
    finally:
        sock.close()


@pytest.mark.parametrize("path", ["/relay/client/websocket", "/relay/tunnel/websocket"])
async def test_invalid_utf8_text_frame_closes_1007(relay: Relay, path: str) -> None:
    """A text frame that is not UTF-8 is not handed to the lane: the socket closes 1007."""
    sock = await _upgrade(relay.url, path)
    try:
        sock.sendall(_masked_text(b'{"type":"ping"}'))
        sock.sendall(_masked_text(b'{"type":"message","payload":"\xff\xfe"}'))
        assert await _close_code(sock) == 1007
    finally:
        sock.close()


async def test_unmasked_frame_closes_1002(relay: Relay) -> None:
    """Protocol errors stay websockets' business: a client frame without a mask → 1002."""
    sock = await _upgrade(relay.url, "/relay/client/websocket")
    try:
        sock.sendall(b"\x81\x02hi")
        assert await _close_code(sock) == 1002
    finally:
        sock.close()



@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_paired_sockets_take_the_direct_lane(relay: Relay, compression: str | None
                                                   ) -> None:
    """The product's sockets really use the lane (``/stats``): if an upgrade of uvicorn or
    websockets made it fall back to plain ASGI, this says so."""
    inst, player, sid = await _pair(relay, "lane", compression)
    await send(player, {"type": "message", "payload": "aGk="})
    await recv_type(inst, "relay_message")
    await send(inst, {"type": "relay_message", "session_id": sid, "payload": "aGk="})
    await recv_type(player, "message")
    status, body, _ = await relay.request("GET", "/stats")
    assert status == 200
    assert body["pairing"]["sockets_direct_lane"] >= 2, body["pairing"]
    await player.close()
    await inst.close()
