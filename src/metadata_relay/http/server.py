"""The one uvicorn configuration: the CLI serves with it and tests start the service with it.

HTTP/1.1 connections are :mod:`.connection` (request heads read and limited there, fresh cache
hits answered before ASGI, everything else through uvicorn's ``httptools`` protocol); WebSockets
are uvicorn's ``websockets-sansio`` protocol with the relay lane (:mod:`.websocket`). Both are
bound here, by construction, to what they share with the app: the fast path and edge the app
was built with, and the :class:`~.links.Links` through which the app's outermost layer reports
back to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from metadata_relay.config import Settings
from metadata_relay.http import connection, websocket
from metadata_relay.http.edge import Edge
from metadata_relay.http.fastpath import FastPath
from metadata_relay.http.links import LinkMiddleware, Links

GRACEFUL_SHUTDOWN = 10
UVICORN_KEEP_ALIVE = 24 * 3600
"""uvicorn's own keep-alive timer, out of the way: it cannot see the requests the fast path
answers, so it would close busy connections; the listener's idle timeout applies instead."""


@dataclass(frozen=True)
class Service:
    """What :func:`metadata_relay.app.create_app` builds for the server: the ASGI app, and the
    fast path and edge the listener's protocols share with it (None: no fast path)."""

    app: ASGIApp
    edge: Edge
    fast: FastPath | None = None


def limits(settings: Settings) -> connection.ConnectionLimits:
    return connection.ConnectionLimits(
        header_timeout=settings.HTTP_HEADER_TIMEOUT,
        idle_timeout=settings.HTTP_IDLE_TIMEOUT,
        body_timeout=settings.HTTP_BODY_TIMEOUT,
        max_header_bytes=settings.HTTP_MAX_HEADER_BYTES,
        write_timeout=settings.HTTP_WRITE_TIMEOUT,
    )


def uvicorn_config(settings: Settings, service: Service, **overrides: Any) -> uvicorn.Config:
    """The production configuration; ``overrides`` (tests only) replace single uvicorn
    options (``ws="websockets-sansio"``: the plain protocol, without the relay lane)."""
    links = Links()
    options: dict[str, Any] = {
        "host": settings.HOST,
        "port": settings.PORT,
        "loop": "uvloop",
        "http": connection.bind(service.fast, service.edge, links, limits(settings)),
        "ws": websocket.bind(links, websocket.MAX_MESSAGE_BYTES),
        "ws_max_size": websocket.MAX_MESSAGE_BYTES,
        "lifespan": "on",
        "log_config": None,
        "access_log": False,  # the edge's (HTTP_ACCESS_LOG)
        "server_header": False,
        "timeout_keep_alive": UVICORN_KEEP_ALIVE,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN,
        # the links find a connection by the scope's client address: it must stay the peer's
        # (the edge reads X-Forwarded-For from TRUSTED_PROXIES itself)
        "proxy_headers": False,
    }
    options.update(overrides)
    if options["proxy_headers"] or options.get("limit_concurrency") is not None:
        raise ValueError("proxy_headers and limit_concurrency are not supported: requests "
                         "must reach the app with the connection's own addresses")
    return uvicorn.Config(LinkMiddleware(service.app, links), **options)


def serve(settings: Settings, service: Service) -> bool:
    """Serve until SIGTERM/SIGINT on a new event loop; False when start-up failed."""
    server = uvicorn.Server(uvicorn_config(settings, service))
    server.run()
    return server.started


@asynccontextmanager
async def serving(settings: Settings, service: Service,
                  **overrides: Any) -> AsyncIterator[uvicorn.Server]:
    """Serve on the running event loop while the context is open (tests, benchmarks)."""
    server = uvicorn.Server(uvicorn_config(settings, service, **overrides))
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what start-up raised
            raise RuntimeError("the server stopped during start-up")
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, GRACEFUL_SHUTDOWN + 5)
