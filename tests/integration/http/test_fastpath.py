"""The HTTP fast path (http/fastpath.py) over real loopback sockets against the real service.

Fresh cache hits answered below ASGI must be the bytes the ASGI path sends for the same
request; everything else (misses, pipelined requests behind one in the ASGI path, a full write
buffer, odd or broken requests) must behave as uvicorn does. Which path answered is read from
``/stats`` (``cache.fast_path_hits``). The ASGI path's answer to a hit is obtained by
pipelining the request behind a cache miss on the same connection: uvicorn's path must keep
it in order, so it goes through ASGI.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.doubles.fake_upstream import FakeUpstream
from tests.integration.http.rawhttp import (
    WARM,
    WARM2,
    Conn,
    Resp,
    cold_path,
    parse_head,
    req,
)
from tests.relay_server import serve_relay
from tests.tools import ServiceProcess, start_service


def stats(svc: ServiceProcess) -> dict:
    with urllib.request.urlopen(svc.url + "/stats", timeout=5) as r:
        return json.load(r)["cache"]


def fast_hits(svc: ServiceProcess) -> int:
    return int(stats(svc)["fast_path_hits"])


def asgi_answer(svc: ServiceProcess, request: bytes, head: bool = False) -> tuple[Resp, bool]:
    """The ASGI path's answer to ``request``: pipelined behind a miss on one connection."""
    before = fast_hits(svc)
    with Conn(svc.port) as c:
        c.send(req(cold_path()) + request)
        assert c.response().get("x-cache") == "MISS"
        resp = c.response(head)
        closed = c.closed_by_server() if resp.get("connection") == "close" else False
    assert fast_hits(svc) == before, "the pipelined request must not take the fast path"
    return resp, closed


def fast_answer(svc: ServiceProcess, request: bytes, head: bool = False) -> tuple[Resp, bool]:
    before = fast_hits(svc)
    with Conn(svc.port) as c:
        c.send(request)
        resp = c.response(head)
        closed = c.closed_by_server() if resp.get("connection") == "close" else False
    assert fast_hits(svc) == before + 1, "a fresh hit on an idle connection takes the fast path"
    return resp, closed


def assert_same(fast: Resp, asgi: Resp, generated_id: bool = False) -> None:
    """Byte-identical apart from the clock: date, and age / max-age within a second."""

    def shape(r: Resp) -> list[tuple[str, str]]:
        out = []
        for n, v in r.headers:
            if n == "date":
                assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", v), v
                v = "<date>"
            elif n == "age" or (n == "cache-control" and v.startswith("public, max-age=")):
                v = re.sub(r"\d+", "<n>", v)
            elif n == "x-request-id" and generated_id:
                assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", v), v
                v = "<generated>"
            out.append((n, v))
        return out

    assert fast.status == asgi.status
    assert shape(fast) == shape(asgi)
    assert fast.body == asgi.body
    for name in ("age", "cache-control"):
        a, b = fast.get(name), asgi.get(name)
        if a is not None and b is not None:
            assert abs(int(a.split("=")[-1]) - int(b.split("=")[-1])) <= 1


# the order the gateway has always sent a hit's headers in (after uvicorn's date)
HIT_HEADERS = ["date", "content-type", "content-length", "etag", "vary", "x-cache", "age",
               "cache-control", "x-request-id", "access-control-allow-origin",
               "access-control-expose-headers"]


def test_hit_is_the_asgi_paths_bytes(svc: ServiceProcess, upstream: FakeUpstream) -> None:
    request = req(WARM, "x-request-id: rid-1", "accept-encoding: identity")
    asgi, _ = asgi_answer(svc, request)
    fast, _ = fast_answer(svc, request)
    assert_same(fast, asgi)
    assert [n for n, _ in fast.headers] == HIT_HEADERS
    assert fast.status == 200 and fast.get("x-cache") == "HIT"
    assert fast.get("x-request-id") == "rid-1" and len(fast.body) >= 30 * 1024
    assert fast.get("access-control-allow-origin") == "*"
    assert fast.get("server") is None  # cli.py serve: server_header=False
    assert upstream.count("/3/tv/1399") == 1


