"""The complete pairing flow with real clients: mydia server (instance) and player (client)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime

import pytest

from tests.integration.pairing.conftest import TURN_SECRET
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


def check_ice(ice: list[dict], session_id: str, port: int) -> None:
    turn, stun = ice
    assert turn["urls"] == [f"turn:127.0.0.1:{port}", f"turn:127.0.0.1:{port}?transport=tcp"]
    expiry, user = turn["username"].split(":", 1)
    assert user == session_id
    assert 86400 - 120 < int(expiry) - time.time() <= 86400
    expected = base64.b64encode(
        hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert turn["credential"] == expected
    assert stun == {"urls": f"stun:127.0.0.1:{port}"}


async def test_complete_pairing_flow(relay: Relay) -> None:
    turn_port = 3478  # RELAY_ENV's TURN_URI
    key = new_key()
    inst = await register_ws(relay, "mydia-flow", key, webrtc_e2ee=1)
    claim = await create_claim(inst, user="u-42", request_id="42")
    code = claim["code"]
    assert len(code) == 8 and claim["request_id"] == "42"
    assert claim["expires_at"].endswith("Z")

    # player looks the code up (typed with a dash and lower case), which does not consume it
    typed = f"{code[:4].lower()}-{code[4:]}"
    status, body, _ = await relay.request("POST", f"/relay/claim/{typed}")
    assert status == 200, body
    assert body["instance_id"] == "mydia-flow" and body["public_key"] == key
    assert body["online"] is True and body["user_id"] == "u-42"

    player = await relay.client()
    await send(player, {"type": "connect", "claim_code": code,
                        "protocol_versions": {"relay_protocol": ["1.0"]}})
    connected = await recv(player)
    assert connected["type"] == "connected", connected
    sid = connected["session_id"]
    assert len(sid) == 22 and "=" not in sid and "+" not in sid and "/" not in sid
    assert connected["claim_id"] == body["claim_id"] and connected["user_id"] == "u-42"
    assert connected["public_key"] == key and connected["relay_protocol"] == "1.0"
    assert connected["instance_versions"]["encryption_protocol"] == ["1.0"]
    check_ice(connected["ice_servers"], sid, turn_port)

    connection = await recv(inst)
    assert connection["type"] == "connection" and connection["session_id"] == sid
    check_ice(connection["ice_servers"], sid, turn_port)

    # signalling both ways (payloads are JSON strings, passed through untouched)
    offer = json.dumps({"type": "offer", "sdp": "v=0\r\n..."})
    await send(player, {"type": "webrtc_offer", "payload": offer})
    got = await recv(inst)
    assert got == {"type": "webrtc_offer", "session_id": sid, "payload": offer}
    cand = json.dumps({"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host",
                       "sdpMid": "0", "sdpMLineIndex": 0})
    await send(player, {"type": "webrtc_candidate", "payload": cand})
    assert (await recv(inst))["payload"] == cand
    answer = json.dumps({"type": "answer", "sdp": "v=0\r\n"})
    await send(inst, {"type": "webrtc_answer", "session_id": sid, "payload": answer})
    assert await recv(player) == {"type": "webrtc_answer", "payload": answer}
    await send(inst, {"type": "webrtc_candidate", "session_id": sid, "payload": cand})
    assert await recv(player) == {"type": "webrtc_candidate", "payload": cand}

    # relayed messages both ways
    p1 = base64.b64encode(b"hello instance").decode()
    await send(player, {"type": "message", "payload": p1})
    assert await recv(inst) == {"type": "relay_message", "session_id": sid, "payload": p1}
    p2 = base64.b64encode(b"hello player").decode()
    await send(inst, {"type": "relay_message", "session_id": sid, "payload": p2})
    assert await recv(player) == {"type": "message", "payload": p2}

    # mydia consumes the claim after pairing: the code is rejected from now on
    await send(inst, {"type": "consume_claim", "claim_code": code})
    await roundtrip(inst)
    status, body, _ = await relay.request("POST", f"/relay/claim/{code}")
    assert status == 400
    assert body == {"error": "Validation error", "message": "Invalid or expired claim code"}
    other = await relay.client()
    await send(other, {"type": "connect", "claim_code": code})
    assert await recv(other) == {"type": "error", "message": "Invalid or expired claim code"}
    await other.close()

    # paired device reconnects by instance id
    again = await relay.client()
    await send(again, {"type": "connect", "instance_id": "mydia-flow"})
    re = await recv(again)
    assert re["type"] == "connected" and "claim_id" not in re
    assert re["direct_urls"] == ["https://192.168.1.10:4443"]
    assert (await recv(inst))["type"] == "connection"

    # player leaves: the instance is told
    await send(player, {"type": "close"})
    await player.wait_closed()
    assert player.close_code == 1000
    closed = await recv_type(inst, "session_closed")
    assert closed == {"type": "session_closed", "session_id": sid}
    await again.close()

    # update_urls over the socket is stored
    await send(inst, {"type": "update_urls", "direct_urls": ["https://192.168.1.11:4443"]})
    await roundtrip(inst)
    status, info, _ = await relay.request("GET", "/relay/instances/mydia-flow/connect")
    assert info["direct_urls"] == ["https://192.168.1.11:4443"]
    await inst.close()


async def test_client_socket_accepts_any_origin(relay: Relay) -> None:
    ws = await relay.client(origin="https://some-other-site.example")
    await roundtrip(ws)
    await ws.close()


async def test_rest_flow_with_tokens_and_consume_route(relay: Relay) -> None:
    key = new_key()
    token = await relay.register("mydia-rest", key, ["https://10.0.0.5:4443"], ip="81.2.69.160")
    status, body, _ = await relay.request(
        "PUT", "/relay/instances/mydia-rest/heartbeat",
        json_body={"direct_urls": ["https://10.0.0.5:4443"]}, token=token, ip="81.2.69.160")
    assert status == 200 and body["status"] == "ok" and body["last_seen_at"].endswith("Z")
    status, body, _ = await relay.request(
        "POST", "/relay/instances/mydia-rest/claim", json_body={"user_id": "u1"}, token=token)
    assert status == 200, body
    code = body["code"]
    status, body, _ = await relay.request("POST", f"/relay/claim/{code}")
    assert status == 200, body
    # enrichment: public IPv4 of the instance, port of the first stored URL
    assert body["direct_urls"] == ["https://10.0.0.5:4443", "https://81-2-69-160.sslip.io:4443"]
    assert body["online"] is True  # REST heartbeat marks it online
    claim_id = body["claim_id"]
    status, info, _ = await relay.request("GET", "/relay/instances/mydia-rest/connect",
                                          token=token)
    assert status == 200 and info["direct_urls"] == ["https://10.0.0.5:4443"]
    assert info["public_key"] == key and info["last_seen_at"]

    # consume route is reachable (declared before {code}) and needs the owner's token
    other = await relay.register("mydia-other", new_key())
    status, _, _ = await relay.request("POST", "/relay/claim/consume",
                                       json_body={"claim_id": claim_id, "device_id": "d"},
                                       token=other)
    assert status == 401
    status, body, _ = await relay.request("POST", "/relay/claim/consume",
                                          json_body={"claim_id": claim_id, "device_id": "d"},
                                          token=token)
    assert (status, body) == (200, {"status": "consumed"})
    status, _, _ = await relay.request("POST", "/relay/claim/consume",
                                       json_body={"claim_id": claim_id, "device_id": "d"},
                                       token=token)
    assert status == 404
    status, _, _ = await relay.request("POST", f"/relay/claim/{code}")
    assert status == 400


@pytest.mark.parametrize("ttl, expected", [(None, 300), (30, 30), (10_000, 600)])
async def test_claim_ttl_default_and_bound(relay: Relay, ttl, expected) -> None:
    token = await relay.register(f"mydia-ttl-{ttl}", new_key())
    body_in = {"user_id": "u"} if ttl is None else {"user_id": "u", "ttl_seconds": ttl}
    status, body, _ = await relay.request(
        "POST", f"/relay/instances/mydia-ttl-{ttl}/claim", json_body=body_in, token=token)
    assert status == 200
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()
    left = expires - time.time()
    assert expected - 5 < left <= expected + 1


async def test_turn_credentials_only_for_sessions_of_online_instances(relay: Relay) -> None:
    """A client gets TURN credentials only in ``connected``, i.e. once it has reached an
    online instance; every refusal carries none (issue 13: any ``connect`` with an id used
    to get 24 h credentials)."""
    token = await relay.register("away", new_key())  # known, never connected: offline
    assert token
    player = await relay.client()
    answers = []
    for connect in ({"instance_id": "never-registered"}, {"instance_id": "away"},
                    {"claim_code": "ABCD2345"}, {}):
        await send(player, {"type": "connect", **connect})
        answers.append(await recv(player))
    await send(player, {"type": "ping"})
    answers.append(await recv(player))
    assert [a.get("message") or a["type"] for a in answers] == [
        "Instance not found", "Instance is offline", "Invalid or expired claim code",
        "Invalid message", "pong"]
    assert not any("ice_servers" in a for a in answers)
    # online: credentials for this session only, the same ones the instance gets
    inst = await register_ws(relay, "here", new_key())
    await send(player, {"type": "connect", "instance_id": "here"})
    connected = await recv(player)
    check_ice(connected["ice_servers"], connected["session_id"], 3478)
    assert (await recv(inst))["ice_servers"] == connected["ice_servers"]
    await player.close()
    await inst.close()
