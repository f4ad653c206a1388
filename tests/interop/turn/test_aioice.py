"""aioice 0.13 (an independent TURN client) against ``metadata-relay``: allocations over UDP and
TCP with data both ways, and two ICE agents forced to relay-only connecting through us."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aioice
import aioice.turn
import pytest

from metadata_relay.turn.credentials import rest_credential
from tests.interop.turn.support import FORWARDING, SECRET, stats, turn_port, turn_service


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))


class Echo(Collect):
    def datagram_received(self, data: bytes, addr: Any) -> None:
        super().datagram_received(data, addr)
        self.transport.sendto(data, addr)


def credential(user: str) -> tuple[str, str]:
    return rest_credential(SECRET, user, 600, time.time())


@FORWARDING
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_aioice_allocates_and_relays_both_ways(tmp_path: Path, transport: str,
                                                     forwarding: str) -> None:
    loop = asyncio.get_running_loop()
    with turn_service(tmp_path, forwarding) as svc:
        peer_tr, peer = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        peer_addr = peer_tr.get_extra_info("sockname")
        username, password = credential("aioice")
        tr, proto = await aioice.turn.create_turn_endpoint(
            Collect, ("127.0.0.1", turn_port(svc)), username, password, transport=transport)
        try:
            relayed = tr.get_extra_info("sockname")
            assert relayed[0] == "127.0.0.1"
            assert int(svc.env["TURN_MIN_PORT"]) <= relayed[1] <= int(svc.env["TURN_MAX_PORT"])
            for i in range(50):
                payload = f"ping {i}".encode() + b"x" * (i % 7)  # odd sizes: TCP padding
                tr.sendto(payload, peer_addr)
                data, src = await asyncio.wait_for(peer.queue.get(), 5)
                assert (data, src[:2]) == (payload, tuple(relayed))  # peer sees the relay
                echoed, frm = await asyncio.wait_for(proto.queue.get(), 5)
                assert (echoed, tuple(frm[:2])) == (payload, tuple(peer_addr))
            s = stats(svc)
            assert s["allocations"] == 1 and s["channels"] == 1
            assert s["relayed_packets"] == {"client_to_peer": 50, "peer_to_client": 50}
        finally:
            tr.close()  # Refresh(LIFETIME=0)
            peer_tr.close()
        for _ in range(50):
            if stats(svc)["allocations"] == 0:
                break
            await asyncio.sleep(0.05)
        s = stats(svc)
        assert s["allocations"] == 0
        assert s["relay_ports_free"] == s["relay_ports_total"]


@FORWARDING
@pytest.mark.parametrize("allow_loopback", [True, False])
async def test_two_relay_only_ice_agents_connect(tmp_path: Path, allow_loopback: bool,
                                                 forwarding: str) -> None:
    # Without the loopback allow-list the pair still connects: a peer that is one of our own
    # relay addresses is reachable on relay-range ports only (reference/turn.md 2.2, #45).
    with turn_service(tmp_path, forwarding, allow_loopback=allow_loopback) as svc:
        agents = []
        for i, controlling in enumerate((True, False)):
            username, password = credential(f"ice{i}")
            agents.append(aioice.Connection(
                ice_controlling=controlling, turn_server=("127.0.0.1", turn_port(svc)),
                turn_username=username, turn_password=password, use_ipv6=False,
                transport_policy=aioice.TransportPolicy.RELAY))
        a, b = agents
        try:
            await asyncio.gather(a.gather_candidates(), b.gather_candidates())
            assert a.local_candidates and all(c.type == "relay" for c in a.local_candidates)
            for x, y in ((a, b), (b, a)):
                for cand in y.local_candidates:
                    await x.add_remote_candidate(cand)
                await x.add_remote_candidate(None)
                x.remote_username, x.remote_password = y.local_username, y.local_password
            await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 20)
            for i in range(20):
                await a.send(f"a{i}".encode())
                assert await asyncio.wait_for(b.recv(), 5) == f"a{i}".encode()
                await b.send(f"b{i}".encode())
                assert await asyncio.wait_for(a.recv(), 5) == f"b{i}".encode()
        finally:
            await asyncio.gather(a.close(), b.close())