@pytest.mark.parametrize("path, headers, method, version", [
    (WARM, ["accept-encoding: br, gzip"], "GET", "1.1"),
    (WARM, ["accept-encoding: gzip;q=0"], "GET", "1.1"),
    (WARM, ["if-none-match: ETAG"], "GET", "1.1"),
    (WARM, ["if-none-match: W/ETAG, \"x\"", "accept-encoding: gzip"], "GET", "1.1"),
    (WARM, ["if-none-match: \"other\""], "GET", "1.1"),
    (WARM, ["if-none-match: *"], "HEAD", "1.1"),
    (WARM, [], "HEAD", "1.1"),
    (WARM, ["accept-encoding: gzip"], "HEAD", "1.1"),
    (WARM2, ["x-request-id: " + "r" * 128], "GET", "1.1"),
    (WARM, ["Connection: close"], "GET", "1.1"),
    (WARM, ["connection: keep-alive"], "GET", "1.1"),
    (WARM, [], "GET", "1.0"),
    (WARM, ["Connection: keep-alive"], "GET", "1.0"),
    ("/tmdb/tv/search?page=1&query=lost", [], "GET", "1.1"),  # same key, other order
    ("http://127.0.0.1" + WARM, [], "GET", "1.1"),  # absolute form
])
def test_variants_are_the_asgi_paths_bytes(svc: ServiceProcess, path: str, headers: list[str],
                                           method: str, version: str) -> None:
    with Conn(svc.port) as c:
        c.send(req(WARM))
        etag = c.response().get("etag")
    assert etag is not None
    headers = [h.replace("ETAG", etag) for h in headers]
    rid = [h for h in headers if h.startswith("x-request-id")] or ["x-request-id: v-1"]
    request = req(path, *headers, *([] if rid[0] in headers else rid), method=method,
                  version=version)
    head = method == "HEAD"
    asgi, asgi_closed = asgi_answer(svc, request, head)
    fast, fast_closed = fast_answer(svc, request, head)
    assert_same(fast, asgi)
    assert fast.get("x-cache") == "HIT"
    closes = version == "1.0" or "Connection: close" in headers
    assert (fast.get("connection") == "close") == closes
    assert fast_closed == asgi_closed == closes
    if any(h.startswith("if-none-match") and "other" not in h for h in headers):
        assert fast.status == 304 and fast.body == b"" and fast.get("etag") == etag
        assert fast.get("content-length") is None
    if "gzip" in " ".join(headers) and "q=0" not in " ".join(headers) and fast.status == 200:
        assert fast.get("content-encoding") == "gzip"


def test_generated_request_ids(svc: ServiceProcess) -> None:
    for request in (req(WARM), req(WARM, "x-request-id: " + "r" * 129)):
        asgi, _ = asgi_answer(svc, request)
        fast, _ = fast_answer(svc, request)
        assert_same(fast, asgi, generated_id=True)
        assert fast.get("x-request-id") != asgi.get("x-request-id")


def test_keep_alive_many_requests_and_back_after_a_miss(svc: ServiceProcess) -> None:
    before = stats(svc)
    with Conn(svc.port) as c:
        for i in range(5):
            c.send(req(WARM, f"x-request-id: k{i}"))
            r = c.response()
            assert (r.status, r.get("x-cache"), r.get("x-request-id")) == (200, "HIT", f"k{i}")
        c.send(req(cold_path()))
        assert c.response().get("x-cache") == "MISS"
        c.send(req(WARM2))
        assert c.response().get("x-cache") == "HIT"
    after = stats(svc)
    assert after["fast_path_hits"] - before["fast_path_hits"] == 6
    assert after["hits"] - before["hits"] == 6
    assert after["misses"] - before["misses"] == 1


def test_pipelined_hit_miss_hit_answered_in_order(svc: ServiceProcess) -> None:
    miss = cold_path()
    before = fast_hits(svc)
    with Conn(svc.port) as c:
        c.send(req(WARM, "x-request-id: p1") + req(miss, "x-request-id: p2")
               + req(WARM2, "x-request-id: p3") + req(WARM, "x-request-id: p4"))
        got = [c.response() for _ in range(4)]
    assert [(r.get("x-request-id"), r.get("x-cache")) for r in got] == [
        ("p1", "HIT"), ("p2", "MISS"), ("p3", "HIT"), ("p4", "HIT")]
    assert b"/3/tv/1399" in got[0].body and b"/3/movie/" in got[1].body
    assert b"/3/search/tv" in got[2].body and got[3].body == got[0].body
    # only the first: the others were behind a request in the ASGI path
    assert fast_hits(svc) == before + 1


def test_pipelined_hits_all_fast_in_order(svc: ServiceProcess) -> None:
    before = fast_hits(svc)
    with Conn(svc.port) as c:
        c.send(b"".join(req(WARM if i % 2 else WARM2, f"x-request-id: q{i}") for i in range(6)))
        got = [c.response() for _ in range(6)]
    assert [r.get("x-request-id") for r in got] == [f"q{i}" for i in range(6)]
    assert fast_hits(svc) == before + 6


