"""Hijack attempts and bad input: none may succeed, every one gets the contract's answer."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metadata_relay.pairing import tokens
from tests.integration.pairing.helpers import (
    Relay,
    create_claim,
    new_key,
    recv,
    recv_type,
    register_ws,
    roundtrip,
    send,
)

TOKEN_SECRET = "test-token-secret"


async def test_rest_reregistration_needs_same_key_or_token(relay: Relay) -> None:
    key = new_key()
    token = await relay.register("victim", key)
    # someone else's key, no token: refused
    status, body, _ = await relay.request(
        "POST", "/relay/instances",
        json_body={"instance_id": "victim", "public_key": new_key(), "direct_urls": []})
    assert status == 409 and body["error"] == "conflict"
    # a token of another instance does not help
    other = await relay.register("attacker", new_key())
    status, _, _ = await relay.request(
        "POST", "/relay/instances", token=other,
        json_body={"instance_id": "victim", "public_key": new_key(), "direct_urls": []})
    assert status == 409
    # a token signed with another secret (e.g. the original's hard-coded key) neither
    forged = tokens.sign("not-the-secret", "victim", time.time())
    status, _, _ = await relay.request(
        "POST", "/relay/instances", token=forged,
        json_body={"instance_id": "victim", "public_key": new_key(), "direct_urls": []})
    assert status == 409
    # the owner re-registers with the same key, or rotates its key with its token
    assert await relay.register("victim", key)
    new = new_key()
    status, body, _ = await relay.request(
        "POST", "/relay/instances", token=token,
        json_body={"instance_id": "victim", "public_key": new, "direct_urls": []})
    assert status == 200
    status, info, _ = await relay.request("GET", "/relay/instances/victim/connect")
    assert info["public_key"] == new


async def test_token_checks_on_heartbeat_and_claim(relay: Relay) -> None:
    token = await relay.register("owner", new_key())
    other = await relay.register("intruder", new_key())
    expired = tokens.sign(TOKEN_SECRET, "owner", time.time() - 8 * 86400)
    forged = tokens.sign("hard-coded-placeholder", "owner", time.time())
    garbage = ["", "abc", "x" * 5000, base64.urlsafe_b64encode(b"{}.sig").decode()]
    for path, method in (("/relay/instances/owner/heartbeat", "PUT"),
                         ("/relay/instances/owner/claim", "POST")):
        for bad in [None, other, expired, forged, *garbage]:
            status, body, _ = await relay.request(method, path, json_body={"user_id": "u"},
                                                  token=bad)
            assert status == 401, (path, bad)
            assert body == {"error": "Unauthorized",
                            "message": "Invalid or missing authentication token"}
    status, _, _ = await relay.request("PUT", "/relay/instances/owner/heartbeat", token=token)
    assert status == 200
    # a valid token for an id that does not exist: 404
    ghost = tokens.sign(TOKEN_SECRET, "ghost", time.time())
    status, _, _ = await relay.request("PUT", "/relay/instances/ghost/heartbeat", token=ghost)
    assert status == 404
    status, _, _ = await relay.request("POST", "/relay/instances/ghost/claim",
                                       json_body={"user_id": "u"}, token=ghost)
    assert status == 404
    status, _, _ = await relay.request("POST", "/relay/claim/consume", token=None,
                                       json_body={"claim_id": "x", "device_id": "d"})
    assert status == 401


async def test_rest_validation_errors(relay: Relay) -> None:
    token = await relay.register("valid", new_key())
    bad_bodies = [
        b"not json", b"[]", b'"str"', b"{", json.dumps({"public_key": new_key()}).encode(),
        json.dumps({"instance_id": "", "public_key": new_key()}).encode(),
        json.dumps({"instance_id": "a" * 256, "public_key": new_key()}).encode(),
        json.dumps({"instance_id": "x", "public_key": "short"}).encode(),
        json.dumps({"instance_id": "x",
                    "public_key": base64.b64encode(b"k" * 31).decode()}).encode(),
        json.dumps({"instance_id": "x", "public_key": new_key(),
                    "direct_urls": "https://a"}).encode(),
        json.dumps({"instance_id": "x", "public_key": new_key(),
                    "direct_urls": ["javascript:alert(1)"]}).encode(),
        json.dumps({"instance_id": "x", "public_key": new_key(),
                    "direct_urls": [f"https://h{i}" for i in range(17)]}).encode(),
    ]
    for i, data in enumerate(bad_bodies):
        status, body, _ = await relay.request("POST", "/relay/instances", data=data,
                                              ip=f"9.9.{i}.1")
        assert status == 400, data[:60]
        assert body["error"] == "validation_error"
    status, body, _ = await relay.request("POST", "/relay/instances", data=b"{" * 100_000,
                                          ip="9.9.99.1")
    assert (status, body["error"]) == (413, "payload_too_large")
    for claim_body in ({}, {"user_id": ""}, {"user_id": "u", "ttl_seconds": 0},
                       {"user_id": "u", "ttl_seconds": "300"}, {"user_id": ["u"]}):
        status, body, _ = await relay.request("POST", "/relay/instances/valid/claim",
                                              json_body=claim_body, token=token)
        assert status == 400, claim_body
    status, _, _ = await relay.request("PUT", "/relay/instances/valid/heartbeat",
                                       data=b"{bad", token=token)
    assert status == 400
    status, _, _ = await relay.request("GET", "/relay/instances/nope/connect")
    assert status == 404


async def test_socket_register_hijack_and_token_rotation(relay: Relay) -> None:
    key = new_key()
    owner = await register_ws(relay, "sock-victim", key)
    thief = await relay.instance()
    await send(thief, {"type": "register", "instance_id": "sock-victim",
                       "public_key": new_key(), "direct_urls": []})
    msg = await recv(thief)
    assert msg["type"] == "error" and msg["code"] == "unauthorized"
    # the owner was not disturbed
    await roundtrip(owner)
    forged = tokens.sign("wrong", "sock-victim", time.time())
    await send(thief, {"type": "register", "instance_id": "sock-victim",
                       "public_key": new_key(), "token": forged})
    assert (await recv(thief))["code"] == "unauthorized"
    # the thief cannot act without registering
    await send(thief, {"type": "create_claim", "user_id": "u", "request_id": "1"})
    assert await recv(thief) == {"type": "error", "message": "Not registered",
                                 "request_id": "1"}
    await send(thief, {"type": "webrtc_answer", "session_id": "x" * 22, "payload": "{}"})
    assert await recv(thief) == {"type": "error", "message": "Not registered"}
    await send(thief, {"type": "relay_message", "session_id": "x" * 22, "payload": "aGk="})
    assert await recv(thief) == {"type": "error", "message": "Not registered"}
    await send(thief, {"type": "consume_claim", "claim_code": "ABCDEFGH"})
    assert await recv(thief) == {"type": "error", "message": "Not registered"}
    # a valid token lets the owner rotate its key from another connection
    token = tokens.sign(TOKEN_SECRET, "sock-victim", time.time())
    new = new_key()
    await send(thief, {"type": "register", "instance_id": "sock-victim", "public_key": new,
                       "token": token})
    assert (await recv(thief))["type"] == "registered"
    assert (await recv(owner))["code"] == "replaced"
    await thief.close()


async def test_instance_cannot_address_foreign_sessions(relay: Relay) -> None:
    a = await register_ws(relay, "inst-a", new_key())
    b = await register_ws(relay, "inst-b", new_key())
    player = await relay.client()
    await send(player, {"type": "connect", "instance_id": "inst-a"})
    sid = (await recv(player))["session_id"]
    assert (await recv(a))["session_id"] == sid
    # B injects into A's session: refused, nothing reaches the player
    await send(b, {"type": "webrtc_offer", "session_id": sid, "payload": "evil"})
    err = await recv(b)
    assert err["code"] == "session_not_found" and err["session_id"] == sid
    await send(b, {"type": "relay_message", "session_id": sid, "payload": "ZXZpbA=="})
    assert (await recv(b))["code"] == "session_not_found"
    await send(a, {"type": "relay_message", "session_id": sid, "payload": "Z29vZA=="})
    assert await recv(player) == {"type": "message", "payload": "Z29vZA=="}
    # B cannot consume A's claim either
    claim = await create_claim(a)
    await send(b, {"type": "consume_claim", "claim_code": claim["code"]})
    await roundtrip(b)
    status, _, _ = await relay.request("POST", f"/relay/claim/{claim['code']}")
    assert status == 200
    for ws in (a, b, player):
        await ws.close()


async def test_duplicate_register_replaces_without_going_offline(relay: Relay) -> None:
    key = new_key()
    first = await register_ws(relay, "dup", key)
    second = await register_ws(relay, "dup", key)
    assert await recv(first) == {"type": "error", "code": "replaced",
                                 "message": "Another connection registered this instance"}
    await first.wait_closed()
    # the old socket's close did not mark the instance offline: clients reach the new one
    player = await relay.client()
    await send(player, {"type": "connect", "instance_id": "dup"})
    assert (await recv(player))["type"] == "connected"
    assert (await recv(second))["type"] == "connection"
    _, info, _ = await relay.request("GET", "/relay/instances/dup/connect")
    assert info["online"] is True
    # a registered socket's own close marks the instance offline
    await second.close()
    await player.close()
    for _ in range(50):
        _, info, _ = await relay.request("GET", "/relay/instances/dup/connect")
        if info["online"] is False:
            break
        await asyncio.sleep(0.05)
    assert info["online"] is False
    late = await relay.client()
    await send(late, {"type": "connect", "instance_id": "dup"})
    assert await recv(late) == {"type": "error", "message": "Instance is offline"}
    await send(late, {"type": "connect", "instance_id": "never-registered"})
    assert await recv(late) == {"type": "error", "message": "Instance not found"}
    await late.close()


async def test_protocol_version_negotiation(relay: Relay) -> None:
    ws = await relay.instance()
    await send(ws, {"type": "register", "instance_id": "v", "public_key": new_key(),
                    "protocol_versions": {"relay_protocol": ["2.0", "3.1"]}})
    assert await recv(ws) == {"type": "error", "code": "version_incompatible",
                              "message": "Relay protocol version mismatch",
                              "supported_versions": ["1.0"]}
    # an older client without the list is treated as ["1.0"]
    await send(ws, {"type": "register", "instance_id": "v", "public_key": new_key()})
    assert await recv(ws) == {"type": "registered", "relay_protocol": "1.0"}
    await ws.close()


async def test_client_errors_before_connect(relay: Relay) -> None:
    ws = await relay.client()
    await send(ws, {"type": "message", "payload": "aGk="})
    assert (await recv(ws))["message"] == "Not connected"
    await send(ws, {"type": "webrtc_offer", "payload": "{}"})
    assert (await recv(ws))["message"] == "Not connected"
    await send(ws, {"type": "connect"})
    assert (await recv(ws))["code"] == "bad_request"
    await roundtrip(ws)
    await ws.close()


async def test_oversize_frames_close_1009(relay: Relay) -> None:
    for opener in (relay.instance, relay.client):
        ws = await opener(max_size=None)
        await ws.send("x" * (64 * 1024 + 1))
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed:
            pass
        assert ws.close_code == 1009
    # exactly at the limit is fine
    ws = await relay.client()
    await ws.send(json.dumps({"type": "ping", "pad": "y" * (64 * 1024 - 40)}))
    assert (await recv(ws))["type"] == "pong"
    await ws.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    st.builds(json.dumps, st.dictionaries(st.text(max_size=10),
                                          st.one_of(st.none(), st.integers(), st.text()),
                                          max_size=4)),
    st.builds(lambda t, v: json.dumps({"type": t, "session_id": v, "payload": v,
                                       "instance_id": v, "claim_code": v}),
              st.sampled_from(["register", "connect", "message", "relay_message",
                               "webrtc_x", "create_claim", "consume_claim",
                               "update_urls", "unknown", "pong"]),
              st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.text()))),
), min_size=1, max_size=8))
def test_garbage_frames_are_ignored(relay: Relay, frames: list) -> None:
    async def run() -> None:
        for opener in (relay.instance, relay.client):
            ws = await opener()
            for frame in frames:
                await ws.send(frame)
            # the socket is still usable afterwards
            await send(ws, {"type": "ping"})
            await recv_type(ws, "pong")
            await ws.close()

    asyncio.run(run())
