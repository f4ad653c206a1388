"""T3: TURN allocation rate against coturn, 1,000 aioice allocations at concurrency 50.

Each round allocates 1,000 relays with aioice (concurrency 50) on one server, then releases
them; servers alternate, one up at a time. Figures: allocations/s (ratio ours/coturn; at
least 500/s), and whether fds, relay ports and asyncio tasks come back to their baseline
after release (rounds that do not: must be none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aioice.turn

from bench._common import Run, median, open_fds, parse, parser, summary
from bench.turn._servers import REFERENCE, SERVERS, STARTERS, Server, rest_credential

QUICK = {"rounds": 1, "count": 50, "concurrency": 10}


class Closed(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def churn(server: Server, count: int, concurrency: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)
    endpoints: list[tuple[Any, Closed]] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        username, password = rest_credential(f"t3u{i % 100}")
        async with sem:
            try:
                endpoints.append(await aioice.turn.create_turn_endpoint(
                    Closed, ("127.0.0.1", server.port), username, password))
            except Exception:
                failures += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - t0
    during_fds = open_fds(server.pid)
    during = server.stats()
    t1 = time.perf_counter()
    for tr, _ in endpoints:
        tr.close()
    await asyncio.wait_for(asyncio.gather(*(p.closed for _, p in endpoints)), 60)
    release = time.perf_counter() - t1
    return {"allocated": len(endpoints), "failures": failures, "alloc_s": round(elapsed, 3),
            "allocs_per_s": round(len(endpoints) / elapsed, 1), "release_s": round(release, 3),
            "fds_during": during_fds, "stats_during": {k: during.get(k) for k in
                                                       ("allocations", "relay_ports_free")}}


def settle(server: Server, baseline: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    now = open_fds(server.pid)
    while now > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
        now = open_fds(server.pid)
    return now


def run_one(kind: str, count: int, concurrency: int) -> dict[str, Any]:
    with STARTERS[kind](ports=2000) as server:
        time.sleep(0.5)
        base_fds = open_fds(server.pid)
        base = server.stats()
        result = asyncio.run(churn(server, count, concurrency))
        result["server"] = kind
        result["fds_baseline"] = base_fds
        result["fds_after"] = settle(server, base_fds)
        if kind == "ours":
            after = server.stats()
            result["ports_free_baseline"] = base.get("relay_ports_free")
            result["ports_free_after"] = after.get("relay_ports_free")
            result["allocations_after"] = after.get("allocations")
            result["tasks_baseline"] = base.get("asyncio_tasks")
            result["tasks_after"] = after.get("asyncio_tasks")
        result["back_to_baseline"] = result["fds_after"] <= base_fds and (
            kind != "ours" or (result["ports_free_after"] == result["ports_free_baseline"]
                               and result["tasks_after"] <= result["tasks_baseline"]))
        return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("t3", __doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", type=int, default=1000, help="allocations per round")
    p.add_argument("--concurrency", type=int, default=50)
    return parse(p, argv, QUICK)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = Run("T3", argv, title=summary(__doc__), reference=REFERENCE, quick=args.quick,
              tools=("coturn",), rounds=args.rounds, count=args.count,
              concurrency=args.concurrency)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in SERVERS}
    for i in range(args.rounds):
        for kind in SERVERS:
            row = run_one(kind, args.count, args.concurrency)
            runs[kind].append(row)
            print(f"# round {i + 1} {kind}: {json.dumps(row)}", flush=True)
    run.detail("runs", runs)
    ours_rate = median(r["allocs_per_s"] for r in runs["ours"])
    coturn_rate = median(r["allocs_per_s"] for r in runs["coturn"])
    run.figure("allocs_per_s", ours_rate, "alloc/s", "median of rounds", target=">= 500",
               headline=True)
    run.reference_figure("coturn_allocs_per_s", coturn_rate, "alloc/s", "median of rounds")
    run.ratio("rate_vs_coturn", ours_rate / coturn_rate, "allocations/s, medians of rounds",
              headline=True)
    run.figure("rounds_not_back_to_baseline",
               sum(not r["back_to_baseline"] for r in runs["ours"]), "",
               f"of {args.rounds}: fds, relay ports or asyncio tasks above their baseline "
               "after release",
               target="== 0", headline=True)
    run.figure("failures", sum(r["failures"] for r in runs["ours"]), "",
               "allocations that failed, all rounds", target="== 0")
    run.write()
    return 0
