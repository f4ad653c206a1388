"""The relay's ASGI app served in-process by uvicorn on a free loopback port (real sockets),
for tests that need many differently configured instances quickly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn

from metadata_relay.app import create_app
from metadata_relay.config import load_settings
from metadata_relay.http_fastpath import FastPathProtocol
from tests.tools import free_port


@contextlib.asynccontextmanager
async def serve_relay(tmp_path: Path, env: dict[str, str], *, fastpath: bool = True,
                      **options: Any) -> AsyncIterator[str]:
    """The app on uvicorn with the HTTP protocol ``cli.py serve`` uses (``fastpath=False``:
    plain httptools, every request through ASGI); ``options``: more ``uvicorn.Config``."""
    port = free_port()
    full = {"HOST": "127.0.0.1", "PORT": str(port), "TURN_ENABLED": "false",
            "SQLITE_DB_PATH": str(tmp_path / "relay.db"), **env}
    settings = load_settings(full)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, lifespan="on",
                            log_config=None, loop="none",
                            http=FastPathProtocol if fastpath else "httptools",
                            **{"access_log": False, **options})
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        auto_decompress=False, headers={"accept-encoding": "identity"}
    ) as session:
        yield session
