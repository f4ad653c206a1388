"""The two TURN UDP engines: the C forwarder (listener and relay sockets on one epoll set;
the default where it is built) and the event-loop edge (``native_forwarding=False``).

Bursts queued all at once are relayed complete and in order per flow, both ways; garbage,
truncated and oversized datagrams inside a batch drop only themselves; IPv6 loopback; sockets,
fds and relay ports go back to baseline after release."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from metadata_relay.config import load_settings
from metadata_relay.turn import codec as c
from metadata_relay.turn.allocation import MAX_UDP
from metadata_relay.turn.component import TurnComponent
from metadata_relay.turn.native import NativeEngine
from tests.interop.turn.support import (
    FORWARDING,
    SECRET,
    StunClient,
    code,
    open_fds,
    relay_range,
    stats,
    turn_port,
    turn_service,
)
from tests.tools import free_tcp_udp_port, require_native

BURST = 150
BUFFER = 1 << 21


class Client(StunClient):
    """:class:`StunClient` over UDP on IPv4 or IPv6 loopback, with a large receive buffer."""

    def __init__(self, port: int, host: str = "127.0.0.1", user: str = "batch") -> None:
        super().__init__(port, user=user)
        if host != "127.0.0.1":
            self.sock.close()
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            self.sock.settimeout(3)
            self.sock.connect((host, port))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)

    def channel_payloads(self, until: bytes) -> list[bytes]:
        """ChannelData payloads received up to and including ``until``."""
        out: list[bytes] = []
        while True:
            parsed = c.parse_channel_data(self.sock.recv(65535))
            if parsed is None:
                continue  # a STUN answer to something in the burst
            out.append(parsed[1])
            if parsed[1] == until:
                return out


def sink(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    s.bind((host, 0))
    s.settimeout(3)
    return s


def received(s: socket.socket, until: bytes) -> list[bytes]:
    out = []
    while True:
        data = s.recv(65535)
        out.append(data)
        if data == until:
            return out


def component_settings():  # type: ignore[no-untyped-def]
    low, high = relay_range(50)
    return load_settings({
        "TURN_LISTEN_IP": "127.0.0.1", "TURN_PUBLIC_IP": "127.0.0.1",
        "TURN_PORT": str(free_tcp_udp_port()), "TURN_MIN_PORT": str(low),
        "TURN_MAX_PORT": str(high), "TURN_ALLOWED_PEERS": "127.0.0.0/8"})


ENGINES = pytest.mark.parametrize("native_fw", [True, False], ids=["native", "event-loop"])


@ENGINES
async def test_burst_queued_at_once_is_relayed_in_order_per_flow(native_fw: bool) -> None:
    if native_fw:
        require_native()
    s = component_settings()
    comp = TurnComponent(s, (SECRET,), native_forwarding=native_fw)
    await comp.start()
    flows = []
    try:
        assert isinstance(comp.engine, NativeEngine) is native_fw
        for k in range(3):
            cl, peer = Client(s.TURN_PORT, user=f"burst{k}"), sink()
            relay = await asyncio.to_thread(cl.allocate)
            bound = await asyncio.to_thread(cl.peer_request, c.CHANNEL_BIND,
                                            peer.getsockname(), 0x4000 + k)
            assert code(bound) == 200
            flows.append((cl, peer, relay, 0x4000 + k))
        # Sent while the event loop is blocked: every datagram of the burst is queued in the
        # kernel before the server reads any, so batches of many datagrams are read at once.
        for i in range(BURST):
            for cl, peer, relay, ch in flows:
                cl.send(c.channel_data(ch, b"up %d %d" % (ch, i)))
                peer.sendto(b"down %d %d" % (ch, i), relay)
        for cl, peer, _relay, ch in flows:
            up = await asyncio.to_thread(received, peer, b"up %d %d" % (ch, BURST - 1))
            assert up == [b"up %d %d" % (ch, i) for i in range(BURST)]
            down = await asyncio.to_thread(cl.channel_payloads, b"down %d %d" % (ch, BURST - 1))
            assert down == [b"down %d %d" % (ch, i) for i in range(BURST)]
        relayed = comp.stats()["relayed_packets"]  # settles the C forwarder's counts first
        assert relayed == {"client_to_peer": 3 * BURST, "peer_to_client": 3 * BURST}
        assert comp.stats()["relayed_bytes"]["client_to_peer"] == sum(
            len(b"up %d %d" % (ch, i)) for _c, _p, _r, ch in flows for i in range(BURST))
    finally:
        for cl, peer, _relay, _ch in flows:
            cl.close()
            peer.close()
        await comp.stop()


@ENGINES
async def test_release_returns_sockets_and_ports(native_fw: bool) -> None:
    if native_fw:
        require_native()
    s = component_settings()
    comp = TurnComponent(s, (SECRET,), native_forwarding=native_fw)
    await comp.start()
    try:
        base = len(os.listdir("/proc/self/fd"))
        clients = [Client(s.TURN_PORT, user=f"rel{k}") for k in range(10)]
        peer = sink()
        for k, cl in enumerate(clients):
            await asyncio.to_thread(cl.allocate)
            bound = await asyncio.to_thread(cl.peer_request, c.CHANNEL_BIND, peer.getsockname(),
                                            0x4000 + k)
            assert code(bound) == 200
            cl.send(c.channel_data(0x4000 + k, b"hi"))
        assert await asyncio.to_thread(received, peer, b"hi") == [b"hi"]
        assert comp.stats()["allocations"] == 10
        for cl in clients:
            resp = await asyncio.to_thread(cl.request, c.REFRESH, [(c.LIFETIME, c.uint32(0))])
            assert code(resp) == 200
            cl.close()
        peer.close()
        snap = comp.stats()
        assert snap["allocations"] == 0 and snap["relay_ports_free"] == snap["relay_ports_total"]
        for _ in range(100):  # event-loop endpoints close on a later loop iteration
            if len(os.listdir("/proc/self/fd")) == base:
                break
            await asyncio.sleep(0.01)
        assert len(os.listdir("/proc/self/fd")) == base  # relay sockets are gone
    finally:
        await comp.stop()


@FORWARDING
def test_garbage_and_oversized_datagrams_drop_only_themselves(tmp_path: Path,
                                                              forwarding: str) -> None:
    with turn_service(tmp_path, forwarding) as svc:
        cl, peer = Client(turn_port(svc), user="garbage"), sink()
        try:
            relay = cl.allocate()
            assert code(cl.peer_request(c.CHANNEL_BIND, peer.getsockname(), 0x4001)) == 200
            rounds = iter(range(10**6))

            @hsettings(max_examples=40, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture])
            @given(up=st.lists(st.one_of(
                       st.binary(max_size=300).map(lambda b: c.channel_data(0x4001, b)),
                       st.binary(max_size=200),  # garbage, may look like anything
                       st.builds(lambda n: b"\x40\x01" + n.to_bytes(2, "big") + b"short",
                                 st.integers(6, 0xFFFF)),  # length beyond the datagram
                   ), max_size=40),
                   down=st.lists(st.one_of(
                       st.binary(max_size=300),
                       st.integers(MAX_UDP - 3, MAX_UDP).map(bytes),  # too big for a frame
                   ), max_size=40).filter(lambda d: sum(len(x) > 300 for x in d) <= 4))
            def check(up: list[bytes], down: list[bytes]) -> None:
                n = next(rounds)
                end_up, end_down = b"end up %d" % n, b"end down %d" % n
                for data in up:
                    cl.send(data)
                cl.send(c.channel_data(0x4001, end_up))
                for data in down:
                    peer.sendto(data, relay)
                peer.sendto(end_down, relay)
                expected_up = []
                for data in up:
                    parsed = c.parse_channel_data(data)
                    if parsed is not None and parsed[0] == 0x4001 and data[0] & 0xC0 == 0x40:
                        expected_up.append(parsed[1])
                assert received(peer, end_up) == [*expected_up, end_up]
                expected_down = [d for d in down if len(d) + 4 <= MAX_UDP]
                assert cl.channel_payloads(end_down) == [*expected_down, end_down]

            check()
            assert stats(svc)["allocations"] == 1
        finally:
            cl.close()
            peer.close()


@FORWARDING
def test_ipv6_loopback_relays_both_ways(tmp_path: Path, forwarding: str) -> None:
    env = {"TURN_LISTEN_IP": "::1", "TURN_PUBLIC_IP": "::1", "TURN_ALLOWED_PEERS": "::1/128"}
    with turn_service(tmp_path, forwarding, allow_loopback=False, env=env) as svc:
        cl, peer, other = Client(turn_port(svc), host="::1", user="six"), sink("::1"), sink("::1")
        try:
            relay = cl.allocate()
            assert relay[0] == "::1"
            peer_addr = peer.getsockname()[:2]
            assert code(cl.peer_request(c.CHANNEL_BIND, peer_addr, 0x4000)) == 200
            for i in range(BURST):
                cl.send(c.channel_data(0x4000, b"up %d" % i))
                peer.sendto(b"down %d" % i, relay)
            assert received(peer, b"up %d" % (BURST - 1)) == [b"up %d" % i for i in range(BURST)]
            assert cl.channel_payloads(b"down %d" % (BURST - 1)) == [
                b"down %d" % i for i in range(BURST)]
            # same IP, other port: permitted, no channel -> Data indication with its address
            other.sendto(b"no channel", relay)
            while True:
                msg = c.parse(cl.sock.recv(65535))
                if msg is not None and (msg.method, msg.cls) == (c.DATA, c.INDICATION):
                    break
            assert msg.attrs[c.DATA_ATTR] == b"no channel"
            assert c.parse_xor_address(msg.attrs[c.XOR_PEER_ADDRESS], msg.txid) \
                == other.getsockname()[:2]
            base = open_fds(svc.proc.pid)
            assert code(cl.request(c.REFRESH, [(c.LIFETIME, c.uint32(0))])) == 200
            snap = stats(svc)
            assert snap["allocations"] == 0
            assert snap["relay_ports_free"] == snap["relay_ports_total"]
            for _ in range(100):  # the /stats connection may still be closing
                if open_fds(svc.proc.pid) == base - 1:
                    break
                time.sleep(0.02)
            assert open_fds(svc.proc.pid) == base - 1  # the relay socket is gone
        finally:
            cl.close()
            peer.close()
            other.close()
