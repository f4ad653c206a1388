"""P4: upstream outage (503 or hanging) with a warm cache of expired entries.

Figures: success rate and p99 for warm keys, time to first answer (and the JSON error
envelope) for cold keys.

Warm N keys through the real service, stop it, rewrite ``expires_at``/``purge_at`` in its
SQLite ``cache_entries`` (simulating time passing), then for each variant start the service on
a pristine copy with the upstream down and drive warm and cold keys concurrently. Variants:
upstream ``503`` or ``hang`` (never answers; UPSTREAM_TIMEOUT is small), crossed with entry
age ``swr`` (expired 1 h ago: stale-while-revalidate) or ``sie`` (expired 2 days ago: past the
1-day revalidate window, inside the 30-day stale-if-error window, so each request tries the
upstream first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.doubles.fake_upstream import FakeUpstream

from bench import _procs
from bench._common import Run, parse, parser, percentile, summary
from bench.metadata import _load

ID = "P4"
QUICK = {"keys": 10, "warm_requests": 100, "cold_requests": 5}

STALE_IF_ERROR = 30 * 86400  # spec: stale-if-error up to 30 days past expiry
AGES = {"swr": 3600.0, "sie": 2 * 86400.0}  # seconds past expiry
MODES = ("503", "hang")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("p4", __doc__)
    p.add_argument("--keys", type=int, default=200, help="warm keys")
    p.add_argument("--warm-requests", type=int, default=2000, help="requests to warm keys")
    p.add_argument("--warm-concurrency", type=int, default=32)
    p.add_argument("--cold-requests", type=int, default=50, help="requests to distinct cold keys")
    p.add_argument("--cold-concurrency", type=int, default=10)
    p.add_argument("--timeout", type=float, default=1.0, help="UPSTREAM_TIMEOUT for the service")
    p.add_argument("--queue-timeout", type=float, default=2.0, help="UPSTREAM_QUEUE_TIMEOUT")
    p.add_argument("--modes", default=",".join(MODES), help="comma list of 503,hang")
    p.add_argument("--ages", default=",".join(AGES), help="comma list of swr,sie")
    return parse(p, argv, QUICK)


def warm(urls: list[str]) -> dict[str, str]:
    """Runs in the client child process: GET every url once; url → body digest."""

    async def go() -> list[_load.Sample]:
        async with _load.session(limit=32) as s:
            return await _load.run_pool(s, urls, 32)

    samples = asyncio.run(go())
    bad = [x for x in samples if x.status != 200]
    if bad:
        raise RuntimeError(f"warming failed: {bad[0].status} {bad[0].body[:200]!r}")
    return {x.url: x.digest for x in samples}


def outage_load(warm_urls: list[str], cold_urls: list[str], warm_conc: int,
                cold_conc: int) -> tuple[list[_load.Sample], list[_load.Sample], float]:
    """Runs in the client child process: warm and cold traffic at the same time."""

    async def go() -> tuple[list[_load.Sample], list[_load.Sample], float]:
        async with _load.session(limit=warm_conc + cold_conc, timeout=300) as s:
            started = time.perf_counter()
            w, c = await asyncio.gather(_load.run_pool(s, warm_urls, warm_conc),
                                        _load.run_pool(s, cold_urls, cold_conc))
            return w, c, time.perf_counter() - started

    return asyncio.run(go())


def age_entries(db_path: Path, seconds_past_expiry: float) -> int:
    """Make every cache entry expired ``seconds_past_expiry`` ago (purge_at moves with it)."""
    expires = time.time() - seconds_past_expiry
    con = sqlite3.connect(db_path)
    try:
        with con:
            n = con.execute("UPDATE cache_entries SET expires_at = ?, purge_at = ?",
                            (expires, expires + STALE_IF_ERROR)).rowcount
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return n


def copy_db(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        f = Path(str(src) + suffix)
        if f.exists():
            shutil.copy(f, dst_dir / (f.name))
    return dst_dir / src.name


def summarise(mode: str, age: str, warm_s: list[_load.Sample], cold_s: list[_load.Sample],
              digests: dict[str, str], wall: float) -> dict[str, Any]:
    ok = sum(1 for x in warm_s if x.status == 200 and x.digest == digests.get(x.url))
    wl = [x.latency for x in warm_s]
    cl = [x.latency for x in cold_s]
    cold_env = sum(1 for x in cold_s if x.envelope() is not None)
    return {
        "mode": mode, "age": age, "wall_s": round(wall, 3),
        "warm_requests": len(warm_s), "warm_ok": ok,
        "warm_success_pct": round(100 * ok / len(warm_s), 2) if warm_s else 0.0,
        "warm_x_cache": _load.x_caches(warm_s), "warm_statuses": _load.statuses(warm_s),
        "warm_p50_ms": round(1000 * percentile(wl, 50), 2),
        "warm_p99_ms": round(1000 * percentile(wl, 99), 2),
        "warm_max_ms": round(1000 * max(wl, default=0), 2),
        "cold_requests": len(cold_s), "cold_with_envelope": cold_env,
        "cold_error_codes": _load.outcomes(cold_s),
        "cold_first_answer_p50_ms": round(1000 * percentile(cl, 50), 1),
        "cold_first_answer_max_ms": round(1000 * max(cl, default=0), 1),
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    ages = [a for a in args.ages.split(",") if a]
    if set(modes) - set(MODES) or set(ages) - set(AGES):
        raise SystemExit(f"--modes from {MODES}, --ages from {tuple(AGES)}")
    knobs = {"UPSTREAM_TIMEOUT": str(args.timeout),
             "UPSTREAM_QUEUE_TIMEOUT": str(args.queue_timeout)}
    run = Run(ID, argv, title=summary(__doc__), reference="none (absolute figures)",
              quick=args.quick, service_env=knobs, keys=args.keys,
              warm_requests=args.warm_requests, warm_concurrency=args.warm_concurrency,
              cold_requests=args.cold_requests, cold_concurrency=args.cold_concurrency,
              ages_s=AGES)
    rows: list[dict[str, Any]] = []
    rng = random.Random(4)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-p4-")))
        fake = FakeUpstream(body_padding=2048).start()
        stack.callback(fake.stop)
        base_env = {**fake.env(), "TURN_ENABLED": "false"}

        # 1. warm the cache through the real service (fast rate so warming is quick)
        warm_db = tmp / "warm" / "relay.db"
        warm_db.parent.mkdir()
        paths = [f"/tmdb/movies/{300_000 + i}" for i in range(args.keys)]
        with _procs.relay({**base_env, "SQLITE_DB_PATH": str(warm_db),
                           "UPSTREAM_MAX_RPS": "1000"}, workdir=tmp / "warm") as svc:
            by_path = {p: d for u, d in _load.in_child(
                warm, [svc.url + p for p in paths]).items() for p in [u[len(svc.url):]]}

        for age in ages:
            aged = copy_db(warm_db, tmp / f"aged-{age}")
            n = age_entries(aged, AGES[age])
            for mode in modes:
                fake.reset()
                if mode == "503":
                    fake.fail_status = 503
                else:
                    fake.hang = True
                run_dir = tmp / f"run-{age}-{mode}"  # copy_db creates it
                db = copy_db(aged, run_dir / "data")
                with _procs.relay({**base_env, **knobs, "SQLITE_DB_PATH": str(db)},
                                  workdir=run_dir) as svc:
                    warm_urls = [svc.url + rng.choice(paths) for _ in range(args.warm_requests)]
                    cold_urls = [f"{svc.url}/tmdb/movies/{400_000 + i}"
                                 for i in range(args.cold_requests)]
                    digests = {svc.url + p: d for p, d in by_path.items()}
                    w, c, wall = _load.in_child(outage_load, warm_urls, cold_urls,
                                                args.warm_concurrency, args.cold_concurrency)
                row = summarise(mode, age, w, c, digests, wall)
                row["entries_aged"] = n
                row["upstream_calls"] = len(fake.api_calls())
                rows.append(row)
                print(f"P4 {age}/{mode}: {row}", file=sys.stderr, flush=True)
        fake.reset()  # hanging handlers stop holding the fake's shutdown as soon as they can

    run.detail("variants", rows)
    run.figure("warm_success", min(r["warm_success_pct"] for r in rows), "%",
               "worst variant: 200 with the cached bytes", target="== 100", headline=True)
    run.figure("warm_p99", max(r["warm_p99_ms"] for r in rows), "ms", "worst variant",
               headline=True)
    run.figure("cold_first_answer_max", max(r["cold_first_answer_max_ms"] for r in rows), "ms",
               f"slowest cold answer, all variants; UPSTREAM_TIMEOUT {args.timeout:g} s "
               "bounds queue wait plus request", headline=True)
    run.figure("cold_without_envelope",
               sum(r["cold_requests"] - r["cold_with_envelope"] for r in rows), "",
               "cold answers without the JSON error envelope, all variants", target="== 0")
    for r in rows:
        tag = f"{r['age']}_{r['mode']}"
        run.figure(f"{tag}_warm_success", r["warm_success_pct"], "%",
                   f"{r['warm_ok']}/{r['warm_requests']}, x-cache {r['warm_x_cache']}")
        run.figure(f"{tag}_warm_p99", r["warm_p99_ms"], "ms")
        run.figure(f"{tag}_cold_first_answer_max", r["cold_first_answer_max_ms"], "ms",
                   f"{r['cold_with_envelope']}/{r['cold_requests']} with the JSON envelope "
                   f"{r['cold_error_codes']}")
    run.write()
    return 0
