"""Forged credentials, foreign sessions and bad input: none may succeed, every one gets the
contract's answer (instance takeover attempts: test_identity.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metadata_relay.pairing import protocol
from tests.integration.pairing.conftest import TOKEN_SECRET
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


async def test_token_checks_on_heartbeat_and_claim(relay: Relay) -> None:
    token = await relay.register("owner", new_key())
    other = await relay.register("intruder", new_key())
    expired = protocol.sign_token(TOKEN_SECRET, "owner", time.time() - 8 * 86400)
    forged = protocol.sign_token("hard-coded-placeholder", "owner", time.time())
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
    ghost = protocol.sign_token(TOKEN_SECRET, "ghost", time.time())
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
    # messy direct_urls are repaired, never a reason to refuse (test_direct_urls.py)
    status, _, _ = await relay.request(
        "PUT", "/relay/instances/valid/heartbeat", token=token,
        json_body={"direct_urls": ["javascript:alert(1)", 5, " host:4000"]})
    assert status == 200
    _, info, _ = await relay.request("GET", "/relay/instances/valid/connect")
    assert info["direct_urls"] == ["https://host:4000"]


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
    key, ip = new_key(), fresh_ip()
    first = await register_ws(relay, "dup", key, ip=ip)
    second = await register_ws(relay, "dup", key, ip=ip)  # mydia reconnecting
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
                              "supported_versions": ["1.0", "1.1"]}
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
async def test_garbage_frames_are_ignored(relay: Relay, frames: list) -> None:
    for opener in (relay.instance, relay.client):
        ws = await opener()
        for frame in frames:
            await ws.send(frame)
        # the socket is still usable afterwards
        await send(ws, {"type": "ping"})
        await recv_type(ws, "pong")
        await ws.close()
