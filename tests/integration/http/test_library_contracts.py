"""What the listener relies on from uvicorn, websockets, httptools and prometheus_client, each a
documented behaviour, checked against the installed versions so an upgrade that changes one
fails here by name (the pins in pyproject.toml keep upgrades deliberate; the private-name ban is
tests/unit/test_no_private_internals.py; prometheus_client's custom ``Collector`` scrape is
tests/unit/http/test_edge.py; llhttp's framing is tests/unit/http/test_h1.py)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from packaging.requirements import Requirement
from starlette.types import Receive, Scope, Send
from uvicorn.config import HTTP_PROTOCOLS, WS_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from metadata_relay.config import load_settings
from metadata_relay.http import connection, websocket
from metadata_relay.http.edge import Edge
from metadata_relay.http.fastpath import FastPath
from metadata_relay.http.links import Links
from metadata_relay.http.server import Service, uvicorn_config
from tests.tools import free_port

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
PINNED = ("uvicorn", "websockets", "httptools", "prometheus-client")


def test_installed_versions_are_inside_the_pins() -> None:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    reqs = {Requirement(d).name: Requirement(d) for d in deps}
    for name in PINNED:
        spec = reqs[name].specifier
        assert any(s.operator == "<" for s in spec), f"{name} has no upper bound"
        installed = importlib.metadata.version(name)
        assert spec.contains(installed), f"{name} {installed} outside {spec}"


def test_the_protocols_we_compose_are_the_ones_uvicorn_names() -> None:
    """``http="httptools"`` and ``ws="websockets-sansio"`` (documented option values) are the
    classes the listener wraps, and both are plain asyncio protocols."""
    assert import_from_string(HTTP_PROTOCOLS["httptools"]) is HttpToolsProtocol
    assert import_from_string(WS_PROTOCOLS["websockets-sansio"]) is WebSocketsSansIOProtocol
    for cls in (HttpToolsProtocol, WebSocketsSansIOProtocol):
        assert issubclass(cls, asyncio.Protocol)


def test_a_given_protocol_class_is_used_as_is() -> None:
    config = uvicorn.Config(lambda *a: None, http=connection.HttpConnection,
                            ws=websocket.RelayWebSocketProtocol, log_config=None)
    config.load()
    assert config.http_protocol_class is connection.HttpConnection
    assert config.ws_protocol_class is websocket.RelayWebSocketProtocol


def test_websockets_masking_helper_is_the_documented_one() -> None:
    from websockets.speedups import apply_mask as fast
    from websockets.utils import apply_mask as documented

    data, key = os.urandom(3000), os.urandom(4)
    assert fast(data, key) == documented(data, key)
    assert "apply_mask" in websockets.utils.__all__


class Recorder:
    """An ASGI app that keeps every scope and the links' view of it; accepts WebSockets and
    echoes one text message."""

    def __init__(self) -> None:
        self.links: Links | None = None
        self.seen: list[tuple[Scope, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.links is not None
        self.seen.append((scope, self.links.find(scope)))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})
        await receive()


created: list[tuple[str, set[str]]] = []


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, int]]:
    app = Recorder()
    port = free_port()
    settings = load_settings({"HOST": "127.0.0.1", "PORT": str(port)})
    config = uvicorn_config(settings, Service(app, Edge(), None))
    app.links = config.app.links
    http, ws = config.http, config.ws

    class RecordingHttp(http):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            created.append(("http", set(kwargs)))
            super().__init__(**kwargs)

    class RecordingWs(ws):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            created.append(("ws", set(kwargs)))
            super().__init__(**kwargs)

    config.http, config.ws = RecordingHttp, RecordingWs
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    try:
        yield app, port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


async def test_uvicorn_creates_the_protocols_with_the_documented_arguments(
        recorder: tuple[Recorder, int]) -> None:
    """Keyword arguments ``config``, ``server_state``, ``app_state`` (and ``_loop`` for the
    connection protocol): the listener passes them on to uvicorn's protocols untouched."""
    _, port = recorder
    created.clear()
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert created[0] == ("http", {"config", "server_state", "app_state", "_loop"})
    assert created[1][0] == "ws" and created[1][1] <= {"config", "server_state", "app_state",
                                                       "_loop"}


async def test_scopes_carry_the_connections_addresses(recorder: tuple[Recorder, int]) -> None:
    """ASGI ``server``/``client`` are the transport's local and peer address (what the links
    key on), for requests and for WebSockets, and an upgrade hands the connection to the
    WebSocket protocol through ``transport.set_protocol``."""
    app, port = recorder
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200 ")
    local = writer.get_extra_info("sockname")
    writer.close()
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    http = [(s, linked) for s, linked in app.seen if s["type"] == "http"]
    assert len(http) == 2 and all(isinstance(linked, connection.HttpConnection)
                                  for _, linked in http)
    assert tuple(http[0][0]["client"]) == tuple(local[:2])
    (scope, linked), = [(s, linked) for s, linked in app.seen if s["type"] == "websocket"]
    assert isinstance(linked, websocket.RelayWebSocketProtocol)
    assert linked.own_reader and scope["extensions"][websocket.DIRECT] is linked


async def test_uvicorn_derives_path_and_query_as_the_fast_path_does(
        recorder: tuple[Recorder, int]) -> None:
    """``FastPath.split_target`` (httptools.parse_url + unquote) gives the ``path`` and
    ``query_string`` uvicorn puts in the scope for the same target."""
    app, port = recorder
    targets = [b"/tmdb/tv/shows/1399", b"/a%20b/c?x=%20&y", b"http://h:1/p/q?z=1",
               b"/x?", b"/caf%C3%A9", b"/p#frag", b"/%2F?a=b%26c"]
    fast = FastPath(None, Edge())  # type: ignore[arg-type]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for target in targets:
        writer.write(b"GET " + target + b" HTTP/1.1\r\nhost: t\r\n\r\n")
        await reader.readuntil(b"ok")
    writer.close()
    scopes = [s for s, _ in app.seen if s["type"] == "http"][-len(targets):]
    for target, scope in zip(targets, scopes, strict=True):
        assert fast.split_target(target) == (scope["path"], scope["query_string"]), target
