"""The pairing benchmarks' clients (W1-W3): instance and client sockets on the relay, each from
its own X-Forwarded-For address, opened with bounded concurrency."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from typing import Any

import websockets

_n = 0


def fresh_ip() -> str:
    global _n
    _n += 1
    return f"9.{(_n >> 16) & 255}.{(_n >> 8) & 255}.{_n & 255}"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def open_ws(url: str, **kw: Any) -> websockets.ClientConnection:
    return await websockets.connect(url, additional_headers={"x-forwarded-for": fresh_ip()},
                                    max_size=2**20, compression=None, open_timeout=60, **kw)


async def register(ws_base: str, instance_id: str) -> websockets.ClientConnection:
    ws = await open_ws(ws_base + "/relay/tunnel/websocket")
    await ws.send(json.dumps({"type": "register", "instance_id": instance_id,
                              "public_key": new_key(), "direct_urls": []}))
    reply = json.loads(await ws.recv())
    assert reply["type"] == "registered", reply
    return ws


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def keepalive(instances: list[websockets.ClientConnection], every: float = 20.0) -> None:
    """Ping instance sockets as mydia does (the relay closes them after 60 s of silence)."""
    while True:
        await asyncio.sleep(every)
        for ws in instances:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send('{"type":"ping"}')
