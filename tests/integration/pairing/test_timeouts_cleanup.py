"""Heartbeat and idle timeouts and the clean-up sweep, at the contract's values, on a clock
the test advances (no real waiting)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from metadata_relay.pairing.limits import PairingLimits
from tests.doubles.clock import ManualClock
from tests.integration.pairing.conftest import RELAY_ENV
from tests.integration.pairing.helpers import (
    Relay,
    closed,
    create_claim,
    new_key,
    recv,
    register_ws,
    roundtrip,
    send,
)
from tests.relay_server import DB_NAME, serve_relay


async def test_defaults_are_the_contract() -> None:
    d = PairingLimits()
    assert (d.register_per_min, d.connect_per_min, d.guesses_per_ip) == (10, 30, 5)
    assert (d.node_claims_per_ip, d.node_claims_per_prefix) == (10, 60)  # /pairing/claim
    assert (d.instance_heartbeat, d.client_idle) == (60.0, 300.0)
    assert d.send_queue_bytes == 1024 * 1024
    assert (d.cleanup_interval, d.offline_after, d.claim_retention) == (300.0, 120.0, 86400.0)


async def test_heartbeat_and_idle_timeouts(relay: Relay) -> None:
    """An instance is closed 60 s after its last frame, a connected player 5 min after its
    last; traffic keeps them; the instance's close marks it offline."""
    inst = await register_ws(relay, "hb", new_key())
    player = await relay.client()
    await send(player, {"type": "connect", "instance_id": "hb"})
    assert (await recv(player))["type"] == "connected"
    assert (await recv(inst))["type"] == "connection"
    for _ in range(4):  # pings keep the instance past its heartbeat
        await relay.clock.advance(45)
        await roundtrip(inst)
    await relay.clock.advance(59)
    await roundtrip(player)  # the player's own traffic (a pong back) keeps it
    await relay.clock.advance(1)
    assert await closed(inst) == 1000
    _, info, _ = await relay.request("GET", "/relay/instances/hb/connect")
    assert info["online"] is False
    await relay.clock.advance(298)  # 299 s after the player's last frame
    await roundtrip(player)
    await relay.clock.advance(300)
    assert await closed(player) == 1000


async def test_cleanup_deletes_old_claims_and_marks_silent_offline(tmp_path: Path) -> None:
    """Every 5 min: claims expired or consumed more than 24 h ago are deleted, instances
    silent for 2 min marked offline, unless their socket is connected here."""
    clock = ManualClock()
    limits = PairingLimits(instance_heartbeat=7 * 86400)  # the socket waits out the day
    async with serve_relay(tmp_path, RELAY_ENV, pairing_limits=limits,
                           clock=clock) as url:
        relay = Relay(url, clock)
        token = await relay.register("silent", new_key())
        status, _, _ = await relay.request("PUT", "/relay/instances/silent/heartbeat",
                                           token=token)
        assert status == 200
        live = await register_ws(relay, "live", new_key())
        short = (await create_claim(live, ttl=1))["code"]
        used = (await create_claim(live))["code"]
        keep = (await create_claim(live, ttl=600))["code"]
        await send(live, {"type": "consume_claim", "claim_code": used})
        await roundtrip(live)
        _, info, _ = await relay.request("GET", "/relay/instances/silent/connect")
        assert info["online"] is True
        await clock.advance(86400 + 300)  # a day past the first two claims, one sweep
        for _ in range(100):
            db = sqlite3.connect(tmp_path / DB_NAME)
            codes = {r[0] for r in db.execute("SELECT code FROM relay_claims")}
            db.close()
            if len(codes) == 1:
                break
            await asyncio.sleep(0.01)
        assert codes == {keep} and short != keep != used
        _, info, _ = await relay.request("GET", "/relay/instances/silent/connect")
        assert info["online"] is False
        # a connected instance is never marked offline by the sweep
        _, info, _ = await relay.request("GET", "/relay/instances/live/connect")
        assert info["online"] is True
        await live.close()
