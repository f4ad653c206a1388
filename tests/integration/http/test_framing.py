"""The listener frames every request itself and hands uvicorn whole requests only: attempts to
smuggle a request past it are refused before anything reaches the app, bodies and pipelined
requests keep their order across the two paths, an upgrade waits for the answers before it, and
a client that half-closes still gets its answers. Real service process, raw sockets."""

from __future__ import annotations

import json
import socket

import pytest

from tests.doubles.fake_upstream import FakeUpstream
from tests.integration.http.rawhttp import WARM, Conn, cold_path, req
from tests.integration.http.test_fastpath import fast_hits
from tests.tools import ServiceProcess

SMUGGLED = "/tmdb/movies/424242"  # the request hidden in each attempt: must never be fetched
HIDDEN = f"GET {SMUGGLED} HTTP/1.1\r\nhost: x\r\n\r\n"
ATTEMPTS = [
    # CL.TE / TE.CL
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n"
    f"transfer-encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}",
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
    f"content-length: 3\r\n\r\n8\r\n{HIDDEN[:8]}\r\n0\r\n\r\n",
    # TE variants a lenient parser reads as chunked and a strict one does not
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked \r\n"
    f"transfer-encoding: identity\r\n\r\n0\r\n\r\n{HIDDEN}",
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ntransfer-encoding:\x0bchunked\r\n\r\n"
    f"0\r\n\r\n{HIDDEN}",
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ntransfer-encoding: xchunked\r\n\r\n"
    f"0\r\n\r\n{HIDDEN}",
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ntransfer-encoding\r\n : chunked\r\n\r\n"
    f"0\r\n\r\n{HIDDEN}",
    # two lengths
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n"
    f"content-length: {len(HIDDEN)}\r\n\r\n{HIDDEN}",
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ncontent-length: 0, {len(HIDDEN)}\r\n\r\n"
    f"{HIDDEN}",
    # line endings and folding
    f"GET {WARM} HTTP/1.1\nhost: x\n\n{HIDDEN}",
    f"GET {WARM} HTTP/1.1\r\nhost: x\r\nx-a: b\r\n content-length: {len(HIDDEN)}\r\n\r\n{HIDDEN}",
    f"GET {WARM} HTTP/1.1\rhost: x\r\n\r\n{HIDDEN}",
    # a bad chunk extension, a chunk longer than its size
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    f"0;\n\r\n\r\n{HIDDEN}",
    f"POST /relay/claim/ABCD HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    f"1\r\nab\r\n0\r\n\r\n{HIDDEN}",
]


@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_smuggling_attempts_are_refused_and_the_hidden_request_never_runs(
        svc: ServiceProcess, upstream: FakeUpstream, attempt: str) -> None:
    with Conn(svc.port) as c:
        c.send(attempt.encode("latin-1"))
        answers = []
        try:
            while True:
                answers.append(c.response())
        except EOFError:
            pass
    assert answers, "no answer"
    assert answers[-1].status in (400, 501), [a.status for a in answers]
    assert answers[-1].get("connection") == "close"
    assert all(a.get("x-cache") is None for a in answers)
    assert upstream.count("/3/movie/424242") == 0


def test_bodies_and_pipelined_requests_keep_their_order(svc: ServiceProcess) -> None:
    body = json.dumps({"code": "x"}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    miss = cold_path()
    with Conn(svc.port) as c:
        c.send(b"POST /relay/claim/ABCD2345 HTTP/1.1\r\nhost: x\r\nx-request-id: 1\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(body), body)
               + req(WARM, "x-request-id: 2")
               + b"POST /relay/claim/ABCD2345 HTTP/1.1\r\nhost: x\r\nx-request-id: 3\r\n"
                 b"transfer-encoding: chunked\r\n\r\n" + chunked
               + req(miss, "x-request-id: 4") + req(WARM, "x-request-id: 5"))
        got = [c.response() for _ in range(5)]
    assert [r.get("x-request-id") for r in got] == ["1", "2", "3", "4", "5"]
    assert [r.get("x-cache") for r in got] == [None, "HIT", None, "MISS", "HIT"]
    assert got[0].status == got[2].status and got[0].status in (400, 404, 429)


def test_a_body_split_anywhere_still_frames(svc: ServiceProcess) -> None:
    body = b'{"code": "ABCD2345"}'
    raw = (b"POST /relay/claim/ABCD2345 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
           b"5\r\n" + body[:5] + b"\r\n%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n"
           + req(WARM, "x-request-id: after"))
    for step in (1, 7):
        with Conn(svc.port) as c:
            for i in range(0, len(raw), step):
                c.send(raw[i:i + step])
            first, second = c.response(), c.response()
        assert first.status in (400, 404, 429)
        assert second.get("x-request-id") == "after" and second.get("x-cache") == "HIT"


def test_an_upgrade_waits_for_the_answers_before_it(svc: ServiceProcess) -> None:
    miss = cold_path()
    upgrade = (b"GET /relay/client/websocket HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n"
               b"connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"sec-websocket-version: 13\r\n\r\n")
    with Conn(svc.port) as c:
        c.send(req(miss) + upgrade)
        assert c.response().get("x-cache") == "MISS"
        while b"\r\n\r\n" not in c.buf:
            c._fill()
        assert c.buf.startswith(b"HTTP/1.1 101 ")


def test_answers_arrive_after_the_client_half_closes(svc: ServiceProcess) -> None:
    before = fast_hits(svc)
    with Conn(svc.port) as c:
        c.send(req(cold_path()) + req(WARM) + req(WARM))
        c.sock.shutdown(socket.SHUT_WR)
        got = [c.response() for _ in range(3)]
        assert c.closed_by_server()
    assert [r.get("x-cache") for r in got] == ["MISS", "HIT", "HIT"]
    assert fast_hits(svc) == before  # all behind the miss: uvicorn's path
