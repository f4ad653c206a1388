"""Instance identity (issue 13 item 1): a public key is public. Knowing it never yields a
token or displaces a live instance socket from another address; mydia's real reconnects
succeed; relay protocol 1.1 proves possession of the private key and pins the id.

Client addresses are presented with ``X-Forwarded-For`` from trusted loopback."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import websockets

from metadata_relay.pairing import protocol
from tests.integration.pairing.conftest import RELAY_ENV
from tests.integration.pairing.helpers import (
    Relay,
    closed,
    fresh_ip,
    new_key,
    recv,
    recv_type,
    register_frame,
    register_ws,
    roundtrip,
    send,
)
from tests.integration.pairing.reference_client import ProvenInstance
from tests.relay_server import serve_relay

OWNER_IP, ATTACKER_IP = "81.2.69.160", "203.0.113.66"
IN_USE = {"type": "error", "code": "instance_connected",
          "message": "Instance is connected from another address"}
PROOF_REQUIRED = {"type": "error", "code": "proof_required",
                  "message": "This instance proved its key: register with relay protocol 1.1"}


async def refused(relay: Relay, frame: dict, ip: str) -> tuple[dict, int | None]:
    """A register that the relay refuses: its error and the close code."""
    ws = await relay.instance(ip=ip)
    await send(ws, frame)
    error = await recv(ws)
    return error, await closed(ws)


async def owner_reachable(relay: Relay, owner: websockets.ClientConnection,
                          instance_id: str) -> None:
    """A player connecting by id reaches this very socket."""
    player = await relay.client()
    await send(player, {"type": "connect", "instance_id": instance_id})
    assert (await recv(player))["type"] == "connected"
    assert (await recv_type(owner, "connection"))["type"] == "connection"
    await player.close()


async def test_rest_public_key_never_yields_a_token(relay: Relay) -> None:
    key = new_key()
    owner = await register_ws(relay, "mydia-a", key, ip=OWNER_IP)  # mydia: socket only
    # everyone who paired knows id and key: REST registration with them is refused
    for ip in (ATTACKER_IP, OWNER_IP):
        status, body, _ = await relay.request(
            "POST", "/relay/instances", ip=ip,
            json_body={"instance_id": "mydia-a", "public_key": key,
                       "direct_urls": ["https://phish.example"]})
        assert (status, body["error"]) == (409, "conflict")
    forged = protocol.sign_token("guessed-secret", "mydia-a", time.time())
    status, _, _ = await relay.request(
        "POST", "/relay/instances", token=forged, ip=ATTACKER_IP,
        json_body={"instance_id": "mydia-a", "public_key": new_key()})
    assert status == 409
    # the owner's socket, URLs and key are in place
    await roundtrip(owner)
    await owner_reachable(relay, owner, "mydia-a")
    status, info, _ = await relay.request("GET", "/relay/instances/mydia-a/connect")
    assert info["direct_urls"] == ["https://192.168.1.10:4443"] and info["online"] is True
    await owner.close()


async def test_rest_reregistration_only_with_the_ids_token(relay: Relay) -> None:
    key = new_key()
    token = await relay.register("rest-owner", key, ip=OWNER_IP)
    other = await relay.register("rest-attacker", new_key(), ip=ATTACKER_IP)
    for presented, body_key in ((None, key), (other, key), (None, new_key())):
        status, _, _ = await relay.request(
            "POST", "/relay/instances", token=presented, ip=ATTACKER_IP,
            json_body={"instance_id": "rest-owner", "public_key": body_key})
        assert status == 409
    # the owner's token still works, and re-registers (here: rotates the key)
    status, _, _ = await relay.request("PUT", "/relay/instances/rest-owner/heartbeat",
                                       token=token, ip=OWNER_IP)
    assert status == 200
    rotated = new_key()
    status, body, _ = await relay.request(
        "POST", "/relay/instances", token=token, ip=OWNER_IP,
        json_body={"instance_id": "rest-owner", "public_key": rotated})
    assert status == 200 and body["token"]
    _, info, _ = await relay.request("GET", "/relay/instances/rest-owner/connect", token=token)
    assert info["public_key"] == rotated


async def test_socket_takeover_refused_while_the_owner_pings(relay: Relay) -> None:
    """Another address registering with the owner's id and key is refused and its socket
    closed, for as long as the owner keeps pinging (mydia: every 30 s)."""
    key = new_key()
    owner = await register_ws(relay, "live", key, ip=OWNER_IP)
    for _ in range(5):  # 2.5 minutes of mydia heartbeats
        error, code = await refused(relay, register_frame("live", key), ATTACKER_IP)
        assert error == IN_USE and code == 1013
        await relay.clock.advance(30)
        await roundtrip(owner)
    await owner_reachable(relay, owner, "live")
    # a key that is not the instance's: unauthorized, closed too
    error, code = await refused(relay, register_frame("live", new_key()), ATTACKER_IP)
    assert error["code"] == "unauthorized" and code == 1008
    # a forged token does not help
    forged = protocol.sign_token("wrong", "live", time.time())
    error, code = await refused(relay, register_frame("live", new_key(), token=forged),
                                ATTACKER_IP)
    assert error["code"] == "unauthorized" and code == 1008
    await roundtrip(owner)
    await owner.close()


async def mydia_connects(relay: Relay, frame: dict, ip: str, attempts: int = 3) -> tuple[
        websockets.ClientConnection, int]:
    """mydia's reconnect: connect and register; on a refusal the socket closes and it tries
    again (1 s later, here no real wait). The registered socket and the attempts it took."""
    for attempt in range(1, attempts + 1):
        ws = await relay.instance(ip=ip)
        await send(ws, frame)
        msg = await recv(ws)
        if msg["type"] == "registered":
            return ws, attempt
        assert await closed(ws) is not None
        await asyncio.sleep(0.05)
    raise AssertionError(f"not registered after {attempts} attempts: {msg}")


async def test_reconnect_when_the_old_socket_is_dead(relay: Relay) -> None:
    """mydia killed (no close frame), restarted behind a new address: registers at once."""
    key = new_key()
    old = await register_ws(relay, "killed", key, ip=OWNER_IP)
    old.transport.abort()
    new, attempts = await mydia_connects(relay, register_frame("killed", key), ATTACKER_IP)
    assert attempts <= 2  # at most the race with the relay noticing the dead TCP connection
    await owner_reachable(relay, new, "killed")
    await new.close()


async def test_reconnect_from_the_same_address_replaces_an_orphan(relay: Relay) -> None:
    """mydia's heartbeat timed out: it registers on a new socket while the old WebSockex
    process stays connected (answering WebSocket pings, sending nothing). Same address:
    the new socket wins at once; the old one is told and closed; the instance stays online."""
    key = new_key()
    orphan = await register_ws(relay, "orphaned", key, ip=OWNER_IP)
    await relay.clock.advance(40)  # the last ping got no pong within 10 s
    new, attempts = await mydia_connects(relay, register_frame("orphaned", key), OWNER_IP)
    assert attempts == 1
    assert await recv(orphan) == {"type": "error", "code": "replaced",
                                  "message": "Another connection registered this instance"}
    assert await closed(orphan) == 1000
    await owner_reachable(relay, new, "orphaned")
    _, info, _ = await relay.request("GET", "/relay/instances/orphaned/connect")
    assert info["online"] is True
    await new.close()


async def test_reconnect_from_another_address_within_the_heartbeat_window(
        relay: Relay) -> None:
    """The same, but mydia's address changed (new DHCP lease, failover link): refused while
    the orphan could still be a live instance (it pinged less than 50 s ago), accepted on
    mydia's next retry after that, before the 60 s heartbeat would have closed it."""
    key = new_key()
    orphan = await register_ws(relay, "moved", key, ip=OWNER_IP)
    await relay.clock.advance(40)  # last ping at t=0, no pong by t=40: mydia reconnects
    elapsed = 40
    frame = register_frame("moved", key)
    while True:
        ws = await relay.instance(ip=ATTACKER_IP)
        await send(ws, frame)
        msg = await recv(ws)
        if msg["type"] == "registered":
            break
        assert msg == IN_USE and await closed(ws) == 1013
        await relay.clock.advance(1)  # mydia's backoff restarts at 1 s after each connect
        elapsed += 1
    assert 50 <= elapsed < 60
    assert (await recv(orphan))["code"] == "replaced"
    await owner_reachable(relay, ws, "moved")
    await ws.close()


