"""http/fastpath.py, sans-I/O: which parsed heads it answers and with what bytes (the socket
side, against the ASGI path's bytes, is tests/integration/http/test_fastpath.py)."""

from __future__ import annotations

import pytest

from metadata_relay.http import fastpath
from metadata_relay.http.edge import Edge, RequestMetrics
from metadata_relay.http.fastpath import FastPath
from metadata_relay.http.h1 import head_end, parse_head
from metadata_relay.metadata.hits import HitAnswers
from tests.unit.metadata.test_hits import BODY, PATH, proxy_holding_path


@pytest.fixture
def fast(tmp_path) -> FastPath:
    return FastPath(HitAnswers(proxy_holding_path(tmp_path)), Edge(metrics=RequestMetrics()))


def head(*lines: str):
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return parse_head(raw[:head_end(raw, 0)])


def test_a_fresh_hit_is_answered_whole(fast: FastPath) -> None:
    answer = fast.answer(head(f"GET {PATH} HTTP/1.1", "host: a", "x-request-id: r1"))
    assert answer is not None
    raw, body = answer
    assert raw.startswith(b"HTTP/1.1 200 OK\r\ndate: ") and raw.endswith(b"\r\n\r\n")
    assert b"\r\nx-cache: HIT\r\n" in raw and b"\r\nx-request-id: r1\r\n" in raw
    assert b"connection: close" not in raw and body == BODY
    closing = fast.answer(head(f"GET {PATH} HTTP/1.0"))
    assert closing is not None and closing[0].endswith(b"connection: close\r\n\r\n")
    assert fast.edge.metrics.requests == {("/tmdb/tv/shows/{id}", 2): 2}


@pytest.mark.parametrize("lines", [
    (f"POST {PATH} HTTP/1.1", "host: a", "content-length: 0"),
    (f"GET {PATH} HTTP/1.1", "host: a", "content-length: 2"),
    (f"GET {PATH} HTTP/1.1", "host: a", "transfer-encoding: chunked"),
    (f"GET {PATH} HTTP/1.1", "host: a", "expect: 100-continue"),
    (f"GET {PATH} HTTP/1.1", "host: a", "connection: upgrade", "upgrade: websocket"),
    ("GET /tmdb/movies/1 HTTP/1.1", "host: a"),  # a miss
    ("GET /health HTTP/1.1", "host: a"),
    ("GET /tmdb/tv/shows/abc HTTP/1.1", "host: a"),
    ("OPTIONS * HTTP/1.1", "host: a"),
])
def test_everything_else_is_the_apps(fast: FastPath, lines: tuple[str, ...]) -> None:
    assert fast.answer(head(*lines)) is None
    assert fast.edge.metrics.requests == {}


def test_the_target_memo_keeps_short_targets_only(fast: FastPath) -> None:
    for i in range(2 * fastpath.TARGETS_MAX):
        fast.answer(head(f"GET {PATH}?q={'x' * (i % 900)} HTTP/1.1", "host: a"))
    assert len(fast._targets) <= fastpath.TARGETS_MAX
    assert max(map(len, fast._targets)) <= fastpath.TARGET_MAX_BYTES
