"""Every pairing limit of the contract, shown firing (claim-code guessing:
test_redemption.py)."""

from __future__ import annotations

import asyncio
import base64

import websockets

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


# --- instance sockets: per-socket rates (issue 13: one socket made 20,000 claims in 9 s) ------

async def test_claim_creation_limited_per_instance(relay: Relay) -> None:
    """10 claims a minute per instance, over its sockets and the REST route together; a
    new socket does not reset it."""
    key = new_key()
    token = await relay.register("claimer", key)
    inst = await register_ws(relay, "claimer", key, token=token)
    for i in range(9):
        await create_claim(inst, request_id=str(i))
    status, _, _ = await relay.request("POST", "/relay/instances/claimer/claim", token=token,
                                       json_body={"user_id": "u"})
    assert status == 200  # the tenth
    await send(inst, {"type": "create_claim", "user_id": "u", "request_id": "flood"})
    err = await recv(inst)
    assert err["code"] == "rate_limited" and err["request_id"] == "flood"
    assert err["retry_after"] >= 1
    status, body, headers = await relay.request(
        "POST", "/relay/instances/claimer/claim", token=token, json_body={"user_id": "u"})
    check_429(status, body, headers)
    await inst.close()
    again = await register_ws(relay, "claimer", key, token=token)
    await send(again, {"type": "create_claim", "user_id": "u", "request_id": "x"})
    assert (await recv(again))["code"] == "rate_limited"
    for _ in range(2):  # a minute later (mydia pinging meanwhile)
        await relay.clock.advance(30.5)
        await roundtrip(again)
    assert (await create_claim(again))["code"]
    await again.close()


async def test_ping_flood_costs_no_writes(relay: Relay) -> None:
    """mydia pings every 30 s. Every ping gets its pong, but past a burst of 5 a socket's
    pings are recorded (database, Redis) at most every 2 s."""
    inst = await register_ws(relay, "pinger", new_key())
    for _ in range(200):
        await send(inst, {"type": "ping"})
    assert [(await recv(inst))["type"] for _ in range(200)] == ["pong"] * 200
    _, stats, _ = await relay.request("GET", "/stats")
    assert stats["pairing"]["heartbeat_recorded"] == 5
    await relay.clock.advance(2)  # 0.5 pings/s
    await roundtrip(inst)
    _, stats, _ = await relay.request("GET", "/stats")
    assert stats["pairing"]["heartbeat_recorded"] == 6
    await inst.close()


async def test_update_urls_flood_limited(relay: Relay) -> None:
    inst = await register_ws(relay, "urls", new_key())
    for i in range(8):
        await send(inst, {"type": "update_urls", "direct_urls": [f"https://10.0.0.{i}:4000"]})
    errors = [await recv(inst) for _ in range(3)]
    assert all(e["code"] == "rate_limited" for e in errors)
    await relay.clock.advance(1)  # pings refill too; the URL bucket only after 10 s
    await roundtrip(inst)
    _, info, _ = await relay.request("GET", "/relay/instances/urls/connect")
    assert info["direct_urls"] == ["https://10.0.0.4:4000"]  # the fifth, the last accepted
    await relay.clock.advance(10)
    await send(inst, {"type": "update_urls", "direct_urls": ["https://10.0.0.99:4000"]})
    await roundtrip(inst)
    _, info, _ = await relay.request("GET", "/relay/instances/urls/connect")
    assert info["direct_urls"] == ["https://10.0.0.99:4000"]
    await inst.close()


# --- open sockets per client address -----------------------------------------------------

async def test_open_sockets_capped_per_address(relay: Relay) -> None:
    """10 instance sockets and 50 client sockets per address; the next handshake is refused
    (403), other addresses are not affected, and closing one frees a slot."""
    for opener, cap in ((relay.instance, 10), (relay.client, 50)):
        ip = fresh_ip()
        held = [await opener(ip=ip) for _ in range(cap)]
        try:
            await opener(ip=ip)
            raise AssertionError("socket over the cap was accepted")
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 403
        other = await opener(ip=fresh_ip())
        await roundtrip(other)
        await other.close()
        await held.pop().close()
        await asyncio.sleep(0.05)
        held.append(await opener(ip=ip))
        for ws in held:
            await ws.close()


async def test_sockets_must_identify_within_30_s(relay: Relay) -> None:
    """A socket that never registers (instance) or connects (client) is closed after 30 s,
    pings or not; one that did stays for its heartbeat or idle time."""
    idle_inst = await relay.instance()
    idle_client = await relay.client()
    inst = await register_ws(relay, "identified", new_key())
    player = await relay.client()
    await send(player, {"type": "connect", "instance_id": "identified"})
    assert (await recv(player))["type"] == "connected"
    for step in (15, 14):  # pinging does not help
        await relay.clock.advance(step)
        await roundtrip(idle_client)
        await roundtrip(inst)
    await relay.clock.advance(1)
    assert await closed(idle_inst) == 1000
    assert await closed(idle_client) == 1000
    await roundtrip(player)
    await roundtrip(inst)
    await player.close()
    await inst.close()