def test_requests_after_connection_close_are_not_answered(svc: ServiceProcess) -> None:
    before = stats(svc)
    with Conn(svc.port) as c:
        c.send(req(WARM, "connection: close") + req(WARM2) + req(cold_path()))
        r = c.response()
        assert r.get("connection") == "close" and r.get("x-cache") == "HIT"
        assert c.closed_by_server()
    after = stats(svc)
    assert after["hits"] - before["hits"] == 1 and after["misses"] == before["misses"]


def test_full_write_buffer_falls_back_to_uvicorns_flow_control(svc: ServiceProcess) -> None:
    """A client that pipelines and does not read: once the transport's buffer passes its
    high-water mark, requests go to uvicorn's path (which waits for the drain and stops
    reading), so the server's buffering stays bounded; every answer still arrives in order."""
    n = 400  # 12 MB of answers: more than the kernel's socket buffers hold (tcp_wmem max 4 MB)
    before = stats(svc)
    with Conn(svc.port, rcvbuf=32768) as c:
        c.send(b"".join(req(WARM, f"x-request-id: f{i}") for i in range(n)))
        # not reading: the server must stop answering fast once its buffer is full, and hand
        # the next request to uvicorn's path (a hit counted there is waiting for the drain)
        for _ in range(200):
            now = stats(svc)
            if now["hits"] - before["hits"] > now["fast_path_hits"] - before["fast_path_hits"]:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"no fallback while the client does not read: {now}")
        got = [c.response() for _ in range(n)]
    after = stats(svc)
    fast = after["fast_path_hits"] - before["fast_path_hits"]
    summary = (fast, after["hits"] - before["hits"], [r.status for r in got if r.status != 200])
    assert [r.get("x-request-id") for r in got] == [f"f{i}" for i in range(n)], summary
    assert all(r.status == 200 and r.get("x-cache") == "HIT" for r in got), summary
    assert len({r.body for r in got}) == 1, summary
    assert after["hits"] - before["hits"] == n, summary
    assert 0 < fast < n, summary


BAD_REQUESTS = [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /tmdb/tv/shows/1399 HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /tmdb/tv/shows/1399 HTTP/9.9\r\nhost: x\r\n\r\n", 505),
    (b"GET /tmdb/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n", 400),
    (b"GET http://127.0.0.1 HTTP/1.1\r\nhost: x\r\n\r\n", 400),  # absolute form, no path
    (b"GET /tmdb/tv/shows/1399 HTTP/1.1\r\nx-request-id: a\x01b\r\n\r\n", 400),
    (b"GET /tmdb/tv/shows/1399 HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n", 400),
    (b"GET /tmdb/tv/shows/1399 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
     400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),  # a TLS ClientHello
]


@pytest.mark.parametrize("bad, status", BAD_REQUESTS)
def test_malformed_requests_are_refused_and_the_connection_closed(svc: ServiceProcess,
                                                                  bad: bytes,
                                                                  status: int) -> None:
    with Conn(svc.port) as c:
        c.send(req(WARM, "x-request-id: ok") + bad)
        first = c.response()
        assert first.get("x-request-id") == "ok" and first.get("x-cache") == "HIT"
        r = c.response()
        assert r.status == status and json.loads(r.body)["error"] in ("bad_request", "refused")
        assert r.get("connection") == "close" and c.closed_by_server()
        assert r.get("access-control-allow-origin") == "*" and r.get("x-request-id")


def test_requests_the_fast_path_leaves_to_asgi(svc: ServiceProcess) -> None:
    before = fast_hits(svc)
    cases = [
        (req(WARM, "content-length: 0", method="POST"), 405),
        (req(WARM, method="DELETE"), 405),
        (req(WARM, "content-length: 2") + b"{}", 200),
        (req(WARM, "expect: 100-continue", "content-length: 0"), 200),
        (req("/tmdb/tv/shows/abc"), 404),
        (req("/health"), 200),
        (req(WARM, "origin: https://x", "access-control-request-method: GET",
             method="OPTIONS"), 204),
    ]
    with Conn(svc.port) as c:
        for request, status in cases:
            c.send(request)
            assert c.response().status == status, request
    assert fast_hits(svc) == before


