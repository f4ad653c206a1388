from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.doubles.clock import ManualClock
from tests.integration.pairing.helpers import Relay
from tests.relay_server import serve_relay
from tests.tools import ServiceProcess, start_service

TURN_SECRET = "test-turn-secret-not-for-production"
TOKEN_SECRET = "test-token-secret"
# ICE servers name an external TURN server: credentials are issued, no TURN server starts
RELAY_ENV = {"TURN_SECRET": TURN_SECRET, "RELAY_TOKEN_SECRET": TOKEN_SECRET,
             "TURN_URI": "turn:127.0.0.1:3478"}


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """The service in this process (production uvicorn configuration) with a clock the
    test advances."""
    clock = ManualClock()
    async with serve_relay(tmp_path, RELAY_ENV, clock=clock) as url:
        yield Relay(url, clock)


@pytest.fixture
def relay_proc(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The service as a process, as users run it (logs, kill -9)."""
    svc = start_service(tmp_path, {"TURN_SECRET": TURN_SECRET,
                                   "RELAY_TOKEN_SECRET": TOKEN_SECRET})
    yield svc
    svc.stop()
