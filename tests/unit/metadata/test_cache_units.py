from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from metadata_relay.metadata.cache import ENTRY_OVERHEAD, Entry, MemoryTier, cache_key
from metadata_relay.metadata.providers.logins import jwt_expiry
from metadata_relay.metadata.routes import TtlClass, forwarded_params, match
from metadata_relay.metadata.ttl import TTL_SECONDS, ttl_for
from metadata_relay.metadata.upstream import parse_retry_after


def entry(n: int) -> Entry:
    return Entry.create(200, "application/json", b"x" * n, 60, now=0)


def test_memory_tier_is_true_lru_bounded_by_bytes() -> None:
    size = len(b"x" * 100) + ENTRY_OVERHEAD + len("k0")
    tier = MemoryTier(max_bytes=size * 3)
    for i in range(3):
        tier.put(f"k{i}", entry(100))
    assert tier.get("k0") is not None  # k0 is now most recently used
    tier.put("k3", entry(100))
    assert tier.get("k1") is None  # least recently used went first
    assert all(tier.get(k) is not None for k in ("k0", "k2", "k3"))
    assert tier.bytes <= tier.max_bytes
    tier.put("huge", entry(10_000))  # larger than the whole tier: not stored, nothing evicted
    assert tier.get("huge") is None and len(tier) == 3
    tier.put("k0", entry(100))  # replacing keeps the byte count exact
    assert tier.bytes == size * 3
    tier.delete("k0")
    assert tier.bytes == size * 2


def test_cache_key_sorted_and_stable() -> None:
    assert cache_key("/p", [("b", "2"), ("a", "1")]) == cache_key("/p", [("a", "1"), ("b", "2")])
    assert cache_key("/p", []) == "GET:/p"
    assert cache_key("/p", [("q", "a&b=c")]) != cache_key("/p", [("q", "a"), ("b", "c")])


def test_forwarded_params_never_include_api_key() -> None:
    m = match("/tmdb/movies/search")
    assert m is not None
    sent = forwarded_params(m.route, [("API_KEY", "x"), ("query", "q"), ("api_key", "y")])
    assert sent == [("query", "q")]
    m = match("/tvdb/series/1/episodes")
    assert m is not None
    assert forwarded_params(m.route, [("page", "abc")]) == [("page", "0")]


@given(st.text(max_size=80))
def test_route_match_never_raises(path: str) -> None:
    m = match("/" + path)
    if m is not None:
        assert m.upstream_path.startswith("/")
        assert ".." not in m.upstream_path


@given(st.integers(0, 599), st.text(max_size=40), st.binary(max_size=3000),
       st.floats(0, 1e9), st.floats(1, 1e7))
def test_entry_serialisation_round_trips(status, ctype, body, now, ttl) -> None:
    e = Entry.create(status, ctype, body, ttl, now=now)
    back = Entry.loads(e.dumps())
    assert (back.status, back.content_type, back.body, back.etag, back.gzip_body) == (
        e.status, e.content_type, e.body, e.etag, e.gzip_body)
    assert back.expires_at == e.expires_at


def test_ttl_jitter_within_ten_percent_and_spread() -> None:
    rng = random.Random(1)
    values = [ttl_for(TtlClass.DETAILS, 200, rng) for _ in range(500)]
    base = TTL_SECONDS[TtlClass.DETAILS]
    assert all(base * 0.9 <= v <= base * 1.1 for v in values)
    buckets = Counter(int((v / base - 0.9) * 10) for v in values)
    assert len(buckets) == 2 and min(buckets.values()) > 150  # both halves used
    assert ttl_for(TtlClass.IMAGES, 404, rng) <= 660  # negative cache is brief


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("99999") == 3600
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 30) == 30


@given(st.text(max_size=200))
def test_jwt_expiry_never_raises(token: str) -> None:
    value = jwt_expiry(token)
    assert value is None or isinstance(value, float)
