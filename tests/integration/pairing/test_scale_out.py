"""Two service processes sharing one real redis-server: an instance on replica A reaches
its device on replica B (claims, presence and messages through Redis)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.pairing.helpers import (
    Relay,
    closed,
    create_claim,
    fresh_ip,
    new_key,
    recv,
    recv_type,
    register_ws,
    roundtrip,
    send,
)
from tests.tools import ServiceProcess, free_port, require_tool, start_service


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    exe = require_tool("redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def replicas(tmp_path: Path, redis_url: str) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    env = {"REDIS_URL": redis_url, "TURN_SECRET": "common-turn", "RELAY_TOKEN_SECRET": "common-tok"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_service(tmp_path / "a", env)
    try:
        b = start_service(tmp_path / "b", env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    b.stop()
    a.stop()


async def test_instance_on_a_reaches_client_on_b(replicas) -> None:
    a, b = Relay(replicas[0].url), Relay(replicas[1].url)
    key, home = new_key(), fresh_ip()
    inst = await register_ws(a, "spread", key, ip=home)
    code = (await create_claim(inst, user="u-s"))["code"]

    # redemption and connect on the other replica
    status, body, _ = await b.request("POST", f"/relay/claim/{code}")
    assert status == 200, body
    assert body["instance_id"] == "spread" and body["online"] is True
    player = await b.client()
    await send(player, {"type": "connect", "claim_code": code})
    connected = await recv(player)
    assert connected["type"] == "connected", connected
    sid = connected["session_id"]
    assert connected["public_key"] == key and connected["user_id"] == "u-s"
    connection = await recv(inst)
    assert connection == {"type": "connection", "session_id": sid,
                          "ice_servers": connection["ice_servers"]}

    # messages both ways across replicas
    for i in range(5):
        p = base64.b64encode(f"to-instance-{i}".encode()).decode()
        await send(player, {"type": "message", "payload": p})
        assert await recv(inst) == {"type": "relay_message", "session_id": sid, "payload": p}
        q = base64.b64encode(f"to-player-{i}".encode()).decode()
        await send(inst, {"type": "relay_message", "session_id": sid, "payload": q})
        assert await recv(player) == {"type": "message", "payload": q}
    await send(inst, {"type": "webrtc_answer", "session_id": sid, "payload": "{}"})
    assert await recv(player) == {"type": "webrtc_answer", "payload": "{}"}

    # another instance on A cannot reach B's session
    intruder = await register_ws(a, "intruder", new_key())
    await send(intruder, {"type": "relay_message", "session_id": sid, "payload": "ZXZpbA=="})
    await roundtrip(intruder)
    await send(inst, {"type": "relay_message", "session_id": sid, "payload": "b2s="})
    assert await recv(player) == {"type": "message", "payload": "b2s="}

    # consumed on A: rejected on B
    await send(inst, {"type": "consume_claim", "claim_code": code})
    await roundtrip(inst)
    status, _, _ = await b.request("POST", f"/relay/claim/{code}")
    assert status == 400

    # the player leaves on B: A's instance is told
    await player.close()
    assert (await recv_type(inst, "session_closed"))["session_id"] == sid
    await intruder.close()

    # someone else with the (public) key, on B, while the instance pings on A: refused
    thief = await b.instance(ip=fresh_ip())
    await send(thief, {"type": "register", "instance_id": "spread", "public_key": key})
    assert (await recv(thief))["code"] == "instance_connected"
    assert await closed(thief) == 1013
    await roundtrip(inst)
    # instance reconnects through B (mydia, same host): the socket on A is replaced, and
    # the instance stays online
    inst_b = await register_ws(b, "spread", key, ip=home)
    assert (await recv(inst))["code"] == "replaced"
    again = await a.client()
    await send(again, {"type": "connect", "instance_id": "spread"})
    assert (await recv(again))["type"] == "connected"
    assert (await recv(inst_b))["type"] == "connection"
    await again.close()
    # offline once its socket closes, seen from both replicas
    await inst_b.close()
    for relay in (a, b):
        for _ in range(100):
            late = await relay.client()
            await send(late, {"type": "connect", "instance_id": "spread"})
            msg = await recv(late)
            await late.close()
            if msg.get("message") == "Instance is offline":
                break
            await asyncio.sleep(0.05)
        assert msg == {"type": "error", "message": "Instance is offline"}


async def test_redis_down_degrades_then_recovers(tmp_path: Path) -> None:
    exe = require_tool("redis-server")
    port = free_port()
    svc = start_service(tmp_path, {"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    proc = None
    try:
        relay = Relay(svc.url)
        status, health, _ = await relay.request("GET", "/health")
        assert status == 200 and health["status"] == "degraded"
        assert health["pairing"] == "degraded"
        # local pairing keeps working on this replica
        inst = await register_ws(relay, "lonely", new_key())
        code = (await create_claim(inst))["code"]
        player = await relay.client()
        await send(player, {"type": "connect", "claim_code": code})
        assert (await recv(player))["type"] == "connected"
        await player.close()
        await inst.close()
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            _, health, _ = await relay.request("GET", "/health")
            if health["status"] == "ok":
                break
            await asyncio.sleep(0.1)
        assert health["status"] == "ok" and health["pairing"] == "ok"
    finally:
        svc.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(10)


async def test_guess_limits_are_shared_by_replicas(replicas) -> None:
    """Failed guesses count across replicas (Redis): spreading them over replicas buys a
    guesser nothing; a valid code still redeems from another address."""
    a, b = Relay(replicas[0].url), Relay(replicas[1].url)
    inst = await register_ws(a, "budgeted", new_key())
    code = (await create_claim(inst))["code"]
    ip = fresh_ip()
    for relay in (a, b, a, b, a):
        status, _, _ = await relay.request("POST", "/relay/claim/BADCODE2", ip=ip)
        assert status == 400
    for relay in (a, b):
        status, body, _ = await relay.request("POST", f"/relay/claim/{code}", ip=ip)
        assert status == 429 and body["error"] == "rate_limited"
    status, _, _ = await b.request("POST", f"/relay/claim/{code}", ip=fresh_ip())
    assert status == 200
    await inst.close()
