"""The service served in-process with the production uvicorn configuration
(:func:`metadata_relay.http.server.serving`) on a free loopback port (real sockets), for tests
that need many differently configured instances quickly. ``start_service`` in
:mod:`tests.tools` runs it as a process, as users do."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from metadata_relay.app import create_app
from metadata_relay.clock import Clock
from metadata_relay.config import load_settings
from metadata_relay.http.server import serving
from metadata_relay.pairing.limits import PairingLimits
from tests.tools import free_port

DB_NAME = "relay.db"


@contextlib.asynccontextmanager
async def serve_relay(tmp_path: Path, env: dict[str, str] | None = None, *,
                      pairing_limits: PairingLimits | None = None,
                      clock: Clock | None = None,
                      **overrides: Any) -> AsyncIterator[str]:
    """The app at ``http://127.0.0.1:<port>`` (TURN off unless ``env`` turns it on; the
    database is ``tmp_path / DB_NAME``); ``overrides``: uvicorn options that differ from the
    production configuration (say which and why at the call)."""
    port = free_port()
    settings = load_settings({"HOST": "127.0.0.1", "PORT": str(port), "TURN_ENABLED": "false",
                              "SQLITE_DB_PATH": str(tmp_path / DB_NAME), **(env or {})})
    app = create_app(settings, pairing_limits=pairing_limits, clock=clock)
    async with serving(settings, app, **overrides):
        yield f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        auto_decompress=False, headers={"accept-encoding": "identity"}
    ) as session:
        yield session


async def streamed_json(head: bytes, kib: int) -> AsyncIterator[bytes]:
    """A JSON object sent chunked, without a length: ``head`` (which opens a string), ``kib``
    KiB of letters, then the string and the object closed; for body caps that must hold while
    a body streams."""
    yield head
    for _ in range(kib):
        yield b"a" * 1024
    yield b'"}'