async def test_proof_of_possession_registers_and_pins_the_id(relay: Relay) -> None:
    mydia = ProvenInstance("proven")
    ws = await mydia.connect(relay, ip=OWNER_IP)
    await owner_reachable(relay, ws, "proven")
    await ws.close()
    await asyncio.sleep(0.05)
    # from now on a 1.0 register is refused, even with the right key from the same address
    error, code = await refused(relay, register_frame("proven", mydia.key), OWNER_IP)
    assert error == PROOF_REQUIRED and code == 1008
    # a wrong proof, and a proof made for another challenge, are refused and closed
    attacker = await relay.instance(ip=ATTACKER_IP)
    await mydia.challenge(attacker)
    await send(attacker, {"type": "proof", "mac": base64.b64encode(b"\0" * 32).decode()})
    assert await recv(attacker) == {"type": "error", "code": "unauthorized",
                                    "message": "Proof of possession failed"}
    assert await closed(attacker) == 1008
    seen = await relay.instance(ip=OWNER_IP)
    replayed = mydia.mac(await mydia.challenge(seen))  # what the owner answered, observed
    attacker = await relay.instance(ip=ATTACKER_IP)
    await mydia.challenge(attacker)
    await send(attacker, {"type": "proof", "mac": replayed})
    assert (await recv(attacker))["code"] == "unauthorized"
    await seen.close()
    # the owner still registers
    ws = await mydia.connect(relay, ip=OWNER_IP)
    await ws.close()


