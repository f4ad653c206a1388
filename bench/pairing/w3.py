"""W3: pairing latency, 1,000 claim -> redeem -> connect -> both sides notified.

Each pairing: the instance sends ``create_claim`` on its socket (``claim_created``), the player
redeems the code (``POST /relay/claim/{code}``) then sends ``connect`` with the code on an
open client socket; done when the player has ``connected`` and the instance ``connection``.
Figures: p50/p99 from redeem to both notified (target p99 < 50 ms) and of the whole flow,
sequentially and with 20 pairings in flight, each player from its own address.

The relay allows an instance 10 claims a minute, as it should: a pairing is a person typing a
code. So the run registers enough instances that none makes more than that many claims in the
whole run (205 for the 2,050 pairings of a full run), takes them in turn, and keeps them alive
with mydia's pings; nothing here is rate limited.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp
import uvloop
import websockets

from bench import _procs
from bench._common import Run, parse, parser, percentile, summary
from bench.pairing._clients import fresh_ip, keepalive, open_ws, register

ID = "W3"
QUICK = {"pairings": 20}

# the contract's claims per instance and minute (README, pairing limits); a run that trips it
# fails on the relay's error frame rather than measuring refusals
CLAIMS_PER_INSTANCE = 10


class Instance:
    """One instance socket; a reader task dispatches its replies to waiting futures."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.claims: dict[str, asyncio.Future[str]] = {}
        self.sessions: dict[str, asyncio.Future[float]] = {}
        self.reader = asyncio.create_task(self._read())
        self.lock = asyncio.Lock()

    async def _read(self) -> None:
        async for raw in self.ws:
            now = time.perf_counter()
            msg = json.loads(raw)
            if msg["type"] == "claim_created":
                self.claims.pop(msg["request_id"]).set_result(msg["code"])
            elif msg["type"] == "error":  # a limit tripped: fail the run, never hang
                for waiting in self.claims.values():
                    waiting.set_exception(RuntimeError(f"the relay refused a claim: {msg}"))
                self.claims.clear()
            elif msg["type"] == "connection":
                fut = self.sessions.setdefault(msg["session_id"],
                                               asyncio.get_running_loop().create_future())
                if not fut.done():
                    fut.set_result(now)

    async def claim(self, request_id: str) -> str:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.claims[request_id] = fut
        await self.ws.send(json.dumps({"type": "create_claim", "user_id": "bench",
                                       "ttl_seconds": 300, "request_id": request_id}))
        return await fut

    def session(self, sid: str) -> asyncio.Future[float]:
        return self.sessions.setdefault(sid, asyncio.get_running_loop().create_future())


async def pairing(http: aiohttp.ClientSession, url: str, inst: Instance, i: int
                  ) -> tuple[float, float]:
    ws_base = url.replace("http://", "ws://")
    ip = fresh_ip()
    player = await open_ws(ws_base + "/relay/client/websocket")  # the app's socket is open
    t_claim = time.perf_counter()
    code = await inst.claim(str(i))
    t_redeem = time.perf_counter()
    async with http.post(f"{url}/relay/claim/{code}", headers={"x-forwarded-for": ip}) as r:
        body = await r.json()
        assert r.status == 200, body
    await player.send(json.dumps({"type": "connect", "claim_code": code}))
    connected = json.loads(await player.recv())
    t_client = time.perf_counter()
    assert connected["type"] == "connected", connected
    t_instance = await inst.session(connected["session_id"])
    done = max(t_client, t_instance)
    await player.close()
    return (done - t_redeem) * 1000, (done - t_claim) * 1000


class Pool:
    """The instances, each handed out for at most ``CLAIMS_PER_INSTANCE`` pairings."""

    def __init__(self, insts: list[Instance]) -> None:
        self.insts = insts
        self.used = 0

    def take(self) -> Instance:
        inst = self.insts[self.used // CLAIMS_PER_INSTANCE]
        self.used += 1
        return inst


def instances_for(n: int) -> int:
    """Instances a run of ``n`` pairings per phase needs (warm-up and two phases)."""
    return -(-(min(n, 50) + 2 * n) // CLAIMS_PER_INSTANCE)


async def phase(url: str, pool: Pool, n: int, concurrency: int,
                offset: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as http:
        async def one(i: int) -> tuple[float, float]:
            async with sem:
                return await pairing(http, url, pool.take(), offset + i)

        t0 = time.perf_counter()
        rows = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    redeem = [r[0] for r in rows]
    full = [r[1] for r in rows]
    return {"pairings": n, "concurrency": concurrency, "wall_s": round(wall, 2),
            "redeem_to_notified_p50_ms": round(percentile(redeem, 50), 2),
            "redeem_to_notified_p99_ms": round(percentile(redeem, 99), 2),
            "claim_to_notified_p50_ms": round(percentile(full, 50), 2),
            "claim_to_notified_p99_ms": round(percentile(full, 99), 2)}


async def measure(n: int) -> list[dict[str, Any]]:
    # the per-IP redeem limit is keyed by X-Forwarded-For (loopback is a trusted proxy)
    with _procs.relay() as relay:
        url = relay.url
        ws_base = url.replace("http://", "ws://")
        insts = [Instance(await register(ws_base, f"w3-{i}")) for i in range(instances_for(n))]
        pinger = asyncio.create_task(keepalive([inst.ws for inst in insts]))
        pool = Pool(insts)
        await phase(url, pool, min(n, 50), 1, 10**6)  # warm-up
        results = [await phase(url, pool, n, 1, 0), await phase(url, pool, n, 20, n)]
        pinger.cancel()
        for inst in insts:
            inst.reader.cancel()
            await inst.ws.close()
        return results


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("w3", __doc__)
    p.add_argument("--pairings", type=int, default=1000)
    return parse(p, argv, QUICK)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = Run(ID, argv, title=summary(__doc__), reference="none (absolute figures)",
              quick=args.quick, pairings=args.pairings,
              instances=instances_for(args.pairings),
              claims_per_instance=CLAIMS_PER_INSTANCE)
    sequential, concurrent = uvloop.run(measure(args.pairings))
    run.detail("phases", [sequential, concurrent])
    run.figure("redeem_to_notified_p99", sequential["redeem_to_notified_p99_ms"], "ms",
               "one pairing at a time", target="< 50", headline=True)
    run.figure("redeem_to_notified_p50", sequential["redeem_to_notified_p50_ms"], "ms",
               "one pairing at a time")
    run.figure("claim_to_notified_p99", sequential["claim_to_notified_p99_ms"], "ms",
               "one pairing at a time")
    run.figure("redeem_to_notified_p99_20_in_flight",
               concurrent["redeem_to_notified_p99_ms"], "ms", "20 pairings in flight")
    run.write()
    return 0
