"""http/h1.py: the listener's request reader. Strict, and wherever it accepts a request it frames
it exactly as uvicorn's parser (httptools / llhttp, with uvicorn's settings) does: same method,
target, headers, keep-alive, and the same end of message. That agreement is what rules out
request smuggling between the fast path and uvicorn's path."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metadata_relay.http.h1 import (
    CHUNKED,
    Body,
    BodyError,
    HeadError,
    check_partial,
    head_end,
    parse_head,
    skip_empty_lines,
    status_line,
)


def head(raw: bytes):
    end = head_end(raw, 0)
    assert end >= 0
    return parse_head(raw[:end])


def test_a_plain_get() -> None:
    h = head(b"GET /tmdb/tv/shows/1?x=1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: r\r\n\r\n")
    assert (h.method, h.target, h.version) == (b"GET", b"/tmdb/tv/shows/1?x=1", b"1.1")
    assert h.headers == [(b"host", b"a"), (b"x-request-id", b"r")]
    assert h.keep_alive and h.length == 0 and h.upgrade is None and not h.expect


@pytest.mark.parametrize("raw, keep_alive", [
    (b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nhost: a\r\nconnection: keep-alive, CLOSE\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n", False),  # uvicorn closes 1.0
])
def test_keep_alive_as_uvicorn_decides(raw: bytes, keep_alive: bool) -> None:
    assert head(raw).keep_alive is keep_alive


def test_bodies_and_upgrades() -> None:
    assert head(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 12\r\n\r\n").length == 12
    assert head(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: Chunked\r\n\r\n"
                ).length == CHUNKED
    ws = head(b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: Upgrade\r\nupgrade: WebSocket\r\n\r\n")
    assert ws.upgrade == b"websocket"
    # an Upgrade header without "Connection: upgrade" is no upgrade (llhttp agrees)
    assert head(b"GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n\r\n").upgrade is None


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\nno colon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\nname : value\r\n\r\n", 400),  # space before colon
    (b"GET / HTTP/1.1\r\nhost: a\r\nx: a\r\n folded\r\n\r\n", 400),  # obs-fold
    (b"GET / HTTP/1.1\r\nhost: a\nx: bare LF\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\nx: a\rb\r\n\r\n", 400),  # bare CR
    (b"GET / HTTP/1.1\r\nhost: a\r\nx: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: +1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 0x10\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: x\r\n\r\n",
     400),
    (b"GET / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\nconnection: upgrade\r\n\r\n", 400),
    (b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
     b"content-length: 5\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nhost: a\r\n\r\n", 505),
    (b"GET / HTTP/1.1 x\r\nhost: a\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"GET /a b HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"GET /\xc3\xa9 HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"GET example.com:443 HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nhost: a\r\n\r\n", 400),  # asterisk form only for OPTIONS
    (b"GET http://a HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"CONNECT a:443 HTTP/1.1\r\nhost: a\r\n\r\n", 400),
    (b"CONNECT /x HTTP/1.1\r\nhost: a\r\n\r\n", 501),
    (b"BREW /pot HTTP/1.1\r\nhost: a\r\n\r\n", 501),
    (b"get / HTTP/1.1\r\nhost: a\r\n\r\n", 501),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
])
def test_refused_heads(raw: bytes, status: int) -> None:
    with pytest.raises(HeadError) as err:
        head(raw)
    assert err.value.status == status


def test_too_many_fields() -> None:
    raw = b"GET / HTTP/1.1\r\nhost: a\r\n" + b"x: 1\r\n" * 100 + b"\r\n"
    with pytest.raises(HeadError) as err:
        head(raw)
    assert err.value.status == 431


@pytest.mark.parametrize("partial, bad", [
    (b"GET / HT", False), (b"G", False), (b"GET", False), (b"OPTIONS ", False),
    (b"\x16\x03\x01\x02\x00", True), (b" GET /", True), (b"GET /\r\n", True),
    (b"GE\x00T", True), (b"GET / HTTP/1.1\r\nhost: a\r\n", False),
    (b"GET / HTTP/7.1\r\n", True),
])
def test_a_hopeless_partial_head_is_refused_before_its_end(partial: bytes, bad: bool) -> None:
    if bad:
        with pytest.raises(HeadError):
            check_partial(partial, 0)
    else:
        check_partial(partial, 0)


def test_empty_lines_before_a_request_are_skipped() -> None:
    assert skip_empty_lines(b"\r\n\r\nGET") == 4
    assert skip_empty_lines(b"\r\nGET") == 2
    assert skip_empty_lines(b"\nGET") == 0


def test_status_lines_are_uvicorns() -> None:
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(431) == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


def feed_body(length: int, data: bytes, step: int) -> int:
    body = Body(length, 1024)
    used = 0
    while not body.done and used < len(data):
        used += body.take(data[used:used + step])
    assert body.done
    return used


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_bodies_are_delimited_in_any_pieces(step: int) -> None:
    assert feed_body(5, b"hello" + b"GET", step) == 5
    chunked = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n"
    assert feed_body(CHUNKED, chunked + b"GET / HTTP/1.1\r\n", step) == len(chunked)


@pytest.mark.parametrize("bad", [
    b"z\r\n", b"5\r\nhelloX\r\n", b"5\nhello\r\n", b"5 \r\nhello\r\n", b"-1\r\n",
    b"0\r\nbad trailer\r\n\r\n", b"1" * 16 + b"\r\n", b"5;" + b"e" * 2000 + b"\r\n",
])
def test_broken_chunked_bodies_are_refused(bad: bytes) -> None:
    body = Body(CHUNKED, 1024)
    with pytest.raises(BodyError):
        for i in range(len(bad)):
            body.take(bad[i:i + 1])


# --- agreement with uvicorn's parser -------------------------------------------------------

class Llhttp:
    """httptools as uvicorn sets it up; records what it parsed and where each message ended."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.messages: list[dict] = []
        self.current: dict = {}
        self.fed = 0
        self.ends: list[int] = []
        self.pos = 0

    def on_message_begin(self) -> None:
        self.current = {"url": b"", "headers": []}

    def on_url(self, url: bytes) -> None:
        self.current["url"] += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current["headers"].append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.current["head_fields"] = list(self.current["headers"])  # not trailers
        self.current["method"] = self.parser.get_method()
        self.current["version"] = self.parser.get_http_version().encode()
        self.current["keep_alive"] = (self.current["version"] != b"1.0"
                                      and self.parser.should_keep_alive())

    def on_message_complete(self) -> None:
        self.messages.append(self.current)
        self.ends.append(self.pos + 1)

    def feed(self, data: bytes) -> None:
        for i in range(len(data)):  # byte by byte: where each message ends
            self.pos = self.fed + i
            self.parser.feed_data(data[i:i + 1])
        self.fed += len(data)


