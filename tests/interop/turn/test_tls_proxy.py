"""TURN over TLS (``turns:``) the way the node serves it: a Traefik-like proxy on loopback
(tests/doubles/tls_proxy.py) terminates TLS and forwards the plain stream to the relay's TURN
TCP port with a PROXY v2 header. aioice and turnutils_uclient relay data through it;
XOR-MAPPED-ADDRESS, TURN_IP_QUOTA and the allocation see the client's address (a distinct
127.0.0.x), not the proxy's; a header from a peer not in TRUSTED_PROXIES, a version 1 header
and a header sent by a client directly are refused."""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aioice.turn
import pytest

from metadata_relay.turn import codec as c
from tests.doubles.tls_proxy import TlsProxy, proxy_v2
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

PROXY_ADDR = "127.0.0.5"
TRUSTING = {"TRUSTED_PROXIES": f"{PROXY_ADDR}/32"}
"""Only the proxy is trusted: the clients (127.0.0.1, 127.0.0.2x) are not."""


def mapped(resp: c.Message) -> tuple[str, int] | None:
    return c.parse_xor_address(resp.attrs[c.XOR_MAPPED_ADDRESS], resp.txid)


@FORWARDING
async def test_aioice_over_tls_through_the_proxy_relays_and_sees_its_own_address(
        tmp_path: Path, forwarding: str) -> None:
    loop = asyncio.get_running_loop()
    with turn_service(tmp_path, forwarding, env=TRUSTING) as svc, \
            TlsProxy(("127.0.0.1", turn_port(svc)), tmp_path, via=PROXY_ADDR).running() as px:
        peer_tr, peer = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        peer_addr = peer_tr.get_extra_info("sockname")
        username, password = credential("tls")
        tr, proto = await aioice.turn.create_turn_endpoint(
            Collect, ("127.0.0.1", px.port), username, password, transport="tcp",
            ssl=px.client_context())
        try:
            [client] = px.clients
            assert tuple(tr.get_extra_info("related_address")) == client  # not 127.0.0.5
            relayed = tr.get_extra_info("sockname")
            for i in range(30):
                payload = b"over tls %d" % i + b"!" * (i % 3)
                tr.sendto(payload, peer_addr)
                data, src = await asyncio.wait_for(peer.queue.get(), 5)
                assert (data, src[:2]) == (payload, tuple(relayed))
                echoed, frm = await asyncio.wait_for(proto.queue.get(), 5)
                assert (echoed, tuple(frm[:2])) == (payload, tuple(peer_addr))
            s = stats(svc)
            assert s["relayed_packets"] == {"client_to_peer": 30, "peer_to_client": 30}
            assert s["tcp_connections"] == 1
        finally:
            tr.close()
            peer_tr.close()


@FORWARDING
def test_the_header_address_is_what_mapping_and_quota_use(tmp_path: Path,
                                                          forwarding: str) -> None:
    env = {**TRUSTING, "TURN_IP_QUOTA": "1"}
    with turn_service(tmp_path, forwarding, env=env) as svc, \
            TlsProxy(("127.0.0.1", turn_port(svc)), tmp_path, via=PROXY_ADDR).running() as px:
        clients = [StunClient(px.port, tls=px.client_context(), source=src, user=f"q{i}")
                   for i, src in enumerate(("127.0.0.21", "127.0.0.21", "127.0.0.22"))]
        try:
            for cl in clients:
                resp = cl.request(c.BINDING, [], sign=False)
                assert mapped(resp) == cl.sock.getsockname()[:2]
            first = clients[0].request(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0")])
            assert code(first) == 200 and mapped(first) == clients[0].sock.getsockname()[:2]
            # TURN_IP_QUOTA=1 per client address: .21 has its allocation, .22 is another client
            assert code(clients[1].request(c.ALLOCATE, [
                (c.REQUESTED_TRANSPORT, b"\x11\0\0\0")])) == 486
            assert code(clients[2].request(c.ALLOCATE, [
                (c.REQUESTED_TRANSPORT, b"\x11\0\0\0")])) == 200
        finally:
            for cl in clients:
                cl.close()


@FORWARDING
def test_turnutils_uclient_over_tls_through_the_proxy(tmp_path: Path, forwarding: str) -> None:
    """uclient -S -t from 127.0.0.23: every message goes to the peer and every echo comes
    back through the relay (the server's counts). uclient 4.6.1's TLS reader takes one frame
    per TLS record and so drops some when a record carries two (seen against coturn's own
    TLS listener too: 0-1 of 120), hence its own loss figure is only bounded here."""
    with turn_service(tmp_path, forwarding, env=TRUSTING) as svc, turnutils_peer() as peer, \
            TlsProxy(("127.0.0.1", turn_port(svc)), tmp_path, via=PROXY_ADDR).running() as px:
        variants = (("-S", "-t"), ("-S", "-t", "-s"))
        with ThreadPoolExecutor(len(variants)) as pool:  # independent client processes
            results = list(pool.map(lambda flags: uclient(
                px.port, peer, *flags, "-L", "127.0.0.23", n=60, m=2, z=5), variants))
        for result in results:
            assert result["returncode"] == 0 and result["sent"] == 120, result["output"]
            assert result["received"] >= 108, result["output"]
        assert {host for host, _port in px.clients} == {"127.0.0.23"}
        assert stats(svc)["relayed_packets"] == {"client_to_peer": 240, "peer_to_client": 240}


@FORWARDING
def test_a_proxy_not_in_trusted_proxies_is_refused(tmp_path: Path, forwarding: str) -> None:
    env = {"TRUSTED_PROXIES": "127.0.0.6/32"}
    with turn_service(tmp_path, forwarding, env=env) as svc, \
            TlsProxy(("127.0.0.1", turn_port(svc)), tmp_path, via=PROXY_ADDR).running() as px:
        cl = StunClient(px.port, tls=px.client_context(), source="127.0.0.21", user="untrusted")
        try:
            cl.send(c.encode(c.BINDING, c.REQUEST, b"t" * 12))
            with pytest.raises((ConnectionError, OSError)):
                cl.recv_frame()  # the relay closed the proxy's stream: garbage to it
        finally:
            cl.close()
        assert stats(svc)["tcp_connections"] == 0


@FORWARDING
def test_headers_clients_send_themselves_are_refused(tmp_path: Path, forwarding: str) -> None:
    """A client not in TRUSTED_PROXIES that sends a PROXY header to pick its address has its
    connection closed; a trusted peer's version 1 header too (with a warning in the log); a
    trusted peer without a header is an ordinary TURN client."""
    with turn_service(tmp_path, forwarding, env=TRUSTING) as svc:
        port = turn_port(svc)
        binding = c.encode(c.BINDING, c.REQUEST, b"b" * 12)
        cases = [("127.0.0.21", proxy_v2(("198.51.100.7", 1), ("127.0.0.1", port), None)),
                 (PROXY_ADDR, b"PROXY TCP4 198.51.100.7 127.0.0.1 1 3478\r\n")]
        for source, head in cases:
            with socket.create_connection(("127.0.0.1", port), 3, (source, 0)) as s:
                s.sendall(head + binding)
                assert s.recv(100) == b"", source
        with socket.create_connection(("127.0.0.1", port), 3, (PROXY_ADDR, 0)) as s:
            s.sendall(binding)
            resp = c.parse(s.recv(100))
            assert resp is not None and mapped(resp) == s.getsockname()[:2]
        for _ in range(50):
            if "turn_proxy_header_refused" in svc.log():
                break
            time.sleep(0.02)
        assert '"reason": "PROXY protocol version 1' in svc.log()
