"""P3: 5,000 distinct cache misses as fast as the client can, against the upstream caps.

Figures: peak upstream concurrency and peak request starts in any 1 s window (must stay
within the configured caps), errors.

Two phases on one service, each on its own keys: ``rate`` (fast upstream, 20 ms: the rate cap
binds) and ``concurrency`` (slow upstream, 250 ms: the connection cap binds). Caps come from
the environment we give the service (defaults here: UPSTREAM_MAX_RPS=200,
UPSTREAM_MAX_CONNECTIONS=16, UPSTREAM_QUEUE_TIMEOUT=10; the product default rate is 40/s,
which would make 5,000 misses take over 2 minutes). Requests that would wait in the queue
longer than the queue bound are answered 503 ``upstream_busy`` — expected, and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from typing import Any

from tests.doubles.fake_upstream import FakeUpstream

from bench import _procs
from bench._common import Run, parse, parser, percentile, summary
from bench.metadata import _load

ID = "P3"
QUICK = {"count": 100, "count_concurrency": 50, "client_concurrency": 32}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("p3", __doc__)
    p.add_argument("--count", type=int, default=5000, help="misses in the rate phase (spec: 5000)")
    p.add_argument("--count-concurrency", type=int, default=1000,
                   help="misses in the concurrency phase (0: skip the phase)")
    p.add_argument("--client-concurrency", type=int, default=512,
                   help="client connections, each sending its next request at once")
    p.add_argument("--rps", type=float, default=200.0, help="UPSTREAM_MAX_RPS given to the service")
    p.add_argument("--connections", type=int, default=16, help="UPSTREAM_MAX_CONNECTIONS")
    p.add_argument("--queue-timeout", type=float, default=10.0, help="UPSTREAM_QUEUE_TIMEOUT")
    p.add_argument("--fast-delay", type=float, default=0.02, help="upstream delay, rate phase")
    p.add_argument("--slow-delay", type=float, default=0.25,
                   help="upstream delay, concurrency phase")
    return parse(p, argv, QUICK)


def peak_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any half-open interval [t, t + window)."""
    ordered = sorted(times)
    best = i = 0
    for j, t in enumerate(ordered):
        while t - ordered[i] >= window:
            i += 1
        best = max(best, j - i + 1)
    return best


def load(urls: list[str], concurrency: int) -> tuple[list[_load.Sample], float]:
    """Runs in the client child process."""

    async def go() -> tuple[list[_load.Sample], float]:
        async with _load.session(limit=concurrency, timeout=600) as s:
            started = time.perf_counter()
            samples = await _load.run_pool(s, urls, concurrency)
            return samples, time.perf_counter() - started

    return asyncio.run(go())


def run_phase(name: str, fake: FakeUpstream, base: str, first_id: int, count: int,
              delay: float, args: argparse.Namespace) -> dict[str, Any]:
    fake.reset()
    fake.in_flight = 0
    fake.delay = delay
    urls = [f"{base}/tmdb/movies/{first_id + i}" for i in range(count)]
    samples, wall = _load.in_child(load, urls, args.client_concurrency)
    starts = [c.at for c in fake.api_calls("/3/movie/")]
    ok = sum(1 for x in samples if x.status == 200)
    ordered = sorted(starts)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    interval = 1.0 / args.rps
    lat = [x.latency for x in samples]
    row = {
        "phase": name, "misses": count, "upstream_delay_s": delay, "wall_s": round(wall, 3),
        "upstream_calls": len(starts),
        "peak_upstream_concurrency": fake.peak_in_flight,
        "peak_upstream_rps_1s": peak_window(starts),
        "mean_upstream_rps": round(len(starts) / (max(starts) - min(starts)), 1)
        if len(starts) > 1 else 0.0,
        "start_gap_p1_ms": round(1000 * percentile(gaps, 1), 3),
        "start_gaps_under_90pct_interval": sum(1 for g in gaps if g < 0.9 * interval),
        "ok": ok, "errors": count - ok, "error_codes": _load.outcomes(samples, errors_only=True),
        "p50_ms": round(1000 * percentile(lat, 50), 1),
        "p99_ms": round(1000 * percentile(lat, 99), 1),
    }
    print(f"P3 phase {name}: {row}", file=sys.stderr, flush=True)
    return row


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    caps = {"UPSTREAM_MAX_RPS": str(args.rps), "UPSTREAM_MAX_CONNECTIONS": str(args.connections),
            "UPSTREAM_QUEUE_TIMEOUT": str(args.queue_timeout)}
    run = Run(ID, argv, title=summary(__doc__), reference="none (the configured caps)",
              quick=args.quick, caps=caps, client_concurrency=args.client_concurrency,
              count=args.count, count_concurrency=args.count_concurrency,
              fast_delay_s=args.fast_delay, slow_delay_s=args.slow_delay)
    phases: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        fake = FakeUpstream(body_padding=2048).start()
        stack.callback(fake.stop)
        svc = stack.enter_context(_procs.relay({**fake.env(), **caps, "TURN_ENABLED": "false"}))
        phases.append(run_phase("rate", fake, svc.url, 100_000, args.count, args.fast_delay, args))
        if args.count_concurrency:
            phases.append(run_phase("concurrency", fake, svc.url, 200_000,
                                    args.count_concurrency, args.slow_delay, args))
        _, _, raw = _procs.http_get(svc.url + "/stats")
        with contextlib.suppress(ValueError, KeyError):
            run.detail("relay_stats_upstream", json.loads(raw)["cache"]["upstream"])
    run.detail("phases", phases)
    total = sum(p["misses"] for p in phases)
    run.figure("peak_upstream_concurrency", max(p["peak_upstream_concurrency"] for p in phases),
               "", f"max over phases, counted by the fake upstream (cap {args.connections})",
               target=f"<= {args.connections}", headline=True)
    run.figure("peak_upstream_rps_1s", max(p["peak_upstream_rps_1s"] for p in phases), "",
               f"request starts in any 1 s window at the fake (cap {args.rps:g})",
               target=f"<= {args.rps:g}", headline=True)
    for p in phases:
        run.detail(f"{p['phase']}_phase", f"{p['misses']} misses in {p['wall_s']:.1f} s, "
                   f"{p['upstream_calls']} upstream calls, mean {p['mean_upstream_rps']} "
                   f"req/s, peak {p['peak_upstream_concurrency']} concurrent / "
                   f"{p['peak_upstream_rps_1s']} per 1 s, {p['errors']} errors "
                   f"{p['error_codes'] or ''}")
    busy = sum(n for p in phases for k, n in p["error_codes"].items() if "upstream_busy" in k)
    run.figure("errors", sum(p["errors"] for p in phases) - busy, "",
               f"non-200 answers other than upstream_busy, all phases, of {total}", target="== 0",
               headline=True)
    run.figure("upstream_busy_503", busy, "",
               f"queue-wait bound firing (expected under overload), of {total}")
    run.write()
    return 0