def ours(stream: bytes) -> tuple[list, list[int]]:
    """(heads, end offsets) of the requests the listener would hand on, until one it refuses
    or an upgrade."""
    out, ends, pos = [], [], 0
    while pos < len(stream):
        pos += skip_empty_lines(stream[pos:])
        end = head_end(stream, pos)
        if end < 0:
            break
        h = parse_head(stream[pos:end])  # HeadError: the listener refuses, nothing goes on
        pos = end + 4
        if h.length:
            body = Body(h.length, 1024)
            pos += body.take(stream[pos:])
            if not body.done:
                break  # incomplete: not a whole message yet
        out.append(h)
        ends.append(pos)
        if h.upgrade is not None or not h.keep_alive:
            break
    return out, ends


names = st.sampled_from([b"host", b"x-request-id", b"accept-encoding", b"content-length",
                         b"transfer-encoding", b"connection", b"upgrade", b"expect", b"x-a",
                         b"Content-Length", b"Transfer-Encoding", b"HOST"])
values = st.one_of(
    st.sampled_from([b"chunked", b"close", b"keep-alive", b"upgrade", b"websocket", b"0", b"5",
                     b"gzip", b" 5 ", b"100-continue", b"Chunked", b"chunked ", b"\t3",
                     b"a, b", b"x"]),
    st.binary(max_size=8))
fields = st.lists(st.tuples(names, st.sampled_from([b": ", b":", b":\t", b" : "]), values),
                  max_size=5)
request = st.tuples(
    st.sampled_from([b"GET", b"POST", b"HEAD", b"OPTIONS", b"PUT"]),
    st.sampled_from([b"/", b"/tmdb/tv/shows/1?q=a%20b", b"http://h/x", b"*", b"/a#f"]),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    fields,
    st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n",
                     b"3\r\nabc\r\n0\r\nt: 1\r\n\r\n"]),
    st.sampled_from([b"", b"\r\n"]),
).map(lambda p: p[5] + p[0] + b" " + p[1] + b" " + p[2] + b"\r\n"
      + b"".join(n + sep + v + b"\r\n" for n, sep, v in p[3]) + b"\r\n" + p[4])


@settings(max_examples=400, deadline=None)
@given(st.lists(request, min_size=1, max_size=3))
def test_what_the_reader_accepts_llhttp_frames_the_same(requests: list[bytes]) -> None:
    stream = b"".join(requests)
    try:
        heads, ends = ours(stream)
    except (HeadError, BodyError):
        return  # refused here: uvicorn never sees it
    if not heads:
        return
    ll = Llhttp()
    complete = True
    try:
        ll.feed(stream[:ends[-1]])
    except httptools.HttpParserUpgrade:
        assert heads[-1].upgrade is not None
    except httptools.HttpParserError:
        # llhttp stricter still: uvicorn answers 400 and closes, nothing is desynchronised,
        # as long as the requests before were framed the same
        complete = False
    got = ll.messages
    assert ll.ends == ends[:len(ll.ends)]
    if complete and heads[-1].upgrade is None:
        assert len(got) == len(heads)
    for h, m in zip(heads, got, strict=False):
        assert (h.method, h.target, h.version) == (m["method"], m["url"], m["version"])
        assert h.headers == m["head_fields"]
        assert h.keep_alive == m["keep_alive"]


def test_the_parse_memos_stay_small_whatever_clients_send() -> None:
    from metadata_relay.http import h1

    for i in range(3 * h1.FIELDS_SEEN_MAX):
        head(b"GET / HTTP/1.1\r\nhost: a\r\nx-%d: %s\r\n\r\n" % (i, b"v" * (i % 600)))
    assert len(h1._FIELDS_SEEN) <= h1.FIELDS_SEEN_MAX
    assert len(h1._SECTIONS_SEEN) <= h1.SECTIONS_SEEN_MAX
    assert max(map(len, h1._FIELDS_SEEN)) <= h1.FIELD_SEEN_MAX_BYTES
    assert max(map(len, h1._SECTIONS_SEEN)) <= h1.SECTION_SEEN_MAX_BYTES
    # a memoised section parses to what a fresh parse gives
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"
    first, again = head(raw), head(raw)
    assert first.headers == again.headers == [(b"host", b"a"), (b"accept", b"*/*")]
