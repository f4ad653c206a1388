"""hits.py: the cached-entry answers both HTTP front doors share (sans-I/O, no sockets here)."""

from __future__ import annotations

import time

import pytest

from metadata_relay.config import load_settings
from metadata_relay.metadata.cache import Entry, cache_key
from metadata_relay.metadata.hits import HitAnswers, RequestHeaders, entry_headers
from metadata_relay.metadata.proxy import MetadataProxy

PATH = "/tmdb/tv/shows/1399"
BODY = b'{"name": "' + b"x" * 2000 + b'"}'


def proxy_holding_path(tmp_path) -> MetadataProxy:
    """A proxy (no storage behind it) whose memory tier holds a fresh entry for PATH."""
    settings = load_settings({"TMDB_API_KEY": "k", "SQLITE_DB_PATH": str(tmp_path / "r.db")})
    proxy = MetadataProxy(settings, db=None, redis=None)  # type: ignore[arg-type]
    proxy.memory.put(cache_key(PATH, []), Entry.create(200, "application/json", BODY, 3600))
    return proxy


@pytest.fixture
def proxy(tmp_path) -> MetadataProxy:
    return proxy_holding_path(tmp_path)


def lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % h for h in headers)


@pytest.mark.parametrize("inm, accept, method", [
    (None, None, "GET"), (None, b"gzip, br", "GET"), (None, b"gzip;q=0", "GET"),
    (None, b"gzip", "HEAD"), (b"*", None, "GET"), (b'"nope"', b"gzip", "GET"),
])
def test_fresh_renders_the_gateways_headers(proxy: MetadataProxy, inm, accept, method) -> None:
    answers = HitAnswers(proxy)
    hit = answers.fresh(method, PATH, b"", inm, accept)
    assert hit is not None
    status, entry_lines, hit_lines, body, label = hit
    entry = proxy.memory.get(cache_key(PATH, []))
    assert entry is not None
    # the same instant for both forms: age and max-age are whole seconds of the same clock
    want_status, headers, gzipped = entry_headers(entry, "HIT", time.time(),
                                                  RequestHeaders(inm, accept))
    assert status == want_status and label == "/tmdb/tv/shows/{id}"
    assert entry_lines + hit_lines == lines(headers)
    if status == 304 or method == "HEAD":
        assert body == b""
    else:
        assert body == (entry.gzip_body if gzipped else entry.body)
    assert gzipped == (accept in (b"gzip, br", b"gzip"))
    assert proxy.hits == 1 and proxy.fast_hits == 1


def test_fresh_declines_everything_but_a_fresh_memory_hit(proxy: MetadataProxy) -> None:
    answers = HitAnswers(proxy)
    for method, path, qs in [("POST", PATH, b""), ("OPTIONS", PATH, b""), ("GET", "/health", b""),
                             ("GET", "/tmdb/tv/shows/abc", b""), ("GET", PATH, b"language=de"),
                             ("GET", "/tmdb/movies/1", b"")]:
        assert answers.fresh(method, path, qs, None, None) is None
    key = cache_key(PATH, [])
    proxy.memory.put(key, Entry.create(200, "application/json", BODY, 10, now=time.time() - 20))
    assert answers.fresh("GET", PATH, b"", None, None) is None  # expired: stale
    assert proxy.hits == 0 and proxy.fast_hits == 0


def test_the_resolution_memo_keeps_short_keys_only(proxy: MetadataProxy) -> None:
    from metadata_relay.metadata import hits

    answers = HitAnswers(proxy)
    for i in range(2 * hits.RESOLVED_MAX):
        answers.resolve(PATH, b"q=" + b"x" * (i % 900))
    assert len(answers._resolved) <= hits.RESOLVED_MAX
    assert all(len(p) + len(q) <= hits.RESOLVED_MAX_BYTES for p, q in answers._resolved)