request_parts = st.tuples(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"OPTIONS", b"G\x00T", b""]),
    st.sampled_from([WARM.encode(), WARM2.encode(), b"/tmdb/tv/shows/1399?x=%zz", b"/",
                     b"/tmdb/tv/shows/" + b"9" * 30, b"*", b"/tvdb/series/1", b""]),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 extra", b""]),
    st.lists(st.tuples(st.sampled_from([b"x-request-id", b"if-none-match", b"accept-encoding",
                                        b"connection", b"content-length", b"host", b"x"]),
                       st.binary(max_size=20)), max_size=4),
).map(lambda p: p[0] + b" " + p[1] + b" " + p[2] + b"\r\n"
      + b"".join(n + b": " + v + b"\r\n" for n, v in p[3]) + b"\r\n")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.lists(st.one_of(st.binary(max_size=120), request_parts), max_size=4))
def test_garbage_after_a_hit_never_hangs_or_breaks_framing(svc: ServiceProcess,
                                                            tail: list[bytes]) -> None:
    with Conn(svc.port) as c:
        c.send(req(WARM, "x-request-id: g") + b"".join(tail))
        c.sock.shutdown(socket.SHUT_WR)
        first = c.response()
        assert first.get("x-request-id") == "g" and first.status == 200
        rest = c.buf
        while chunk := c.sock.recv(262144):  # the server closes: no hang (10 s socket timeout)
            rest += chunk
        # whatever follows the hit is whole responses from uvicorn's path or the fast path
        assert rest == b"" or rest.startswith(b"HTTP/1.1 "), rest[:200]
        for m in re.finditer(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n", rest):
            parse_head(m.group(0)[:-4])
    with Conn(svc.port) as c:  # and the server is fine
        c.send(req(WARM))
        assert c.response().get("x-cache") == "HIT"


async def test_keep_alive_timeout_closes_an_idle_connection_after_a_fast_answer(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    async with serve_relay(tmp_path, {**upstream.env(), "HTTP_IDLE_TIMEOUT": "1"}) as base:
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(req(WARM))  # miss: uvicorn's path
        await reader.readuntil(b"\r\n\r\n")
        writer.write(req(WARM))  # hit: the fast path
        for _ in range(3):  # requests before the timeout keep it open
            await asyncio.sleep(0.4)
            writer.write(req(WARM))
        data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        assert data.count(b"x-cache: HIT") == 4 and data.count(b"HTTP/1.1 200") == 4
        writer.close()


def test_access_log_lines_are_the_edges_from_both_paths(upstream: FakeUpstream,
                                                       tmp_path: Path) -> None:
    """HTTP_ACCESS_LOG: one line per request from the edge, the same for an answer from the
    ASGI path and from the fast path; the route template, never the path or query."""
    svc = start_service(tmp_path, {**upstream.env(), "TURN_ENABLED": "false",
                                   "HTTP_ACCESS_LOG": "true"})
    try:
        with Conn(svc.port) as c:
            for i in range(2):  # a miss through ASGI, then the same request as a fast hit
                c.send(req("/tmdb/tv/search?query=secret%20words", f"x-request-id: a{i}"))
                assert c.response().get("x-cache") == ("MISS", "HIT")[i]
        assert fast_hits(svc) == 1
    finally:
        svc.stop()
    lines = [json.loads(line) for line in svc.log().splitlines() if '"http_request"' in line]
    mine = [r for r in lines if r.get("request_id") in ("a0", "a1")]
    assert [r["request_id"] for r in mine] == ["a0", "a1"], lines
    for r in mine:
        assert {k: r[k] for k in ("method", "route", "status")} == {
            "method": "GET", "route": "/tmdb/tv/search", "status": 200}
    assert "secret" not in svc.log()


def metric(svc: ServiceProcess, line_start: str) -> float:
    with urllib.request.urlopen(svc.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_fast_hits_are_in_the_request_and_cache_metrics(svc: ServiceProcess) -> None:
    series = [
        'relay_http_requests_total{route="/tmdb/tv/shows/{id}",status="2xx"}',
        'relay_http_request_duration_seconds_count{route="/tmdb/tv/shows/{id}"}',
        'relay_http_request_duration_seconds_bucket{le="+Inf",route="/tmdb/tv/shows/{id}"}',
        'relay_cache_requests_total{result="hit"}',
    ]
    before = [metric(svc, s) for s in series]
    hits = fast_hits(svc)
    with Conn(svc.port) as c:
        c.send(req(WARM) * 3)
        assert [c.response().get("x-cache") for _ in range(3)] == ["HIT"] * 3
    assert fast_hits(svc) == hits + 3
    after = [metric(svc, s) for s in series]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3, 3, 3], (before, after)
