"""The one uvicorn configuration: the CLI serves with it and tests start the service with it.

HTTP/1.1 is httptools with fresh cache hits answered before ASGI (:mod:`.fastpath`, P1);
WebSockets are ``websockets``' sans-I/O protocol with the relay lane (:mod:`.websocket`, W1).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from metadata_relay.config import Settings
from metadata_relay.http.fastpath import FastPathProtocol
from metadata_relay.http.websocket import MAX_MESSAGE_BYTES, RelayWebSocketProtocol

GRACEFUL_SHUTDOWN = 10


def uvicorn_config(settings: Settings, app: ASGIApp, **overrides: Any) -> uvicorn.Config:
    """The production configuration; ``overrides`` (tests only) replace single options."""
    options: dict[str, Any] = {
        "host": settings.HOST,
        "port": settings.PORT,
        "loop": "uvloop",
        "http": FastPathProtocol,
        "ws": RelayWebSocketProtocol,
        "ws_max_size": MAX_MESSAGE_BYTES,
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN,
        "proxy_headers": False,
    }
    return uvicorn.Config(app, **{**options, **overrides})


def serve(settings: Settings, app: ASGIApp) -> bool:
    """Serve until SIGTERM/SIGINT on a new event loop; False when start-up failed."""
    server = uvicorn.Server(uvicorn_config(settings, app))
    server.run()
    return server.started


@asynccontextmanager
async def serving(settings: Settings, app: ASGIApp,
                  **overrides: Any) -> AsyncIterator[uvicorn.Server]:
    """Serve on the running event loop while the context is open (tests, benchmarks)."""
    server = uvicorn.Server(uvicorn_config(settings, app, **overrides))
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
