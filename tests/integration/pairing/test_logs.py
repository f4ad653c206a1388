"""No payload in any pairing log line (issue 13 item 9): frames, claim codes beyond two
characters, client addresses, direct URLs, keys, tokens and TURN credentials never reach
the log of the running service, whatever clients send."""

from __future__ import annotations

import base64
import json

from tests.integration.pairing.conftest import TURN_SECRET
from tests.integration.pairing.helpers import (
    Relay,
    closed,
    create_claim,
    new_key,
    recv,
    register_frame,
    register_ws,
    roundtrip,
    send,
)
from tests.tools import ServiceProcess

MARK = "zq9secretpayloadzq9"


async def test_no_payload_in_the_log(relay_proc: ServiceProcess) -> None:
    relay = Relay(relay_proc.url)
    key = new_key()
    owner_ip, other_ip, player_ip = "81.2.69.161", "203.0.113.99", "198.51.100.42"
    urls = [f"https://{MARK}.example:4000", f" {MARK}-space.example", f"ftp://{MARK}",
            f"javascript:{MARK}"]
    inst = await register_ws(relay, "logged", key, ip=owner_ip, direct_urls=urls)
    await send(inst, {"type": "update_urls", "direct_urls": [f"{MARK}-update.example", 5]})
    code = (await create_claim(inst))["code"]
    # refused takeovers (wrong key, live owner)
    for frame in (register_frame("logged", new_key()), register_frame("logged", key)):
        thief = await relay.instance(ip=other_ip)
        await send(thief, frame)
        assert (await recv(thief))["type"] == "error"
        assert await closed(thief)
    # a player pairs, relays, and misbehaves
    player = await relay.client(ip=player_ip)
    for bad in ("BADC0DE1", code[:6] + "ZZ"):
        await send(player, {"type": "connect", "claim_code": bad})
        await recv(player)
    await send(player, {"type": "connect", "claim_code": code})
    connected = await recv(player)
    assert connected["type"] == "connected"
    sid = (await recv(inst))["session_id"]
    payload = base64.b64encode(MARK.encode()).decode()
    await send(player, {"type": "message", "payload": payload})
    await send(player, {"type": "webrtc_offer", "payload": json.dumps({"sdp": MARK})})
    await send(inst, {"type": "relay_message", "session_id": sid, "payload": payload})
    await send(inst, {"type": "relay_message", "session_id": MARK, "payload": payload})
    for garbage in (f"{{{MARK}", f'{{"type":"{MARK}"}}', json.dumps({"type": "message",
                                                                     "payload": MARK + '"'})):
        await player.send(garbage)
        await inst.send(garbage)
    await player.send("x" * (64 * 1024 + 1) + MARK)
    await closed(player)
    await roundtrip(inst)
    # REST with payloads
    await relay.request("POST", "/relay/instances", ip=other_ip,
                        json_body={"instance_id": "logged", "public_key": key,
                                   "direct_urls": [MARK]})
    await relay.request("POST", f"/relay/claim/{code}", ip=player_ip)
    await inst.close()

    log = relay_proc.log()
    assert "claim_created" in log and "direct_urls_dropped" in log  # the lines exist
    for line in log.splitlines():
        event = json.loads(line)
        if "code" in event:  # claim codes: two characters at most
            assert len(str(event["code"]).rstrip("…")) <= 2, line
    secrets = [MARK, code, payload, key, TURN_SECRET,
               connected["ice_servers"][0]["credential"], connected["ice_servers"][0]["username"],
               owner_ip, other_ip, player_ip, sid, connected["session_id"]]
    for secret in secrets:
        assert secret not in log, secret


async def test_no_node_claim_data_in_the_log(relay_proc: ServiceProcess) -> None:
    """Current mydia's pairing: the log shows that codes were made and deleted, never a
    full code, the node address (it names the server's IPs) or a client address."""
    relay = Relay(relay_proc.url)
    server_ip, player_ip = "81.2.69.170", "198.51.100.70"
    node_addr = json.dumps({"id": MARK, "addrs": [{"Ip": "192.0.2.55:51820"}]})
    status, body, _ = await relay.request("POST", "/pairing/claim", ip=server_ip,
                                          json_body={"node_addr": node_addr})
    assert status == 200
    code = body["claim_code"]
    await relay.request("POST", "/pairing/claim", ip=server_ip,
                        json_body={"node_addr": MARK})  # refused: not JSON
    for path in (f"/pairing/claim/{code}", "/pairing/claim/BADC0DE1",
                 f"/pairing/claim/{code[:6]}ZZ"):
        await relay.request("GET", path, ip=player_ip)
    await relay.request("DELETE", f"/pairing/claim/{code}", ip=player_ip)

    log = relay_proc.log()
    assert "node_claim_created" in log and "node_claim_deleted" in log
    for line in log.splitlines():
        event = json.loads(line)
        if "code" in event:
            assert len(str(event["code"]).rstrip("…")) <= 2, line
    for secret in (MARK, code, code[:6], "192.0.2.55", server_ip, player_ip):
        assert secret not in log, secret
