"""An aiohttp load client that records status, latency, x-cache and body per request.

``in_child`` runs a load function in a separate (spawned) process so the client's CPU does not
starve the fake upstream's thread of the GIL in the benchmark process: the fake's counters and
timestamps then reflect what the relay sent, not when the bench process got round to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")
SMALL_BODY = 4096  # bodies up to this size are kept (error envelopes); larger ones as a digest


@dataclass(slots=True)
class Sample:
    url: str
    status: int  # 0 = client-side error (connection, timeout)
    latency: float  # seconds
    x_cache: str
    body: bytes  # b"" when larger than SMALL_BODY
    digest: str  # blake2b of the whole body
    error: str = ""

    def envelope(self) -> dict[str, object] | None:
        """The JSON error envelope, when the body is one (``{"error", "message"}``)."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return None
        if isinstance(doc, dict) and isinstance(doc.get("error"), str) and "message" in doc:
            return doc
        return None


def session(limit: int, timeout: float = 120) -> aiohttp.ClientSession:
    """A client session with ``limit`` pooled connections (0 = one per concurrent request)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False),
        timeout=aiohttp.ClientTimeout(total=timeout),
        auto_decompress=True,  # clients send accept-encoding: gzip, like real ones
    )


async def fetch(s: aiohttp.ClientSession, url: str) -> Sample:
    started = time.perf_counter()
    try:
        async with s.get(url) as r:
            body = await r.read()
            return Sample(url, r.status, time.perf_counter() - started,
                          r.headers.get("x-cache", ""), body if len(body) <= SMALL_BODY else b"",
                          digest(body))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Sample(url, 0, time.perf_counter() - started, "", b"", "", type(exc).__name__)


def digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def in_child(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a spawned child process (``fn`` must be a module-level function)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


async def run_pool(s: aiohttp.ClientSession, urls: Iterable[str],
                   concurrency: int) -> list[Sample]:
    """Fetch every url with ``concurrency`` workers, each starting its next request at once."""
    it = iter(urls)
    out: list[Sample] = []

    async def worker() -> None:
        for url in it:
            out.append(await fetch(s, url))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def statuses(samples: Iterable[Sample]) -> dict[str, int]:
    return dict(sorted(Counter(str(x.status) for x in samples).items()))


def outcomes(samples: Iterable[Sample], *, errors_only: bool = False) -> dict[str, int]:
    """Counts of "<status> <error code of the JSON envelope, or the client error>"; with
    ``errors_only``, of the non-200 answers only."""
    codes: Counter[str] = Counter()
    for x in samples:
        if errors_only and x.status == 200:
            continue
        env = x.envelope()
        codes[f"{x.status} {env['error'] if env else x.error or 'no envelope'}"] += 1
    return dict(sorted(codes.items()))


def x_caches(samples: Iterable[Sample]) -> dict[str, int]:
    return dict(sorted(Counter(x.x_cache or "-" for x in samples).items()))