async def test_a_proven_instance_takes_over_at_once(relay: Relay) -> None:
    """Proof beats liveness: mydia with 1.1 reconnecting from a new address while its
    orphan is still 'alive' replaces it at once; so it does a 1.0 squatter that held the
    id while the instance was away."""
    mydia = ProvenInstance("fast")
    orphan = await mydia.connect(relay, ip=OWNER_IP)
    new = await mydia.connect(relay, ip=ATTACKER_IP)  # its new address
    assert (await recv(orphan))["code"] == "replaced"
    await owner_reachable(relay, new, "fast")
    await new.close()
    # an id that has not proven yet: a squatter registered with the (public) key...
    key_holder = ProvenInstance("squatted")
    squatter = await register_ws(relay, "squatted", key_holder.key, ip=ATTACKER_IP)
    await roundtrip(squatter)
    # ...is displaced by the real instance's proof, and the id is pinned from then on
    real = await key_holder.connect(relay, ip=OWNER_IP)
    assert (await recv(squatter))["code"] == "replaced"
    error, code = await refused(relay, register_frame("squatted", key_holder.key), ATTACKER_IP)
    assert error == PROOF_REQUIRED and code == 1008
    await owner_reachable(relay, real, "squatted")
    await real.close()


async def test_a_low_order_key_proves_nothing(relay: Relay) -> None:
    """With a small-order point as ``public_key`` the X25519 secret would not depend on a
    private key; the relay refuses such a proof."""
    ws = await relay.instance()
    zero = base64.b64encode(bytes(32)).decode()
    await send(ws, {"type": "register", "instance_id": "degenerate", "public_key": zero,
                    "protocol_versions": {"relay_protocol": ["1.1"]}})
    assert (await recv(ws))["type"] == "challenge"
    await send(ws, {"type": "proof", "mac": base64.b64encode(bytes(32)).decode()})
    assert (await recv(ws))["code"] == "unauthorized"
    assert await closed(ws) == 1008


async def test_the_pin_survives_a_restart(tmp_path: Path) -> None:
    mydia = ProvenInstance("durable-pin")
    async with serve_relay(tmp_path, RELAY_ENV) as url:
        ws = await mydia.connect(Relay(url))
        await ws.close()
    async with serve_relay(tmp_path, RELAY_ENV) as url:
        error, code = await refused(Relay(url), register_frame("durable-pin", mydia.key),
                                    fresh_ip())
        assert error == PROOF_REQUIRED and code == 1008
        ws = await mydia.connect(Relay(url))
        await ws.close()


async def test_a_token_rotates_the_key_from_another_connection(relay: Relay) -> None:
    """The token (issued by REST registration, a secret) authorises a key change and takes
    the socket over: the REST-era owner's path, unchanged."""
    key = new_key()
    token = await relay.register("rotating", key, ip=OWNER_IP)
    old = await register_ws(relay, "rotating", key, ip=OWNER_IP)
    new = await register_ws(relay, "rotating", new_key(), ip=ATTACKER_IP, token=token)
    assert (await recv(old))["code"] == "replaced"
    await owner_reachable(relay, new, "rotating")
    await new.close()


async def test_public_keys_only_where_clients_read_them(relay: Relay) -> None:
    """``GET /relay/instances/{id}/connect`` (no client reads it) shows the key only to the
    instance's token; the claim lookup and ``connected`` carry it (the player reads it)."""
    key = new_key()
    token = await relay.register("keyed", key)
    inst = await register_ws(relay, "keyed", key, token=token)
    _, info, _ = await relay.request("GET", "/relay/instances/keyed/connect")
    assert "public_key" not in info and info["online"] is True
    _, info, _ = await relay.request("GET", "/relay/instances/keyed/connect", token=token)
    assert info["public_key"] == key
    player = await relay.client()
    await send(player, {"type": "connect", "instance_id": "keyed"})
    assert (await recv(player))["public_key"] == key
    await player.close()
    await inst.close()
