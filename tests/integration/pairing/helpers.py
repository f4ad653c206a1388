"""Drive the relay as mydia (instance) and the player (client) do: REST via aiohttp,
sockets via the ``websockets`` client library, each from a client address of the test's
choosing (``X-Forwarded-For`` from trusted loopback)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
from typing import Any

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection

from tests.doubles.clock import ManualClock

_ip_counter = itertools.count(1)


def fresh_ip() -> str:
    """A distinct public client address, in a /24 of its own."""
    n = next(_ip_counter) + os.getpid() % 50 * 1000
    return f"8.{(n >> 8) & 255}.{n & 255}.7"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class Relay:
    def __init__(self, url: str, clock: ManualClock | None = None) -> None:
        self.url = url
        self.ws_url = url.replace("http://", "ws://")
        self._clock = clock

    @property
    def clock(self) -> ManualClock:
        assert self._clock is not None, "this relay runs on the real clock"
        return self._clock

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      data: bytes | None = None, token: str | None = None,
                      ip: str | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {"x-forwarded-for": ip or fresh_ip()}
        if token:
            headers["authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession() as s:
            async with s.request(method, self.url + path, json=json_body, data=data,
                                 headers=headers) as r:
                body = await r.read()
                try:
                    parsed = json.loads(body) if body else {}
                except ValueError:
                    parsed = {"_raw": body.decode(errors="replace")}
                return r.status, parsed, dict(r.headers)

    async def register(self, instance_id: str, key: str, urls: list[str] | None = None,
                       ip: str | None = None) -> str:
        status, body, _ = await self.request(
            "POST", "/relay/instances",
            json_body={"instance_id": instance_id, "public_key": key,
                       "direct_urls": urls or []}, ip=ip)
        assert status == 200, body
        return str(body["token"])

    async def instance(self, ip: str | None = None, **kw: Any) -> ClientConnection:
        return await websockets.connect(
            self.ws_url + "/relay/tunnel/websocket",
            additional_headers={"x-forwarded-for": ip or fresh_ip()}, **kw)

    async def client(self, ip: str | None = None, **kw: Any) -> ClientConnection:
        return await websockets.connect(
            self.ws_url + "/relay/client/websocket",
            additional_headers={"x-forwarded-for": ip or fresh_ip()}, **kw)


async def send(ws: ClientConnection, msg: dict[str, Any]) -> None:
    await ws.send(json.dumps(msg))


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    msg = json.loads(raw)
    assert isinstance(msg, dict)
    return msg


async def recv_type(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """Next message of ``kind`` (pongs and others before it are skipped)."""
    while True:
        msg = await recv(ws, timeout)
        if msg.get("type") == kind:
            return msg


async def closed(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the relay closes the socket; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed:
        return ws.close_code


async def roundtrip(ws: ClientConnection) -> None:
    """ping → pong: everything sent before has been processed by the relay."""
    await send(ws, {"type": "ping"})
    await recv_type(ws, "pong")


def register_frame(instance_id: str, key: str, **extra: Any) -> dict[str, Any]:
    """What mydia (c4efb91) sends right after connecting."""
    return {"type": "register", "instance_id": instance_id, "public_key": key,
            "direct_urls": ["https://192.168.1.10:4443"],
            "protocol_versions": {"relay_protocol": ["1.0"], "encryption_protocol": ["1.0"]},
            **extra}


async def register_ws(relay: Relay, instance_id: str, key: str, ip: str | None = None,
                      **extra: Any) -> ClientConnection:
    ws = await relay.instance(ip=ip)
    await send(ws, register_frame(instance_id, key, **extra))
    msg = await recv(ws)
    assert msg == {"type": "registered", "relay_protocol": "1.0"}, msg
    return ws


async def create_claim(ws: ClientConnection, user: str = "user-1", ttl: int = 300,
                       request_id: str = "r1") -> dict[str, Any]:
    await send(ws, {"type": "create_claim", "user_id": user, "ttl_seconds": ttl,
                    "request_id": request_id})
    return await recv_type(ws, "claim_created")


async def pair_with_code(relay: Relay, code: str, ip: str) -> dict[str, Any]:
    """What the player does with a typed code: REST lookup, then socket connect; the
    ``connected`` answer (the socket is closed afterwards)."""
    status, body, _ = await relay.request("POST", f"/relay/claim/{code}", ip=ip)
    assert status == 200, (status, body)
    player = await relay.client(ip=ip)
    try:
        await send(player, {"type": "connect", "claim_code": code})
        return await recv(player)
    finally:
        await player.close()
