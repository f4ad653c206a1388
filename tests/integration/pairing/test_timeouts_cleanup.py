"""Heartbeat/idle timeouts, budget cool-down and clean-up, with shortened limits
(real uvicorn server in-process; the contract's values are the PairingLimits defaults)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import websockets

from metadata_relay.pairing.limits import PairingLimits
from tests.integration.pairing.helpers import (
    Relay,
    create_claim,
    new_key,
    recv,
    register_ws,
    send,
)
from tests.relay_server import DB_NAME, serve_relay


async def closed(ws: websockets.ClientConnection, timeout: float = 10) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed:
        return ws.close_code


async def test_defaults_are_the_contract() -> None:
    d = PairingLimits()
    assert (d.register_per_min, d.redeem_per_min, d.connect_per_min) == (10, 5, 30)
    assert (d.instance_heartbeat, d.client_idle) == (60.0, 300.0)
    assert d.send_queue_bytes == 1024 * 1024
    assert (d.cleanup_interval, d.offline_after, d.claim_retention) == (300.0, 120.0, 86400.0)


async def test_heartbeat_and_idle_timeouts(tmp_path: Path) -> None:
    limits = PairingLimits(instance_heartbeat=0.6, client_idle=0.6)
    async with serve_relay(tmp_path, pairing_limits=limits) as url:
        relay = Relay(url)
        inst = await register_ws(relay, "hb", new_key())
        player = await relay.client()
        # pings keep both alive past the timeout
        for _ in range(4):
            await asyncio.sleep(0.25)
            await send(inst, {"type": "ping"})
            assert (await recv(inst))["type"] == "pong"
            await send(player, {"type": "ping"})
            assert (await recv(player))["type"] == "pong"
        # silence closes them; the instance goes offline
        assert await closed(inst) == 1000
        assert await closed(player) == 1000
        _, info, _ = await relay.request("GET", "/relay/instances/hb/connect")
        assert info["online"] is False


async def test_budget_cooldown_ends_and_honest_pairing_resumes(tmp_path: Path) -> None:
    limits = PairingLimits(failure_budget=5, failure_cooldown=1.0)
    async with serve_relay(tmp_path, pairing_limits=limits) as url:
        relay = Relay(url)
        inst = await register_ws(relay, "cool", new_key())
        code = (await create_claim(inst))["code"]
        for _ in range(6):
            await relay.request("POST", "/relay/claim/BADBAD22")
        status, _, _ = await relay.request("POST", f"/relay/claim/{code}")
        assert status == 429
        await asyncio.sleep(1.1)
        status, body, _ = await relay.request("POST", f"/relay/claim/{code}")
        assert status == 200 and body["instance_id"] == "cool"


async def test_cleanup_deletes_old_claims_and_marks_silent_offline(tmp_path: Path) -> None:
    limits = PairingLimits(cleanup_interval=0.2, offline_after=1.0, claim_retention=0.5)
    async with serve_relay(tmp_path, pairing_limits=limits) as url:
        relay = Relay(url)
        token = await relay.register("silent", new_key())
        status, _, _ = await relay.request("PUT", "/relay/instances/silent/heartbeat",
                                           token=token)
        assert status == 200
        live = await register_ws(relay, "live", new_key())
        short = (await create_claim(live, ttl=1))["code"]
        used = (await create_claim(live))["code"]
        keep = (await create_claim(live))["code"]
        await send(live, {"type": "consume_claim", "claim_code": used})
        _, info, _ = await relay.request("GET", "/relay/instances/silent/connect")
        assert info["online"] is True
        await asyncio.sleep(3.2)
        db = sqlite3.connect(tmp_path / DB_NAME)
        codes = {r[0] for r in db.execute("SELECT code FROM relay_claims")}
        assert short not in codes and used not in codes and keep in codes
        _, info, _ = await relay.request("GET", "/relay/instances/silent/connect")
        assert info["online"] is False
        # a connected instance is never marked offline by the sweep
        _, info, _ = await relay.request("GET", "/relay/instances/live/connect")
        assert info["online"] is True
        await live.close()
