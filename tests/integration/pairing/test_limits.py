"""Every pairing limit of the contract, shown firing."""

from __future__ import annotations

import asyncio
import base64
import socket

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
    # the player's kernel receive buffer is tiny and it never reads
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(relay.url.rsplit(":", 1)[1])))
    player = await websockets.connect(relay.ws_url + "/relay/client/websocket", sock=sock,
                                      max_queue=1, additional_headers={
                                          "x-forwarded-for": fresh_ip()})
    await send(player, {"type": "connect", "instance_id": "slow"})
    sid = (await recv(inst))["session_id"]
    payload = base64.b64encode(b"x" * 45_000).decode()
    frame = {"type": "relay_message", "session_id": sid, "payload": payload}
    for _ in range(250):  # ~15 MB: kernel buffers + 1 MiB queue overflow
        await send(inst, frame)
    # everything sent has been processed once the pong is back; session_closed may come
    # before it (close frame queued at once) or after the player drained (close handshake)
    await send(inst, {"type": "ping"})
    seen = set()
    while "pong" not in seen:
        seen.add((await recv(inst))["type"])
    # draining now: some messages, then the relay's 1008 close
    received = 0
    try:
        while True:
            await asyncio.wait_for(player.recv(), 10)
            received += 1
    except websockets.ConnectionClosed:
        pass
    assert player.close_code == 1008
    assert received < 250
    # the instance is unaffected and is told the session closed
    if "session_closed" not in seen:
        closed = await recv_type(inst, "session_closed")
        assert closed["session_id"] == sid
    await roundtrip(inst)
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
