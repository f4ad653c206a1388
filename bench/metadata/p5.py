"""P5: MusicBrainz burst, distinct lookups at once: never over 1 upstream request/s.

The relay runs as users run it, against the fake MusicBrainz (tests/doubles/fake_music.py),
which refuses (503, as musicbrainz.org does) any request less than 1 s after the last one it
served. ``--lookups`` distinct release lookups are sent at once; the figures are the most
requests the fake saw in any 1 s window (target: 1), how many it refused (target: 0), the
smallest gap between two of them, how many lookups were answered 200 (target: all) and when the
last one was (target: within UPSTREAM_QUEUE_TIMEOUT). UPSTREAM_TIMEOUT is raised with the
queue bound, since it bounds the whole attempt, queue wait included.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter

import aiohttp
from tests.doubles.fake_music import FakeMusic

from bench import _procs
from bench._common import Run, parse, parser, summary
from bench.metadata.p3 import peak_window

ID = "P5"
QUICK = {"lookups": 5, "queue_timeout": 10.0}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("p5", __doc__)
    p.add_argument("--lookups", type=int, default=50, help="distinct lookups at once (spec: 50)")
    p.add_argument("--queue-timeout", type=float, default=60.0,
                   help="UPSTREAM_QUEUE_TIMEOUT (must fit the lookups at 1 request/s)")
    p.add_argument("--upstream-delay", type=float, default=0.1,
                   help="seconds the fake MusicBrainz takes per answer")
    return parse(p, argv, QUICK)


async def burst(base: str, count: int) -> list[tuple[int, float]]:
    mbids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(count)]
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as http:
        started = time.perf_counter()

        async def one(mbid: str) -> tuple[int, float]:
            async with http.get(f"{base}/music/release/{mbid}") as r:
                await r.read()
                return r.status, time.perf_counter() - started

        return await asyncio.gather(*(one(m) for m in mbids))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    env = {"UPSTREAM_QUEUE_TIMEOUT": str(args.queue_timeout),
           "UPSTREAM_TIMEOUT": str(min(args.queue_timeout + 10, 300)), "TURN_ENABLED": "false"}
    run = Run(ID, argv, title=summary(__doc__), reference="none (MusicBrainz's published limit)",
              quick=args.quick, lookups=args.lookups, queue_timeout_s=args.queue_timeout,
              upstream_delay_s=args.upstream_delay)
    fake = FakeMusic(delay=args.upstream_delay).start()  # min gap 1 s, as musicbrainz.org
    try:
        with _procs.relay({**fake.env(), **env}) as relay:
            answers = asyncio.run(burst(relay.url, args.lookups))
        starts = fake.mb_starts()
        refused = fake.refused
    finally:
        fake.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    statuses = Counter(s for s, _ in answers)
    run.detail("statuses", {str(k): v for k, v in sorted(statuses.items())})
    run.figure("peak_upstream_rps_1s", peak_window(starts), "req/s",
               "upstream requests in any 1 s window, counted by the fake", target="<= 1",
               headline=True)
    run.figure("upstream_refusals", refused, "", "503s of the fake for requests under 1 s apart",
               target="== 0", headline=True)
    run.figure("answered_200", statuses.get(200, 0), "", f"of {args.lookups} lookups",
               target=f"== {args.lookups}", headline=True)
    run.figure("last_answer_s", round(max(t for _, t in answers), 2), "s",
               "when the last lookup was answered", target=f"<= {args.queue_timeout:g}")
    run.figure("min_gap_s", round(min(gaps), 3) if gaps else None, "s",
               "smallest gap between two upstream requests")
    run.write()
    return 0
