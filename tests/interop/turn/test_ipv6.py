"""IPv6 (RFC 6156, RFC 8656) against ``metadata-relay`` as users start it: listeners on both
families, IPv6 relay addresses for aioice and turnutils_uclient (requested, and as the second
relay of a dual allocation) exchanging data with an IPv6 peer on ::1, and the deny list
refusing the IPv6 special ranges exactly as the IPv4 ones. Loopback peers are allowed by
configuration, as in every relaying test."""

from __future__ import annotations

import asyncio
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aioice.turn
import pytest

from metadata_relay.turn import codec as c
from tests.interop.turn.support import (
    FORWARDING,
    StunClient,
    code,
    stats,
    turn_port,
    turn_service,
    turnutils_peer,
    uclient,
)
from tests.interop.turn.test_aioice import Collect, Echo, credential
from tests.unit.turn.harness import relayed
from tests.unit.turn.test_policy import DENIED_ADDRESSES

BOTH = {"TURN_LISTEN_IP": "127.0.0.1,::1", "TURN_PUBLIC_IPV6": "::1",
        "TURN_ALLOWED_PEERS": "127.0.0.0/8,::1/128"}
"""Both families on loopback: IPv4 relays on 127.0.0.1 (the default family), IPv6 on ::1."""
SIX_ONLY = {"TURN_LISTEN_IP": "::1", "TURN_PUBLIC_IPV6": "::1", "TURN_ALLOWED_PEERS": "::1/128"}
"""An IPv6-only node: IPv6 relays, even for a client that does not ask (aioice never does)."""




@FORWARDING
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_aioice_gets_an_ipv6_relay_and_exchanges_data_with_an_ipv6_peer(
        tmp_path: Path, transport: str, forwarding: str) -> None:
    loop = asyncio.get_running_loop()
    with turn_service(tmp_path, forwarding, allow_loopback=False, env=SIX_ONLY) as svc:
        peer_tr, peer = await loop.create_datagram_endpoint(Echo, local_addr=("::1", 0))
        peer_addr = peer_tr.get_extra_info("sockname")[:2]
        username, password = credential("aioice6")
        tr, proto = await aioice.turn.create_turn_endpoint(
            Collect, ("::1", turn_port(svc)), username, password, transport=transport)
        try:
            relayed_addr = tr.get_extra_info("sockname")
            assert relayed_addr[0] == "::1"
            assert tr.get_extra_info("related_address")[0] == "::1"
            for i in range(30):
                payload = b"six %d" % i + b"x" * (i % 5)
                tr.sendto(payload, peer_addr)
                data, src = await asyncio.wait_for(peer.queue.get(), 5)
                assert (data, src[:2]) == (payload, tuple(relayed_addr))
                echoed, frm = await asyncio.wait_for(proto.queue.get(), 5)
                assert (echoed, tuple(frm[:2])) == (payload, tuple(peer_addr))
            assert stats(svc)["relayed_packets"] == {"client_to_peer": 30, "peer_to_client": 30}
        finally:
            tr.close()
            peer_tr.close()


@FORWARDING
def test_turnutils_uclient_ipv6_relay_and_dual_allocation(tmp_path: Path,
                                                         forwarding: str) -> None:
    """uclient -x asks for an IPv6 relay (REQUESTED-ADDRESS-FAMILY) over either listener, UDP
    or TCP, channels or Send indications; -Z makes a dual allocation and talks through its
    IPv6 relay. The peer is turnutils_peer on ::1."""
    with turn_service(tmp_path, forwarding, env=BOTH) as svc, \
            turnutils_peer("::1") as peer:
        runs = [(("-x",), "127.0.0.1"), (("-x",), "::1"), (("-x", "-t"), "::1"),
                (("-x", "-s"), "127.0.0.1"), (("-x", "-t", "-s"), "127.0.0.1"),
                (("-Z",), "127.0.0.1"), (("-Z", "-t"), "::1")]
        with ThreadPoolExecutor(len(runs)) as pool:  # independent client processes
            results = list(pool.map(lambda run: uclient(
                turn_port(svc), peer, *run[0], n=40, m=2, z=2, peer_host="::1",
                server=run[1]), runs))
        for (flags, server), result in zip(runs, results, strict=True):
            assert result["returncode"] == 0, (flags, server, result["output"])
            assert result["sent"] == result["received"] == 80, (flags, result["output"])
            assert result["lost"] == 0, (flags, server, result["output"])
        assert stats(svc)["relayed_packets"]["client_to_peer"] >= 80 * len(runs)


