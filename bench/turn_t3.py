"""T3: TURN allocation rate vs Debian coturn: 1,000 allocations by aioice at concurrency 50,
then release; figures: allocations/s (ratio), and fds / relay ports / asyncio tasks back to
their baseline after release."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aioice.turn

from bench.turn_harness import REALM, SECRET, Server, coturn, fds, machine, ours, write
from metadata_relay.turn.credentials import rest_credential

del REALM


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
        username, password = rest_credential(SECRET, f"t3u{i % 100}", 3600, time.time())
        async with sem:
            try:
                endpoints.append(await aioice.turn.create_turn_endpoint(
                    Closed, ("127.0.0.1", server.port), username, password))
            except Exception:
                failures += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - t0
    during_fds = fds(server.pid)
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
    now = fds(server.pid)
    while now > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
        now = fds(server.pid)
    return now


def run_one(kind: str, count: int, concurrency: int) -> dict[str, Any]:
    start = ours if kind == "ours" else coturn
    with start(ports=2000) as server:
        time.sleep(0.5)
        base_fds = fds(server.pid)
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


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench turn_t3")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--servers", default="ours,coturn", help="comma list: ours,coturn")
    args = ap.parse_args()
    servers = tuple(args.servers.split(","))
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
    for i in range(args.rounds):
        for kind in servers:
            run = run_one(kind, args.count, args.concurrency)
            runs[kind].append(run)
            print(f"# round {i + 1} {kind}: {json.dumps(run)}", flush=True)
    summary: dict[str, Any] = {}
    for kind, rs in runs.items():
        summary[kind] = {
            "allocs_per_s": statistics.median(r["allocs_per_s"] for r in rs),
            "failures": sum(r["failures"] for r in rs),
            "back_to_baseline": all(r["back_to_baseline"] for r in rs),
        }
    summary["rate_ratio"] = round(summary["ours"]["allocs_per_s"]
                                  / summary["coturn"]["allocs_per_s"], 3) \
        if "ours" in summary and "coturn" in summary else None
    path = write("turn_t3", {"benchmark": "turn_t3", "count": args.count,
                             "concurrency": args.concurrency, "rounds": args.rounds,
                             "machine": machine(), "summary": summary, "runs": runs})
    for kind in servers:
        for k, v in summary[kind].items():
            print(f"turn_t3 {kind} {k} {v}")
    print(f"turn_t3 rate_ratio_ours_over_coturn {summary['rate_ratio']}")
    print(f"# written {path}")
    return 0
