"""The ``turn`` component in-process on loopback: start/stop releases everything, idle TCP
connections without an allocation are closed."""

from __future__ import annotations

import asyncio
import os

from metadata_relay.config import load_settings
from metadata_relay.turn import codec as c
from metadata_relay.turn.component import TurnComponent
from tests.interop.turn.support import relay_range
from tests.tools import free_tcp_udp_port


def settings(**extra: str):  # type: ignore[no-untyped-def]
    low, high = relay_range(20)
    env = {"TURN_LISTEN_IP": "127.0.0.1", "TURN_PUBLIC_IP": "127.0.0.1",
           "TURN_PORT": str(free_tcp_udp_port()), "TURN_MIN_PORT": str(low),
           "TURN_MAX_PORT": str(high), **extra}
    return load_settings(env)


async def test_idle_tcp_connection_without_allocation_is_closed() -> None:
    s = settings()
    comp = TurnComponent(s, ("secret",))
    comp.tcp_idle = 0.5
    await comp.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.TURN_PORT)
        writer.write(c.encode(c.BINDING, c.REQUEST, os.urandom(12)))
        assert len(await asyncio.wait_for(reader.read(100), 3)) == 32
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed by the server
        writer.close()
        assert comp.stats()["tcp_connections"] == 0
    finally:
        await comp.stop()


async def test_stop_releases_listeners_and_tasks() -> None:
    s = settings()
    before = len(asyncio.all_tasks())
    comp = TurnComponent(s, ("secret",))
    await comp.start()
    assert comp.health() == "ok"
    await comp.stop()
    assert len(asyncio.all_tasks()) == before
    again = TurnComponent(s, ("secret",))  # the port is free again
    await again.start()
    await again.stop()
