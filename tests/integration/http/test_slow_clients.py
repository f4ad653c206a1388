"""Slow and oversized clients on the public listener (issue 13, item 6), on real sockets: every
connection, whichever path would answer it (fast path or uvicorn's), has a header-read
timeout, an idle keep-alive timeout, a body timeout and a header-size cap. Timeouts are set
short through the settings; the waits here are socket reads bounded by them."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.doubles.fake_upstream import FakeUpstream
from tests.integration.http.test_bodies import rss_kb
from tests.relay_server import serve_relay
from tests.tools import ServiceProcess, start_service

HEADER_TIMEOUT = 0.6
IDLE_TIMEOUT = 0.4
BODY_TIMEOUT = 0.6
MAX_HEADER = 8192
LIMITS = {"HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "HTTP_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
          "HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT), "HTTP_MAX_HEADER_BYTES": str(MAX_HEADER)}
SLACK = 0.5  # scheduling on a shared 2-core machine
HIT = "/tmdb/tv/shows/1399"
MIB = 1024 * 1024


@pytest.fixture
async def port(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[int]:
    async with serve_relay(tmp_path, {**upstream.env(), **LIMITS}) as base:
        yield int(base.rsplit(":", 1)[1])


async def trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                  pieces: list[bytes]) -> tuple[bytes, float]:
    """Send ``pieces`` 0.1 s apart until the server answers; (the answer, seconds taken)."""
    started = time.monotonic()
    answer = b""
    for piece in pieces:
        writer.write(piece)
        try:
            answer = await asyncio.wait_for(reader.read(), 0.1)
        except TimeoutError:
            continue
        break
    return answer, time.monotonic() - started


async def read_until_closed(reader: asyncio.StreamReader, limit: float) -> bytes:
    """Everything the server sends until it closes; fails after ``limit`` seconds."""
    return await asyncio.wait_for(reader.read(), limit)


def request(path: str, *headers: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "host: t", *headers]) + "\r\n\r\n").encode()


async def test_a_silent_connection_is_closed_within_the_header_timeout(port: int) -> None:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await read_until_closed(reader, HEADER_TIMEOUT + SLACK) == b""
    assert time.monotonic() - started >= HEADER_TIMEOUT - 0.05
    writer.close()


@pytest.mark.parametrize("path", [HIT, "/health"], ids=["proxy", "app"])
async def test_a_trickled_head_is_cut_at_the_header_timeout(port: int, path: str) -> None:
    """One byte every 0.1 s: the head is never complete; 408 and closed at the timeout,
    however steadily bytes keep coming."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = request(path, "x-a: " + "b" * 200)
    answer, elapsed = await trickle(writer, reader, [bytes((b,)) for b in head])
    assert HEADER_TIMEOUT - 0.05 <= elapsed <= HEADER_TIMEOUT + SLACK, elapsed
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_either_path(
        port: int, upstream: FakeUpstream) -> None:
    for path in (HIT, "/health"):  # a miss then (below) hits: uvicorn's path and the fast path
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(path))
        await reader.readuntil(b"\r\n\r\n")
        started = time.monotonic()
        await read_until_closed(reader, IDLE_TIMEOUT + SLACK)
        assert time.monotonic() - started >= IDLE_TIMEOUT - 0.1
        writer.close()
    # requests keep a connection open past the idle timeout (fast hits included)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    count = 0
    while time.monotonic() - started < IDLE_TIMEOUT * 3:
        writer.write(request(HIT))
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"x-cache: HIT" in head
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        count += 1
        await asyncio.sleep(IDLE_TIMEOUT / 2)
    assert count >= 5
    await read_until_closed(reader, IDLE_TIMEOUT + SLACK)
    writer.close()


async def test_a_body_that_stops_coming_is_cut_at_the_body_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /relay/instances HTTP/1.1\r\nhost: t\r\ncontent-type: application/json"
                 b"\r\ncontent-length: 1000\r\n\r\n{\"instance_id\": ")
    answer, elapsed = await trickle(writer, reader, [b" "] * 20)  # a byte every 0.1 s
    assert BODY_TIMEOUT - 0.05 <= elapsed <= BODY_TIMEOUT + SLACK
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    writer.close()


@pytest.mark.parametrize("path", [HIT, "/health"], ids=["proxy", "app"])
async def test_a_head_over_the_cap_gets_431(port: int, path: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(path, "x-big: " + "a" * MAX_HEADER))
    answer = await read_until_closed(reader, 5)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "headers_too_large"
    # just under the cap is fine
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(path, "x-big: " + "a" * (MAX_HEADER - 200)))
    assert b" 200 " in (await reader.readuntil(b"\r\n"))
    writer.close()


async def test_400_slowloris_connections_are_all_closed(port: int) -> None:
    async def slowloris() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"GET /health HTTP/1.1\r\nhost: t\r\n")
        try:
            while True:
                writer.write(b"x-a: b\r\n")
                try:
                    if await asyncio.wait_for(reader.read(), 0.2) is not None:
                        return time.monotonic() - started
                except TimeoutError:
                    continue
        finally:
            writer.close()

    took = await asyncio.wait_for(asyncio.gather(*(slowloris() for _ in range(400))), 20)
    assert max(took) <= HEADER_TIMEOUT + 2 * SLACK + 1, sorted(took)[-5:]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(tmp_path_factory.mktemp("slow"), {"TURN_ENABLED": "false"})
    yield svc
    svc.stop()


def test_a_64_mib_header_is_refused_without_growing_the_process(service: ServiceProcess
                                                                 ) -> None:
    """The default cap (16 KiB) holds: the head is refused with 431 once past it and the
    connection closed; the process does not buffer the rest."""
    before = rss_kb(service.proc.pid)
    answer = b""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\nx-big: ")
        block = b"a" * MIB
        s.setblocking(False)
        sent = 0
        while sent < 64 * MIB:
            try:
                sent += s.send(block)
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer += s.recv(65536)
                if answer.endswith(b"}") or answer == b"":
                    break
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
        s.setblocking(True)
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert sent < 64 * MIB  # cut off long before the end
    assert rss_kb(service.proc.pid) - before < 32 * 1024
    if answer:  # the reset may beat the answer to the client; when it does not, it is 431
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
        s.sendall(request("/health"))
        assert b" 200 " in s.recv(4096)


async def test_client_that_stops_reading_is_dropped(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Pipelined requests whose answers the client never reads: once the connection pushes
    back, the client has HTTP_WRITE_TIMEOUT to read on, then it is dropped (its answers are
    not kept buffered, nor its request held, for ever)."""
    env = {**upstream.env(), **LIMITS, "HTTP_WRITE_TIMEOUT": "0.5"}
    async with serve_relay(tmp_path, env) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # read nothing
            sock.connect(("127.0.0.1", port))
            sock.settimeout(5)
            await asyncio.to_thread(sock.sendall, request("/metrics") * 3000)  # ~30 MB back
            state = None
            for _ in range(100):  # the connection's TCP state, read without reading data
                await asyncio.sleep(0.1)
                state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
                if state not in (TCP_ESTABLISHED,):
                    break
            assert state != TCP_ESTABLISHED, "a client that reads nothing kept its connection"


TCP_ESTABLISHED = 1
