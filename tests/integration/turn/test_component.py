"""The ``turn`` component in-process on loopback, its clock injected: start/stop releases
everything, idle TCP connections without an allocation are closed, an expired credential is
refused on every request."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from metadata_relay.config import load_settings
from metadata_relay.turn import codec as c
from metadata_relay.turn.component import TurnComponent
from tests.interop.turn.support import SECRET, StunClient, code, relay_range
from tests.tools import free_tcp_udp_port


def settings(**extra: str):  # type: ignore[no-untyped-def]
    low, high = relay_range(20)
    env = {"TURN_LISTEN_IP": "127.0.0.1", "TURN_PUBLIC_IP": "127.0.0.1",
           "TURN_PORT": str(free_tcp_udp_port()), "TURN_MIN_PORT": str(low),
           "TURN_MAX_PORT": str(high), **extra}
    return load_settings(env)


class Clock:
    """The component's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_idle_tcp_connection_without_allocation_is_closed() -> None:
    s = settings()
    clock = Clock()
    comp = TurnComponent(s, (SECRET,), clock=clock)
    await comp.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.TURN_PORT)
        writer.write(c.encode(c.BINDING, c.REQUEST, os.urandom(12)))
        assert len(await asyncio.wait_for(reader.read(100), 3)) == 32
        holder = StunClient(s.TURN_PORT, tcp=True, user="holder")  # has an allocation
        await asyncio.to_thread(holder.allocate)
        comp.tick(clock.now + comp.tcp_idle)
        assert comp.stats()["tcp_connections"] == 2
        comp.tick(clock.now + comp.tcp_idle + 1)
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed by the server
        writer.close()
        resp = await asyncio.to_thread(holder.request, c.REFRESH, [])
        assert code(resp) == 200  # the one holding an allocation stays
        assert comp.stats()["tcp_connections"] == 1
        holder.close()
    finally:
        await comp.stop()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_expired_credential_gets_a_signed_401_on_every_request(tcp: bool) -> None:
    """Issue 13 #5: Refresh, CreatePermission and ChannelBind once the credential's
    timestamp has passed: 401 with MESSAGE-INTEGRITY and FINGERPRINT; the allocation ends
    with its lifetime."""
    s = settings(TURN_ALLOWED_PEERS="127.0.0.0/8")
    clock = Clock()
    comp = TurnComponent(s, (SECRET,), clock=clock)
    await comp.start()
    cl = StunClient(s.TURN_PORT, tcp=tcp, user="expiring", ttl=60, now=clock.now)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    try:
        await asyncio.to_thread(cl.allocate)
        resp = await asyncio.to_thread(cl.request, c.REFRESH, [(c.LIFETIME, c.uint32(3600))])
        assert code(resp) == 200
        clock.now += 61
        answers = [
            await asyncio.to_thread(cl.request, c.REFRESH, [(c.LIFETIME, c.uint32(3600))]),
            await asyncio.to_thread(cl.peer_request, c.CREATE_PERMISSION, peer.getsockname()),
            await asyncio.to_thread(cl.peer_request, c.CHANNEL_BIND, peer.getsockname(), 0x4000),
            await asyncio.to_thread(cl.request, c.REFRESH, [(c.LIFETIME, c.uint32(0))]),
        ]
        for resp in answers:
            assert code(resp) == 401
            assert resp.has_fingerprint and resp.verify_integrity(cl.key)
        snap = comp.stats()
        assert snap["auth_failures"]["expired"] == 4
        assert (snap["allocations"], snap["permissions"], snap["channels"]) == (1, 0, 0)
        comp.tick(clock.now - 61 + 3600)  # its lifetime, set before the credential expired
        assert comp.stats()["allocations"] == 0
    finally:
        cl.close()
        peer.close()
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
