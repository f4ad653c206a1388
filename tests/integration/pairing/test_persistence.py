"""kill -9 and restart: instances and unexpired claims survive; sockets re-register."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.integration.pairing.conftest import TURN_SECRET
from tests.integration.pairing.helpers import (
    Relay,
    create_claim,
    new_key,
    recv,
    register_ws,
    send,
)
from tests.tools import start_service


async def test_kill_9_keeps_instances_and_unexpired_claims(tmp_path: Path) -> None:
    env = {"TURN_SECRET": TURN_SECRET}
    svc = start_service(tmp_path, env)
    try:
        relay = Relay(svc.url)
        key = new_key()
        token = await relay.register("durable", key, ["https://10.1.1.1:4000"])
        inst = await register_ws(relay, "durable", key)
        code = (await create_claim(inst, user="u-9", ttl=600))["code"]
        used = (await create_claim(inst, user="u-used"))["code"]
        await send(inst, {"type": "consume_claim", "claim_code": used})
        await send(inst, {"type": "ping"})
        await recv(inst)
    finally:
        svc.stop(signal.SIGKILL)
    env["PORT"] = str(svc.port)
    svc = start_service(tmp_path, env)
    try:
        relay = Relay(svc.url)
        status, info, _ = await relay.request("GET", "/relay/instances/durable/connect",
                                              token=token)
        assert status == 200 and info["public_key"] == key
        assert info["direct_urls"] == ["https://192.168.1.10:4443"]  # from register
        assert info["online"] is False  # its socket died with the process
        status, body, _ = await relay.request("POST", f"/relay/claim/{code}")
        assert status == 200 and body["user_id"] == "u-9"
        status, _, _ = await relay.request("POST", f"/relay/claim/{used}")
        assert status == 400  # consumed stays consumed
        # the token issued before the restart is still valid (secret persisted)
        status, _, _ = await relay.request("PUT", "/relay/instances/durable/heartbeat",
                                           token=token)
        assert status == 200
        # the instance reconnects and the saved code pairs a player
        inst = await register_ws(relay, "durable", key)
        player = await relay.client()
        await send(player, {"type": "connect", "claim_code": code})
        assert (await recv(player))["type"] == "connected"
        assert (await recv(inst))["type"] == "connection"
        await player.close()
        await inst.close()
    finally:
        svc.stop()
