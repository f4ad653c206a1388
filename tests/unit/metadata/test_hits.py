"""hits.py: the answers both HTTP front doors share (sans-I/O, no sockets here)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metadata_relay.config import load_settings
from metadata_relay.metadata.cache import Entry, cache_key
from metadata_relay.metadata.hits import HitAnswers, RequestHeaders, entry_headers
from metadata_relay.metadata.proxy import MetadataProxy
from metadata_relay.observability import HTTP_LATENCY, HTTP_REQUESTS, REGISTRY

PATH = "/tmdb/tv/shows/1399"
BODY = b'{"name": "' + b"x" * 2000 + b'"}'


@pytest.fixture
def proxy(tmp_path) -> MetadataProxy:
    settings = load_settings({"TMDB_API_KEY": "k", "SQLITE_DB_PATH": str(tmp_path / "r.db")})
    proxy = MetadataProxy(settings, db=None, redis=None)  # type: ignore[arg-type]
    proxy.memory.put(cache_key(PATH, []), Entry.create(200, "application/json", BODY, 3600))
    return proxy


def lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % h for h in headers)


@pytest.mark.parametrize("inm, accept, method", [
    (None, None, "GET"), (None, b"gzip, br", "GET"), (None, b"gzip;q=0", "GET"),
    (None, b"gzip", "HEAD"), (b"*", None, "GET"), (b'"nope"', b"gzip", "GET"),
])
def test_fresh_renders_the_gateways_headers(proxy: MetadataProxy, inm, accept, method) -> None:
    answers = HitAnswers()
    hit = answers.fresh(proxy, method, PATH, b"", b"rid-1", inm, accept)
    assert hit is not None
    status, entry_lines, request_lines, body, label = hit
    entry = proxy.memory.get(cache_key(PATH, []))
    assert entry is not None
    # the same instant for both forms: age and max-age are whole seconds of the same clock
    want_status, headers, gzipped = entry_headers(entry, "HIT", time.time(), b"rid-1",
                                                  RequestHeaders(b"rid-1", inm, accept))
    assert status == want_status and label == "/tmdb/tv/shows/{id}"
    assert entry_lines + request_lines == lines(headers)
    if status == 304 or method == "HEAD":
        assert body == b""
    else:
        assert body == (entry.gzip_body if gzipped else entry.body)
    assert gzipped == (accept in (b"gzip, br", b"gzip"))
    assert proxy.hits == 1 and proxy.fast_hits == 1


def test_fresh_declines_everything_but_a_fresh_memory_hit(proxy: MetadataProxy) -> None:
    answers = HitAnswers()
    for method, path, qs in [("POST", PATH, b""), ("OPTIONS", PATH, b""), ("GET", "/health", b""),
                             ("GET", "/tmdb/tv/shows/abc", b""), ("GET", PATH, b"language=de"),
                             ("GET", "/tmdb/movies/1", b"")]:
        assert answers.fresh(proxy, method, path, qs, None, None, None) is None
    key = cache_key(PATH, [])
    proxy.memory.put(key, Entry.create(200, "application/json", BODY, 10, now=time.time() - 20))
    assert answers.fresh(proxy, "GET", PATH, b"", None, None, None) is None  # expired: stale
    assert proxy.hits == 0 and proxy.fast_hits == 0


def test_request_ids_echoed_only_when_printable(proxy: MetadataProxy) -> None:
    answers = HitAnswers()
    assert answers.request_id(b"abc-123") == b"abc-123"
    assert answers.request_id(b"a\tb c") == b"a\tb c"
    assert answers.request_id(b"x" * 128) == b"x" * 128
    generated = {answers.request_id(v) for v in (None, b"", b"x" * 129, b"a\x01b", b"a\x7fb",
                                                 b"caf\xc3\xa9")}
    assert len(generated) == 6  # each one fresh and unique, from this process's prefix
    assert all(g.startswith(answers._rid_prefix) for g in generated)


@given(st.binary(max_size=200))
def test_request_id_is_always_a_valid_header_value(given_id: bytes) -> None:
    rid = HitAnswers().request_id(given_id)
    assert 0 < len(rid) <= 128
    assert all(b == 9 or 0x20 <= b <= 0x7e for b in rid)


def sample(name: str, labels: dict[str, str]) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_record_then_flush_equals_observe() -> None:
    """The fast path's deferred metrics land exactly as observe() would have put them."""
    a, b = HitAnswers(), HitAnswers()
    delays = [0.0001, 0.0003, 0.003, 0.003, 0.2, 20.0]  # away from bucket bounds
    for d in delays:
        a.observe("/test/observe", 200, time.perf_counter() - d)
        assert b.record("/test/record", 200, time.perf_counter() - d) == (d == delays[0])
    assert sample("relay_http_requests_total", {"route": "/test/record", "status": "2xx"}) == 0
    b.flush()
    assert b.record("/test/record", 404, time.perf_counter() - 0.0001) is True  # new batch
    b.flush()
    for le in ["0.0005", "0.001", "0.005", "0.25", "10.0", "+Inf"]:
        observed = sample("relay_http_request_duration_seconds_bucket",
                          {"route": "/test/observe", "le": le})
        recorded = sample("relay_http_request_duration_seconds_bucket",
                          {"route": "/test/record", "le": le})
        assert recorded == observed + 1, le  # + the 404's 0.1 ms
    assert sample("relay_http_requests_total", {"route": "/test/record", "status": "2xx"}) == 6
    assert sample("relay_http_requests_total", {"route": "/test/record", "status": "4xx"}) == 1
    got = sample("relay_http_request_duration_seconds_sum", {"route": "/test/record"})
    want = sample("relay_http_request_duration_seconds_sum", {"route": "/test/observe"})
    assert want == pytest.approx(got, abs=0.01)
    # the children are the module's collectors (what /metrics renders)
    assert HTTP_REQUESTS.labels("/test/record", "2xx") is b._children("/test/record", 200)[0]
    assert HTTP_LATENCY.labels("/test/record") is b._children("/test/record", 200)[1]
