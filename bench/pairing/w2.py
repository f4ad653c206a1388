"""W2: idle density, the relay's RSS per idle client socket at 10,000 sockets.

Opens the sockets in batches (distinct X-Forwarded-For addresses), each sending ``connect``
to a registered instance at once (a live session, what the contract's "connected client
sockets" are), waits for the service to settle, reads VmRSS of the service process before
and after.

Only connected sockets can be idle: the relay closes a socket that has not identified
(``register``/``connect``) within 30 s (``PairingLimits.identify_timeout``), so a variant of
sockets only opened would measure sockets being closed; earlier records had one
(``kb_per_open_socket``). A connected player is closed after 5 min without traffic, far
beyond a run; the instance is kept alive with mydia's pings.

Needs ``ulimit -n`` above the socket count (the load generator holds every socket).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from typing import Any

import uvloop
import websockets

from bench import _procs
from bench._common import Run, parse, parser, rss_kb, summary
from bench.pairing._clients import gather_limited, keepalive, open_ws, register

ID = "W2"
QUICK = {"sockets": 100}


async def settle(pid: int) -> int:
    await asyncio.sleep(2.0)
    return rss_kb(pid)


async def connected(ws_base: str, **kw: Any) -> websockets.ClientConnection:
    """A player's socket connected to the instance (the ``connected`` answer read)."""
    ws = await open_ws(ws_base + "/relay/client/websocket", **kw)
    await ws.send(json.dumps({"type": "connect", "instance_id": "w2-instance"}))
    reply = json.loads(await ws.recv())
    assert reply["type"] == "connected", reply
    return ws


async def variant(n: int) -> dict[str, Any]:
    with _procs.relay() as relay:
        ws_base = relay.url.replace("http://", "ws://")
        inst = await register(ws_base, "w2-instance")
        drainer = asyncio.create_task(_drain(inst))
        pinger = asyncio.create_task(keepalive([inst]))
        # warm-up: a few sessions through every code path, then the baseline
        warm = await gather_limited([connected(ws_base) for _ in range(50)], 50)
        base = await settle(relay.pid)
        socks = await gather_limited([connected(ws_base, ping_interval=None)
                                      for _ in range(n)], 200)
        gc.collect()
        after = await settle(relay.pid)
        per = (after - base) / n
        drainer.cancel()
        pinger.cancel()
        for i in range(0, len(socks), 500):
            await asyncio.gather(*(s.close() for s in socks[i:i + 500]), return_exceptions=True)
        await asyncio.gather(*(w.close() for w in warm), inst.close(), return_exceptions=True)
        return {"sockets": n, "connected_sessions": True, "rss_before_kb": base,
                "rss_after_kb": after, "kb_per_socket": round(per, 2)}


async def _drain(ws: websockets.ClientConnection) -> None:
    async for _ in ws:
        pass


async def measure(n: int) -> list[dict[str, Any]]:
    return [await variant(n)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("w2", __doc__)
    p.add_argument("--sockets", type=int, default=10_000)
    return parse(p, argv, QUICK)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = Run(ID, argv, title=summary(__doc__), reference="none (absolute figure)",
              quick=args.quick, sockets=args.sockets)
    rows = uvloop.run(measure(args.sockets))
    run.detail("variants", rows)
    for r in rows:
        run.figure("kb_per_connected_socket", r["kb_per_socket"], "KB",
                   f"{r['sockets']:,} idle sockets, service {r['rss_before_kb'] / 1024:.0f} -> "
                   f"{r['rss_after_kb'] / 1024:.0f} MB", target="<= 40", headline=True)
    run.write()
    return 0