def test_both_listeners_answer_and_the_family_is_the_clients_choice(tmp_path: Path) -> None:
    with turn_service(tmp_path, env=BOTH) as svc:
        port = turn_port(svc)
        for host in ("127.0.0.1", "::1"):
            for tcp in (False, True):
                cl = StunClient(port, tcp=tcp, host=host, user=f"fam{tcp}{host}")
                try:
                    resp = cl.request(c.BINDING, [], sign=False)
                    mapped = c.parse_xor_address(resp.attrs[c.XOR_MAPPED_ADDRESS], resp.txid)
                    assert mapped == cl.sock.getsockname()[:2]
                    # no attribute: IPv4 (RFC 8656), whatever the client's own family
                    assert [a[0] for a in relayed(cl.request(c.ALLOCATE, [
                        (c.REQUESTED_TRANSPORT, b"\x11\0\0\0")]))] == ["127.0.0.1"]
                finally:
                    cl.close()
        cl = StunClient(port, user="six")
        try:
            resp = cl.request(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0"),
                                           (c.REQUESTED_ADDRESS_FAMILY, c.family_value(6))])
            assert [a[0] for a in relayed(resp)] == ["::1"]
            assert code(cl.peer_request(c.CREATE_PERMISSION, ("127.0.0.1", 9))) == 443
        finally:
            cl.close()
        snap = stats(svc)
        assert snap["relay_ports_total"] == 2 * 200  # a range per family


def test_without_an_ipv6_address_ipv6_relays_are_not_offered(tmp_path: Path) -> None:
    """TURN_PUBLIC_IPV6=none, or listeners on IPv4 only (no IPv6 address to bind relays):
    REQUESTED-ADDRESS-FAMILY IPv6 gets 440, ADDITIONAL-ADDRESS-FAMILY an IPv4 relay and an
    ADDRESS-ERROR-CODE 440."""
    for env in ({**BOTH, "TURN_PUBLIC_IPV6": "none"}, {"TURN_PUBLIC_IPV6": "::1"}):
        with turn_service(tmp_path, env=env) as svc:
            cl = StunClient(turn_port(svc), user="nosix")
            try:
                resp = cl.request(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0"),
                                               (c.REQUESTED_ADDRESS_FAMILY, c.family_value(6))])
                assert code(resp) == 440
                resp = cl.request(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0"),
                                               (c.ADDITIONAL_ADDRESS_FAMILY, c.family_value(6))])
                assert code(resp) == 200 and [a[0] for a in relayed(resp)] == ["127.0.0.1"]
                error = resp.attrs[c.ADDRESS_ERROR_CODE]
                assert (error[0], error[2] * 100 + error[3]) == (0x02, 440)
            finally:
                cl.close()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_the_deny_list_refuses_ipv6_special_ranges(tmp_path: Path, tcp: bool) -> None:
    """The default deny list on an IPv6 relay: every denied IPv6 address (and IPv4-mapped,
    -compatible and NAT64 forms) gets 403 for CreatePermission and ChannelBind, and a Send
    indication to it sends nothing; a sink on ::1 (denied: loopback) never hears a byte."""
    env = {"TURN_LISTEN_IP": "127.0.0.1,::1", "TURN_PUBLIC_IPV6": "::1"}
    with turn_service(tmp_path, allow_loopback=False, env=env) as svc:
        sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sink.bind(("::1", 0))
        sink.setblocking(False)
        cl = StunClient(turn_port(svc), tcp=tcp, user="deny6")
        try:
            resp = cl.request(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0"),
                                           (c.REQUESTED_ADDRESS_FAMILY, c.family_value(6))])
            assert code(resp) == 200
            six = [ip for ip in DENIED_ADDRESSES if ":" in ip]
            targets = [*six, "::1"]
            for i, ip in enumerate(targets):
                port = sink.getsockname()[1] if ip == "::1" else 3478
                assert code(cl.peer_request(c.CREATE_PERMISSION, (ip, port))) == 403, ip
                assert code(cl.peer_request(c.CHANNEL_BIND, (ip, port), 0x4000 + i)) == 403, ip
                txid = os.urandom(12)
                cl.send(c.encode(c.SEND, c.INDICATION, txid, [
                    (c.XOR_PEER_ADDRESS, c.xor_address(ip, port, txid)),
                    (c.DATA_ATTR, b"never")]))
            assert code(cl.request(c.REFRESH, [])) == 200  # every indication was read
            with pytest.raises(BlockingIOError):
                sink.recv(100)
            snap = stats(svc)
            assert snap["permissions"] == 0 and snap["channels"] == 0
            assert snap["relayed_packets"]["client_to_peer"] == 0
            assert snap["error_responses"]["403"] == 2 * len(targets)
        finally:
            cl.close()
            sink.close()
