"""The whole pairing flow as mydia c4efb91 and its Flutter player drive it, replayed on the
wire (``clients.py``): the server's WebSockex tunnel socket, the player's dart:io REST lookup
and permessage-deflate socket, signalling both ways, relay messages, leaving, and mydia's
reconnects. Every field the real clients read is checked the way they read it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.interop.mydia.clients import DartClient, WebSockexClient
from tests.relay_server import serve_relay
from tests.tools import free_tcp_udp_port

VERSIONS = {"api_protocol": ["1.0"], "encryption_protocol": ["1.0"],
            "pairing_protocol": ["1.0"], "relay_protocol": ["1.0"]}
TURN_SECRET = "interop-turn-secret"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def register_msg(instance_id: str, key: str, urls: list[str]) -> dict[str, Any]:
    """relay.ex:485-503: what mydia sends right after the socket opens."""
    return {"type": "register", "instance_id": instance_id, "public_key": key,
            "direct_urls": urls, "protocol_versions": VERSIONS, "webrtc_e2ee": 1}


def mydia_direct_urls(interfaces: int) -> list[str]:
    """How mydia builds direct_urls: EXTERNAL_URL (maybe without a scheme), an
    ADDITIONAL_DIRECT_URLS list split on "," (entries keep their leading space), and two URLs
    per local IPv4 address."""
    urls = ["relay-home.example.net:4000", "https://media.example.net",
            " https://media-alt.example.net"]
    for i in range(interfaces):
        urls += [f"http://10.{i}.0.2:4000", f"https://10.{i}.0.2:4443"]
    return urls


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[str]:
    env = {"TURN_ENABLED": "true", "TURN_SECRET": TURN_SECRET, "TURN_PUBLIC_IP": "203.0.113.7",
           "TURN_LISTEN_IP": "127.0.0.1", "TURN_PORT": str(free_tcp_udp_port())}
    async with serve_relay(tmp_path, env) as url:
        yield url


async def registered(url: str, instance_id: str, key: str,
                     urls: list[str] | None = None) -> WebSockexClient:
    mydia = await WebSockexClient.connect(url)
    await mydia.send(register_msg(instance_id, key, urls if urls is not None else
                                  ["https://media.example.net"]))
    reply = await mydia.recv()
    assert reply["type"] == "registered", reply  # relay.ex:566 checks only the type
    return mydia


async def create_claim(mydia: WebSockexClient, request_id: int) -> dict[str, Any]:
    await mydia.send({"type": "create_claim", "user_id": "user-1", "ttl_seconds": 300,
                      "request_id": str(request_id)})
    claim = await mydia.recv_type("claim_created")
    assert claim["request_id"] == str(request_id)  # matched by request_id string
    # DateTime.from_iso8601/1 needs an offset
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
                        claim["expires_at"]), claim
    datetime.fromisoformat(claim["expires_at"].replace("Z", "+00:00"))
    return claim


def check_ice(servers: Any) -> None:
    """What ex_ice (the server) and flutter_webrtc (the player) read from ice_servers."""
    assert isinstance(servers, list) and servers
    for entry in servers:
        assert set(entry) <= {"urls", "username", "credential"}
        urls = entry["urls"] if isinstance(entry["urls"], list) else [entry["urls"]]
        assert all(isinstance(u, str) and u.split(":", 1)[0] in ("stun", "turn", "turns")
                   for u in urls)
    turn = [e for e in servers if any(str(u).startswith("turn:") for u in
                                      (e["urls"] if isinstance(e["urls"], list) else
                                       [e["urls"]]))]
    assert turn, "ex_ice needs a turn: UDP URL"
    assert isinstance(turn[0]["username"], str) and isinstance(turn[0]["credential"], str)
    first = turn[0]["urls"][0] if isinstance(turn[0]["urls"], list) else turn[0]["urls"]
    assert first.startswith("turn:") and "transport=tcp" not in first, "UDP is tried first"


async def pair_device(url: str, mydia: WebSockexClient, code: str, typed: str | None = None,
                      player: DartClient | None = None,
                      ) -> tuple[DartClient, Any, dict[str, Any]]:
    """The player: REST lookup (pairing_service.dart:282), then the socket's connect."""
    player = player or DartClient(url)
    lookup = await player.post_empty_json(f"/relay/claim/{code.upper().strip()}")
    assert lookup.status == 200, lookup
    body = lookup.body
    for field in ("claim_id", "instance_id", "public_key", "user_id"):
        assert isinstance(body[field], str), field  # cast `as String`
    assert body["direct_urls"] is None or all(isinstance(u, str) for u in body["direct_urls"])
    assert isinstance(body["online"], bool) and body["online"]
    ws = await player.websocket()
    await ws.send(json.dumps({"type": "connect", "claim_code": typed or code,
                              "protocol_versions": VERSIONS}))
    first = json.loads(await asyncio.wait_for(ws.recv(), 10))  # must be the answer
    assert first["type"] == "connected", first
    for field in ("session_id", "instance_id", "public_key"):
        assert isinstance(first[field], str), field
    assert isinstance(first.get("instance_versions"), dict)
    assert first["instance_versions"].get("relay_protocol") == ["1.0"]
    check_ice(first["ice_servers"])
    connection = await mydia.recv_type("connection")
    assert connection["session_id"] == first["session_id"]
    check_ice(connection["ice_servers"])
    return player, ws, first


