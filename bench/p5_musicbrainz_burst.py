"""P5: a burst of distinct MusicBrainz lookups — the relay must never send musicbrainz.org
more than 1 request/s, and must answer every lookup that fits its queue bound.

The service runs as users run it, against the fake MusicBrainz (tests/doubles/fake_music.py),
which refuses (503, as musicbrainz.org does) any request less than 1 s after the last one it
served. ``--count`` distinct lookups are sent at once; the figures are the most requests the
fake saw in any 1 s window (target: 1), how many it refused (target: 0), the smallest gap
between two of them, and how many lookups were answered 200 and how long the last one took
(target: all, within UPSTREAM_QUEUE_TIMEOUT). UPSTREAM_TIMEOUT is raised with the queue bound,
since it bounds the whole attempt, queue wait included.

Self-contained: prints one JSON line and writes bench/results/p5_musicbrainz_burst.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from tests.doubles.fake_music import FakeMusic
from tests.tools import start_service

from bench.p3_misses import peak_window

RESULT = Path(__file__).resolve().parent / "results" / "p5_musicbrainz_burst.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench p5_musicbrainz_burst", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=50, help="distinct lookups sent at once")
    p.add_argument("--queue-timeout", type=float, default=60.0,
                   help="UPSTREAM_QUEUE_TIMEOUT (must fit count seconds at 1 request/s)")
    p.add_argument("--upstream-delay", type=float, default=0.1,
                   help="seconds the fake MusicBrainz takes per answer")
    return p.parse_args(argv)


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
           "UPSTREAM_TIMEOUT": str(min(args.queue_timeout + 10, 300)),
           "TURN_ENABLED": "false", "LOG_LEVEL": "warning"}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-p5-")))
        fake = FakeMusic(delay=args.upstream_delay).start()  # min_gap 1 s: musicbrainz.org
        stack.callback(fake.stop)
        svc = start_service(tmp, {**fake.env(), **env})
        stack.callback(svc.stop)
        answers = asyncio.run(burst(svc.url, args.count))
        starts = fake.mb_starts()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    statuses = Counter(s for s, _ in answers)
    figures: dict[str, Any] = {
        "benchmark": "p5_musicbrainz_burst", "lookups": args.count,
        "queue_timeout_s": args.queue_timeout, "upstream_delay_s": args.upstream_delay,
        "upstream_requests": len(starts),
        "peak_upstream_requests_1s": peak_window(starts),  # target: 1
        "upstream_refusals_503": fake.refused,  # target: 0
        "min_gap_s": round(min(gaps), 3) if gaps else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},  # target: all 200
        "last_answer_s": round(max(t for _, t in answers), 2),  # target: < queue timeout
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python -m bench p5_musicbrainz_burst", *argv]),
    }
    figures["ok"] = (figures["peak_upstream_requests_1s"] <= 1 and fake.refused == 0
                     and statuses.get(200, 0) == args.count
                     and figures["last_answer_s"] <= args.queue_timeout)
    line = json.dumps(figures)
    print(line)
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(line + "\n")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
