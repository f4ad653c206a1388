"""P2: cold stampede: 1,000 concurrent requests for one uncached key, upstream after 200 ms.

Figures: upstream calls (must be 1), successes (must be 1,000), wall time.

Each round uses a fresh key; the client opens one connection per request (so the wall time
includes 1,000 TCP connects, and on a 2-core machine is dominated by the Python client; the
relay's own CPU for the stampede is reported separately). Figures: worst round for
calls/successes, median for times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

from tests.doubles.fake_upstream import TMDB_KEY, FakeUpstream

from bench import _procs
from bench._common import Run, cpu_seconds, median, parse, parser, percentile, summary
from bench.metadata import _load

ID = "P2"
QUICK = {"requests": 50, "rounds": 1, "delay": 0.05}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("p2", __doc__)
    p.add_argument("--requests", type=int, default=1000, help="concurrent requests (spec: 1000)")
    p.add_argument("--delay", type=float, default=0.2, help="upstream answer delay, s (spec: 0.2)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each on a fresh key")
    p.add_argument("--body-bytes", type=int, default=30 * 1024, help="upstream body padding")
    return parse(p, argv, QUICK)


async def _stampede(url: str, n: int) -> tuple[list[_load.Sample], float, float]:
    async with _load.session(limit=0) as s:
        t0 = time.monotonic()  # CLOCK_MONOTONIC: comparable with the fake's call times
        started = time.perf_counter()
        samples = await asyncio.gather(*(_load.fetch(s, url) for _ in range(n)))
        return list(samples), time.perf_counter() - started, t0


def stampede(url: str, n: int) -> tuple[list[_load.Sample], float, float]:
    """Runs in the client child process."""
    return asyncio.run(_stampede(url, n))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = Run(ID, argv, title=summary(__doc__), reference="none (absolute figures)",
              quick=args.quick, requests=args.requests, upstream_delay_s=args.delay,
              rounds=args.rounds, body_padding=args.body_bytes,
              caps="defaults (UPSTREAM_MAX_RPS=40, UPSTREAM_MAX_CONNECTIONS=16)")
    rounds: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        fake = FakeUpstream(body_padding=args.body_bytes).start()
        stack.callback(fake.stop)
        svc = stack.enter_context(_procs.relay({**fake.env(), "TURN_ENABLED": "false"}))
        for r in range(args.rounds):
            show = str(50_000 + r)
            upstream_path = f"/3/tv/{show}"
            fake.delay = 0.0
            _, _, want = _procs.http_get(
                f"http://127.0.0.1:{fake.port}{upstream_path}?api_key={TMDB_KEY}")
            before = fake.count(upstream_path)
            fake.delay = args.delay
            cpu0 = cpu_seconds(svc.pid)
            samples, wall, t0 = _load.in_child(stampede, f"{svc.url}/tmdb/tv/shows/{show}",
                                           args.requests)
            relay_cpu = cpu_seconds(svc.pid) - cpu0
            calls = fake.count(upstream_path) - before
            starts = [round(c.at - t0, 3) for c in fake.api_calls() if c.path == upstream_path
                      and c.at >= t0]
            ok = sum(1 for x in samples if x.status == 200 and x.digest == _load.digest(want))
            lat = [x.latency for x in samples]
            row = {"upstream_calls": calls, "upstream_call_starts_s": starts,
                   "successes": ok, "wall_s": wall, "relay_cpu_s": relay_cpu,
                   "p50_ms": 1000 * percentile(lat, 50), "p99_ms": 1000 * percentile(lat, 99),
                   "max_ms": 1000 * max(lat), "statuses": _load.statuses(samples),
                   "x_cache": _load.x_caches(samples),
                   "client_errors": sorted({x.error for x in samples if x.error})}
            rounds.append(row)
            print(f"P2 round {r + 1}: {row}", file=sys.stderr, flush=True)
    run.detail("rounds", rounds)
    run.figure("upstream_calls", max(x["upstream_calls"] for x in rounds), "",
               "worst round", target="== 1", headline=True)
    run.figure("successes", min(x["successes"] for x in rounds), "",
               f"worst round; 200 with the upstream bytes, of {args.requests}",
               target=f"== {args.requests}", headline=True)
    run.figure("wall_time", median([x["wall_s"] for x in rounds]), "s",
               f"median of rounds; upstream delay {args.delay}s", headline=True)
    run.figure("first_upstream_call_after",
               median([x["upstream_call_starts_s"][0] for x in rounds
                       if x["upstream_call_starts_s"]]), "s",
               "median; mostly the client opening its connections on a 2-core box")
    run.figure("relay_cpu", median([x["relay_cpu_s"] for x in rounds]), "s",
               "relay process CPU for the whole stampede, median")
    run.figure("p99", median([x["p99_ms"] for x in rounds]), "ms", "median of rounds")
    run.figure("x_cache_miss_share",
               median([x["x_cache"].get("MISS", 0) / args.requests for x in rounds]), "",
               "waiters answered by the single flight (rest: HIT after it landed)")
    run.write()
    return 0