async def test_pairing_signalling_and_leaving(relay: str) -> None:
    key = new_key()
    mydia = await registered(relay, "mydia-home", key)
    await mydia.send({"type": "ping"})
    assert (await mydia.recv())["type"] == "pong"
    claim = await create_claim(mydia, 1)
    code = claim["code"]
    typed = f"{code[:4].lower()}-{code[4:].lower()}"  # as a user types it
    player, ws, connected = await pair_device(relay, mydia, code, typed)
    assert ws.response.headers.get("sec-websocket-extensions", "").startswith(
        "permessage-deflate")  # dart:io's offer was taken: frames are compressed
    sid = connected["session_id"]
    assert connected["public_key"] == key

    # signalling: the player's payloads are jsonEncode(map); mydia Jason.decode!s them
    offer = {"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 200}
    await ws.send(json.dumps({"type": "webrtc_offer", "payload": json.dumps(offer)}))
    got = await mydia.recv_type("webrtc_offer")
    assert got["session_id"] == sid and json.loads(got["payload"]) == offer
    answer = {"type": "answer", "sdp": "v=0\r\n"}
    await mydia.send({"type": "webrtc_answer", "session_id": sid,
                      "payload": json.dumps(answer)})
    back = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert back["type"] == "webrtc_answer"
    payload = back["payload"]
    assert (json.loads(payload) if isinstance(payload, str) else payload) == answer
    for side in ("player", "mydia"):
        cand = {"candidate": f"candidate:1 1 udp 1 198.51.100.{len(side)} 5000 typ host",
                "sdpMid": "0", "sdpMLineIndex": 0}
        if side == "player":
            await ws.send(json.dumps({"type": "webrtc_candidate", "payload": json.dumps(cand)}))
            got = await mydia.recv_type("webrtc_candidate")
            assert json.loads(got["payload"]) == cand
        else:
            await mydia.send({"type": "webrtc_candidate", "session_id": sid,
                              "payload": json.dumps(cand)})
            got = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert got["type"] == "webrtc_candidate"

    # the claim is consumed once paired (relay.ex:347-361: the normalised code)
    await mydia.send({"type": "consume_claim", "claim_code": code})
    await asyncio.sleep(0.05)
    again = await DartClient(relay).post_empty_json(f"/relay/claim/{code}")
    assert again.status == 400 and again.body["message"] == "Invalid or expired claim code"

    # relayed messages both ways
    data = base64.b64encode(os.urandom(600)).decode()
    await ws.send(json.dumps({"type": "message", "payload": data}))
    got = await mydia.recv_type("relay_message")
    assert got == {"type": "relay_message", "session_id": sid, "payload": data}
    await mydia.send({"type": "relay_message", "session_id": sid, "payload": data})
    got = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert got["type"] == "message" and got["payload"] == data

    # the player's own heartbeat, then it leaves
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
    await ws.send(json.dumps({"type": "close"}))
    await ws.close()
    closed = await mydia.recv_type("session_closed")
    assert closed["session_id"] == sid
    await player.close()
    mydia.kill()


async def test_turn_over_tls_is_offered_after_udp_and_tcp(tmp_path: Path) -> None:
    """With TURN_TLS_HOST (the TLS route through Traefik on 443), both sides get one TURN
    entry: UDP, TCP, then ``turns:`` with the same credential; ex_ice ignores the non-UDP
    URLs, flutter_webrtc takes the list."""
    port = free_tcp_udp_port()
    env = {"TURN_ENABLED": "true", "TURN_SECRET": TURN_SECRET, "TURN_PUBLIC_IP": "203.0.113.7",
           "TURN_LISTEN_IP": "127.0.0.1", "TURN_PORT": str(port),
           "TURN_TLS_HOST": "turn.example.com"}
    async with serve_relay(tmp_path, env) as url:
        mydia = await registered(url, "mydia-tls", new_key())
        claim = await create_claim(mydia, 3)
        player, ws, connected = await pair_device(url, mydia, claim["code"])
        expected = [f"turn:203.0.113.7:{port}", f"turn:203.0.113.7:{port}?transport=tcp",
                    "turns:turn.example.com:443?transport=tcp"]
        assert connected["ice_servers"][0]["urls"] == expected
        assert connected["ice_servers"][1] == {"urls": f"stun:203.0.113.7:{port}"}
        await ws.close()
        await player.close()
        mydia.kill()


async def test_mydia_killed_then_reconnects_and_pairs_again(relay: str) -> None:
    """relay.ex:793-801: the process dies without a close frame; the new one reconnects
    after 1 s (here at once) from the same address and registers again."""
    key = new_key()
    mydia = await registered(relay, "mydia-reconnect", key)
    mydia.kill()
    again = await registered(relay, "mydia-reconnect", key)
    claim = await create_claim(again, 7)
    player, ws, _ = await pair_device(relay, again, claim["code"])
    await ws.close()
    await player.close()
    again.kill()


async def test_heartbeat_timeout_reconnect_while_old_socket_lingers(relay: str) -> None:
    """relay.ex:452-465, 735-763: no pong within 10 s → mydia opens a new socket and
    registers, while the old WebSockex process stays connected, answering WebSocket pings
    but sending nothing. From the same address the new socket takes over at once."""
    key = new_key()
    old = await registered(relay, "mydia-lingers", key)
    lingering = asyncio.create_task(old.answer_pings_until_closed(30))
    new = await registered(relay, "mydia-lingers", key)
    claim = await create_claim(new, 2)
    player, ws, _ = await pair_device(relay, new, claim["code"])
    await ws.close()
    await player.close()
    new.kill()
    old.kill()
    await lingering


async def test_real_installs_direct_urls_are_accepted(relay: str) -> None:
    """mydia-clients.md §4: 9 interfaces → 18 LAN URLs, a leading space, a scheme-less
    EXTERNAL_URL; mydia never retries a refused register, so it must be `registered`."""
    urls = mydia_direct_urls(9)
    assert len(urls) == 21
    mydia = await registered(relay, "mydia-messy", new_key(), urls)
    claim = await create_claim(mydia, 3)
    player = DartClient(relay)
    lookup = await player.post_empty_json(f"/relay/claim/{claim['code']}")
    assert lookup.status == 200
    stored = lookup.body["direct_urls"]
    assert all(u == u.strip() and u.split("://", 1)[0] in ("http", "https") for u in stored)
    assert "https://media-alt.example.net" in stored
    await player.close()
    mydia.kill()


async def test_household_pairs_three_devices_after_typos(relay: str) -> None:
    """mydia-clients.md §4: each pairing redeems twice (lookup, then connect); people
    mistype codes; a household pairs several devices from one address within a minute."""
    mydia = await registered(relay, "mydia-family", new_key())
    player = DartClient(relay, {"x-forwarded-for": "198.51.100.23"})
    for typo in ("AAAA2222", "BBBB3333", "CCCC4444", "DDDD5555"):
        wrong = await player.post_empty_json(f"/relay/claim/{typo}")
        assert wrong.status == 400
    for n in range(3):
        claim = await create_claim(mydia, 10 + n)
        device = DartClient(relay, {"x-forwarded-for": "198.51.100.23"})
        _, ws, _ = await pair_device(relay, mydia, claim["code"], player=device)
        await ws.close()
        await device.close()
    await player.close()
    mydia.kill()
