"""The socket limits are the relay's own, not the WebSocket implementation's: they hold on
uvicorn's legacy ``websockets`` implementation and on plain ``websockets-sansio`` (no
synchronous lane, everything through ASGI) too; the product runs ``http/websocket.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.pairing import test_limits, test_security
from tests.integration.pairing.helpers import Relay
from tests.relay_server import serve_relay


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated")
@pytest.mark.parametrize("check", [
    test_security.test_oversize_frames_close_1009,
    test_limits.test_slow_consumer_closed_with_1008,
    test_limits.test_client_message_rate_limit_closes_1008,
], ids=["1009", "slow-consumer-1008", "flood-1008"])
@pytest.mark.parametrize("ws", ["websockets", "websockets-sansio"])
async def test_limits_on_other_implementations(tmp_path: Path, check, ws: str) -> None:
    async with serve_relay(tmp_path, ws=ws) as url:
        await check(Relay(url))
