"""http/edge.py: request ids, the edge's headers, refusals, and request metrics kept in plain
numbers that scrape exactly as prometheus_client's own Counter and Histogram would."""

from __future__ import annotations

import json
import time

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from metadata_relay.http.edge import (
    LATENCY_BUCKETS,
    REQUEST_METRICS,
    Edge,
    RequestCollector,
    RequestIds,
    RequestMetrics,
)
from metadata_relay.observability import render_metrics


def test_request_ids_echoed_only_when_printable() -> None:
    ids = RequestIds()
    assert ids(b"abc-123") == b"abc-123"
    assert ids(b"a\tb c") == b"a\tb c"
    assert ids(b"x" * 128) == b"x" * 128
    generated = [ids(v) for v in (None, b"", b"x" * 129, b"a\x01b", b"a\x7fb", b"caf\xc3\xa9")]
    assert len(set(generated)) == 6  # each one fresh and unique
    prefix = generated[0].split(b"-")[0]
    assert all(g.split(b"-")[0] == prefix and len(prefix) == 8 for g in generated)


@given(st.binary(max_size=200))
def test_request_id_is_always_a_valid_header_value(given_id: bytes) -> None:
    rid = RequestIds()(given_id)
    assert 0 < len(rid) <= 128
    assert all(b == 9 or 0x20 <= b <= 0x7e for b in rid)


def test_header_lines_are_the_headers() -> None:
    lines = b"".join(b"%s: %s\r\n" % h for h in Edge.headers(b"r-1"))
    assert Edge.header_lines(b"r-1") == lines
    assert lines.startswith(b"x-request-id: r-1\r\naccess-control-allow-origin: *\r\n")


def test_a_refusal_is_a_whole_closing_answer() -> None:
    raw = Edge(metrics=RequestMetrics()).refusal(431, "headers_too_large", "too big",
                                                 time.perf_counter())
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
    names = [line.split(b":")[0] for line in lines[1:]]
    assert names == [b"date", b"content-type", b"content-length", b"connection",
                     b"x-request-id", b"access-control-allow-origin",
                     b"access-control-expose-headers"]
    assert json.loads(body) == {"error": "headers_too_large", "message": "too big"}
    assert f"content-length: {len(body)}".encode() in lines


def scrape(collector: object) -> str:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_scrape_equals_prometheus_clients_own_counter_and_histogram() -> None:
    ours = RequestMetrics()
    theirs = CollectorRegistry()
    counter = Counter("relay_http_requests", "HTTP requests by route and status class",
                      ["route", "status"], registry=theirs)
    histogram = Histogram("relay_http_request_duration_seconds",
                          "HTTP request latency by route", ["route"],
                          buckets=LATENCY_BUCKETS, registry=theirs)
    observations = [("/a", 200, 0.0001), ("/a", 200, 0.0005), ("/a", 404, 0.003),
                    ("/b/{id}", 503, 0.25), ("/b/{id}", 200, 20.0), ("/a", 200, 1.0),
                    ("unmatched", 400, 0.00002)]
    for route, status, seconds in observations:
        ours.observe(route, status, seconds)
        counter.labels(route, f"{status // 100}xx").inc()
        histogram.labels(route).observe(seconds)

    def series(text: str) -> list[str]:  # without the _created samples only theirs have
        return sorted(line for line in text.splitlines()
                      if line and "_created" not in line)

    assert series(scrape(RequestCollector(ours))) == series(generate_latest(theirs).decode())


def test_the_process_collector_is_in_metrics() -> None:
    REQUEST_METRICS.observe("/test/edge", 200, 0.001)
    text = render_metrics().decode()
    assert 'relay_http_requests_total{route="/test/edge",status="2xx"}' in text
    assert 'relay_http_request_duration_seconds_bucket{le="+Inf",route="/test/edge"}' in text
