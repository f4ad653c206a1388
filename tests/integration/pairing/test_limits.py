"""Every pairing limit of the contract, shown firing."""

from __future__ import annotations

import asyncio
import base64

import websockets

from tests.integration.pairing.helpers import (
    Relay,
    create_claim,
    fresh_ip,
    new_key,
    recv,
    recv_type,
    register_ws,
    roundtrip,
    send,
)
from tests.integration.pairing.rawclient import RawClient


def check_429(status: int, body: dict, headers: dict) -> None:
    assert status == 429
    assert body["error"] == "rate_limited" and body["retry_after"] >= 1
    assert int(headers["Retry-After"]) == body["retry_after"]


async def test_register_limit_10_per_minute_per_ip(relay: Relay) -> None:
    ip = fresh_ip()
    for i in range(10):
        await relay.register(f"rl-{i}", new_key(), ip=ip)
    status, body, headers = await relay.request(
        "POST", "/relay/instances", ip=ip,
        json_body={"instance_id": "rl-x", "public_key": new_key()})
    check_429(status, body, headers)
    # another address is unaffected
    assert await relay.register("rl-y", new_key())


async def test_redeem_limit_5_per_minute_shared_by_rest_and_socket(relay: Relay) -> None:
    inst = await register_ws(relay, "redeem-rl", new_key())
    code = (await create_claim(inst))["code"]
    ip = fresh_ip()
    for _ in range(3):
        status, _, _ = await relay.request("POST", f"/relay/claim/{code}", ip=ip)
        assert status == 200
    ws = await relay.client(ip=ip)
    for _ in range(2):
        await send(ws, {"type": "connect", "claim_code": "WRONG234"})
        assert (await recv(ws))["message"] == "Invalid or expired claim code"
    # sixth attempt from this address, valid code or not: refused on both paths
    status, body, headers = await relay.request("POST", f"/relay/claim/{code}", ip=ip)
    check_429(status, body, headers)
    await send(ws, {"type": "connect", "claim_code": code})
    err = await recv(ws)
    assert err["type"] == "error" and err["code"] == "rate_limited" and err["retry_after"] >= 1
    await ws.close()
    await inst.close()


async def test_connect_limit_30_per_minute_rest_and_socket(relay: Relay) -> None:
    inst = await register_ws(relay, "conn-rl", new_key())
    ip = fresh_ip()
    for _ in range(20):
        status, _, _ = await relay.request("GET", "/relay/instances/conn-rl/connect", ip=ip)
        assert status == 200
    ws = await relay.client(ip=ip)
    for _ in range(10):
        await send(ws, {"type": "connect", "instance_id": "conn-rl"})
        assert (await recv_type(ws, "connected"))["instance_id"] == "conn-rl"
    status, body, headers = await relay.request("GET", "/relay/instances/conn-rl/connect",
                                                ip=ip)
    check_429(status, body, headers)
    await send(ws, {"type": "connect", "instance_id": "conn-rl"})
    assert (await recv_type(ws, "error"))["code"] == "rate_limited"
    await ws.close()
    await inst.close()


async def test_global_failed_redemption_budget(relay: Relay) -> None:
    inst = await register_ws(relay, "budget", new_key())
    code = (await create_claim(inst))["code"]
    # 101 failures, each from a different address (no per-IP limit involved)
    for i in range(101):
        status, body, _ = await relay.request("POST", f"/relay/claim/ZZZZ{i:04d}"[:19])
        assert status in (400, 429)
    # past the budget every redemption is refused for the cool-down, even a valid code
    status, body, headers = await relay.request("POST", f"/relay/claim/{code}")
    check_429(status, body, headers)
    ws = await relay.client()
    await send(ws, {"type": "connect", "claim_code": code})
    assert (await recv(ws))["code"] == "rate_limited"
    # connecting by instance id (already paired devices) is not affected
    await send(ws, {"type": "connect", "instance_id": "budget"})
    assert (await recv(ws))["type"] == "connected"
    await ws.close()
    await inst.close()


async def test_slow_consumer_closed_with_1008(relay: Relay) -> None:
    inst = await register_ws(relay, "slow", new_key())
    # a player that stops reading (tiny kernel buffer, nothing read after connect)
    player = await RawClient.connect(relay.ws_url + "/relay/client/websocket",
                                     {"x-forwarded-for": fresh_ip()})
    await player.send({"type": "connect", "instance_id": "slow"})
    sid = (await recv(inst))["session_id"]
    payload = base64.b64encode(b"x" * 45_000).decode()
    frame = {"type": "relay_message", "session_id": sid, "payload": payload}
    # paced (not a burst): kernel buffers fill, then the relay's 1 MiB queue overflows
    seen: set[str] = set()
    for i in range(250):  # up to 15 MB
        await send(inst, frame)
        if i % 10 == 9:
            await send(inst, {"type": "ping"})
            while True:
                kind = (await recv(inst))["type"]
                seen.add(kind)
                if kind == "pong":
                    break
            if "session_closed" in seen:
                break
    assert "session_closed" in seen  # the instance is told, and keeps working
    await roundtrip(inst)
    # the player finally reads: what was in flight, then the 1008 close
    received, code = await player.read_until_close()
    assert code == 1008
    assert received < 250
    player.close()
    await inst.close()


async def test_large_burst_to_a_reading_client_is_delivered(relay: Relay) -> None:
    """1.5 MB sent at once to a client that reads is not mistaken for a slow consumer."""
    inst = await register_ws(relay, "burst", new_key())
    player = await relay.client()
    await send(player, {"type": "connect", "instance_id": "burst"})
    await recv(player)
    sid = (await recv(inst))["session_id"]
    payload = base64.b64encode(b"y" * 45_000).decode()
    for _ in range(25):
        await send(inst, {"type": "relay_message", "session_id": sid, "payload": payload})
    for _ in range(25):
        assert (await recv(player))["payload"] == payload
    await player.close()
    await inst.close()


async def test_client_message_rate_limit_closes_1008(relay: Relay) -> None:
    inst = await register_ws(relay, "flood", new_key())
    player = await relay.client()
    await send(player, {"type": "connect", "instance_id": "flood"})
    await recv(player)
    assert (await recv(inst))["type"] == "connection"
    frame = '{"type":"message","payload":"aGk="}'
    sent = 0
    try:
        for _ in range(20_000):
            await player.send(frame)
            sent += 1
        await asyncio.wait_for(player.recv(), 10)
        while True:
            await asyncio.wait_for(player.recv(), 10)
    except websockets.ConnectionClosed:
        pass
    assert player.close_code == 1008
    # the instance got the burst, not the flood, then session_closed
    relayed = 0
    while (await recv(inst))["type"] == "relay_message":
        relayed += 1
    assert 0 < relayed < sent
    await inst.close()
