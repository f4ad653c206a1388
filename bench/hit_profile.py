"""Cache-hit path cost breakdown: microseconds per request of each piece of the gateway's
hit path and of the HTTP fast path below ASGI, timed in-process (no sockets), plus uvicorn's
per-header validation cost.

Complements P1 (which measures the whole server under wrk): this says where the relay's
per-request Python time goes, so optimisations can be chosen by measured cost.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

import uvicorn
import uvloop
from prometheus_client import Counter, Histogram
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE
from uvicorn.server import ServerState

from bench._report import Report
from metadata_relay.config import load_settings
from metadata_relay.http import connection
from metadata_relay.http.edge import LATENCY_BUCKETS, Edge, EdgeMiddleware, RequestMetrics
from metadata_relay.http.fastpath import FastPath
from metadata_relay.http.h1 import head_end, parse_head
from metadata_relay.http.links import Links
from metadata_relay.metadata.cache import Entry, cache_key
from metadata_relay.metadata.gateway import MetadataGateway
from metadata_relay.metadata.hits import HitAnswers, RequestHeaders
from metadata_relay.metadata.proxy import MetadataProxy
from metadata_relay.metadata.routes import forwarded_params, match
from metadata_relay.observability import REGISTRY

HTTP_REQUESTS = Counter("bench_http_requests", "what-if: a labelled Counter",
                        ["route", "status"], registry=None)
HTTP_LATENCY = Histogram("bench_http_latency", "what-if: a labelled Histogram", ["route"],
                         buckets=LATENCY_BUCKETS, registry=None)
assert REGISTRY is not None

PATH = "/tmdb/tv/shows/1399"
BODY = b'{"z_last": true, "overview": "' + b"x" * (30 * 1024 - 40) + b'"}\n'
WRK_HEADERS = [(b"host", b"127.0.0.1:8080")]  # all wrk sends


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench hit_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--number", type=int, default=20000, help="calls per timing")
    p.add_argument("--repeat", type=int, default=5, help="timings per piece (median kept)")
    return p.parse_args(argv)


def per_call_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return 1e6 * min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def async_per_call_us(make: Callable[[], Any], number: int, repeat: int) -> float:
    async def run() -> float:
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            for _ in range(number):
                await make()
            best = min(best, time.perf_counter() - started)
        return best

    return 1e6 * asyncio.run(run()) / number


def uvicorn_header_loop(headers: list[tuple[bytes, bytes]]) -> None:
    """The per-header work uvicorn's httptools send() does before writing (validation,
    lower-casing, content-length/connection checks), copied so it can be timed alone."""
    content = []
    for name, value in headers:
        if HEADER_RE.search(name):
            raise RuntimeError
        if HEADER_VALUE_RE.search(value):
            raise RuntimeError
        name = name.lower()
        if name == b"content-length":
            int(value.decode())
        elif name == b"transfer-encoding" and value.lower() == b"chunked":
            pass
        elif name == b"connection":
            pass
        content.extend([name, b": ", value, b"\r\n"])
    b"".join(content)


class _NullTransport:
    """Swallows writes: the fast path's cost without the socket."""

    def write(self, data: bytes) -> None:
        return None

    def writelines(self, data: Any) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default)

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def fast_path_protocol(fast: FastPath) -> connection.HttpConnection:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a fresh hit must not reach ASGI")

    limits = connection.ConnectionLimits(10, 5, 30, 16384)
    cls = connection.bind(fast, fast.edge, Links(), limits)
    config = uvicorn.Config(app, http=cls, access_log=False, server_header=False,
                            log_config=None)
    protocol = cls(config, ServerState(), {}, _loop=uvloop.new_event_loop())
    protocol.connection_made(_NullTransport())  # type: ignore[arg-type]
    return protocol


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    n, rep = args.number, args.repeat
    settings = load_settings({"TMDB_API_KEY": "k", "SQLITE_DB_PATH": "/nonexistent/x.db"})
    proxy = MetadataProxy(settings, db=None, redis=None)  # type: ignore[arg-type]
    key = cache_key(PATH, [])
    entry = Entry.create(200, "application/json;charset=utf-8", BODY, 30 * 86400)
    proxy.memory.put(key, entry)

    sent: list[dict[str, Any]] = []

    async def capture(message: dict[str, Any]) -> None:
        sent.append(message)

    async def noop_send(message: dict[str, Any]) -> None:
        return None

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def fallthrough(scope: Any, rcv: Any, send: Any) -> None:
        raise AssertionError("a hit must not reach the router")

    answers = HitAnswers(proxy)
    edge = Edge(metrics=RequestMetrics())
    gateway = EdgeMiddleware(MetadataGateway(fallthrough, answers), edge)
    fast = FastPath(answers, edge)

    def scope() -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": PATH, "query_string": b"",
                "headers": WRK_HEADERS}

    asyncio.run(gateway(scope(), receive, capture))  # type: ignore[arg-type]
    if sent[0]["status"] != 200 or sent[1]["body"] != BODY:
        raise RuntimeError("the hit path did not answer 200 with the body")
    relay_headers: list[tuple[bytes, bytes]] = sent[0]["headers"]
    raw_headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(BODY)).encode())]
    m = match(PATH)
    assert m is not None

    report = Report("hit_profile", argv, number=n, repeat=rep, path=PATH, body_bytes=len(BODY),
                    response_headers=[k.decode() for k, _ in relay_headers])
    pieces: dict[str, float] = {}

    def piece(name: str, us: float) -> None:
        pieces[name] = round(us, 3)
        report.figure(name, round(us, 3), "us/request")

    piece("gateway_total", async_per_call_us(
        lambda: gateway(scope(), receive, noop_send), n, rep))  # type: ignore[arg-type]
    piece("scope_dict_build (harness, subtract)", per_call_us(scope, n, rep))
    piece("edge.request_id (prefix + counter)", per_call_us(lambda: edge.request_id(None),
                                                            n, rep))
    piece("routes.match", per_call_us(lambda: match(PATH), n, rep))
    piece("forwarded_params + cache_key", per_call_us(
        lambda: cache_key(PATH, forwarded_params(m.route, [])), n, rep))
    piece("proxy.fresh_hit (LRU + prometheus inc)", per_call_us(
        lambda: proxy.fresh_hit(key, time.time()), n, rep))
    piece("  of which CACHE_RESULTS hit .inc()", per_call_us(proxy._hit_counter.inc, n, rep))
    piece("edge.metrics.observe (plain numbers)", per_call_us(
        lambda: edge.metrics.observe("/tmdb/tv/shows/{id}", 200, 0.0), n, rep))
    piece("gateway._send_entry (headers + 2 sends)", async_per_call_us(
        lambda: MetadataGateway(fallthrough, answers)._send_entry(
            noop_send, entry, "HIT", time.time(), RequestHeaders(), "GET"), n, rep))
    piece("fast path: answers.fresh (lookup + header lines)", per_call_us(
        lambda: answers.fresh("GET", PATH, b"", None, None), n, rep))
    request = b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
    piece("listener: h1.parse_head", per_call_us(
        lambda: parse_head(request[:head_end(request, 0)]), n, rep))
    head = parse_head(request[:head_end(request, 0)])
    piece("fast path: FastPath.answer (rendered answer)", per_call_us(
        lambda: fast.answer(head), n, rep))
    protocol = fast_path_protocol(fast)
    piece("fast path: whole hit, HttpConnection.data_received (no socket)", per_call_us(
        lambda: protocol.data_received(request), n, rep))
    piece(f"uvicorn header loop, relay's {len(relay_headers)} headers", per_call_us(
        lambda: uvicorn_header_loop(relay_headers), n, rep))
    piece(f"uvicorn header loop, raw app's {len(raw_headers)} headers", per_call_us(
        lambda: uvicorn_header_loop(raw_headers), n, rep))
    per_header = (pieces[f"uvicorn header loop, relay's {len(relay_headers)} headers"]
                  - pieces[f"uvicorn header loop, raw app's {len(raw_headers)} headers"]) / max(
        len(relay_headers) - len(raw_headers), 1)
    piece("uvicorn cost per extra header", per_header)

    # what-if: cheaper ways to do the same work (for the lead to choose from)
    route_label = "/tmdb/tv/shows/{id}"
    req_child = HTTP_REQUESTS.labels(route_label, "2xx")
    lat_child = HTTP_LATENCY.labels(route_label)
    piece("alt: HTTP_REQUESTS.labels(route, '2xx') alone", per_call_us(
        lambda: HTTP_REQUESTS.labels(route_label, "2xx"), n, rep))
    piece("alt: pre-bound counter child .inc()", per_call_us(req_child.inc, n, rep))
    piece("alt: pre-bound histogram child .observe()", per_call_us(
        lambda: lat_child.observe(0.0004), n, rep))
    children: dict[tuple[str, int], tuple[Any, Any]] = {(route_label, 2): (req_child, lat_child)}

    def observe_cached() -> None:
        c, h = children[(route_label, 2)]
        c.inc()
        h.observe(0.0004)

    piece("alt: labelled prometheus children cached per (route, class)", per_call_us(
        observe_cached, n, rep))
    counter = itertools.count()
    prefix = secrets.token_hex(4)
    piece("alt: request id os.urandom(8).hex().encode()", per_call_us(
        lambda: os.urandom(8).hex().encode(), n, rep))
    piece("alt: request id prefix + counter", per_call_us(
        lambda: b"%s%08x" % (prefix.encode(), next(counter)), n, rep))
    match_cache = {PATH: m}
    piece("alt: routes.match via a dict of recent paths", per_call_us(
        lambda: match_cache.get(PATH), n, rep))
    key_cache = {(PATH, b""): key}
    piece("alt: cache key via a dict of (path, query_string)", per_call_us(
        lambda: key_cache.get((PATH, b"")), n, rep))
    report.detail("pieces_us", pieces)
    report.detail("median_piece_us", statistics.median(pieces.values()))
    report.write()
    return 0
