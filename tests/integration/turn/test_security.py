"""TURN safety on the real process with the default deny list: no open proxy into private
networks (CreatePermission/ChannelBind only: nothing is ever sent to these addresses), and a
flood of bad credentials opens no socket."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from metadata_relay.turn import codec as c
from tests.interop.turn.support import (
    FORWARDING,
    StunClient,
    code,
    open_fds,
    relay_range,
    stats,
    turn_port,
    turn_service,
)
from tests.tools import queued_datagrams
from tests.unit.turn.test_policy import DENIED_ADDRESSES


def test_every_default_denied_address_gets_403(tmp_path: Path) -> None:
    with turn_service(tmp_path, allow_loopback=False) as svc:
        for tcp in (False, True):
            cl = StunClient(turn_port(svc), tcp=tcp, user=f"sec{tcp}")
            try:
                cl.allocate()
                for i, ip in enumerate(DENIED_ADDRESSES):
                    perm = cl.peer_request(c.CREATE_PERMISSION, (ip, 3478))
                    assert code(perm) == 403, ip
                    assert perm.verify_integrity(cl.key)
                    bind = cl.peer_request(c.CHANNEL_BIND, (ip, 3478), channel=0x4000 + i)
                    assert code(bind) == 403, ip
            finally:
                cl.close()
        s = stats(svc)
        assert s["permissions"] == 0 and s["channels"] == 0
        assert s["error_responses"]["403"] == 4 * len(DENIED_ADDRESSES)


def test_thousand_bad_credential_allocations_leave_nothing_open(tmp_path: Path) -> None:
    with turn_service(tmp_path, allow_loopback=False) as svc:
        pid = svc.proc.pid
        cl = StunClient(turn_port(svc), user="flood", secret="not-the-secret")
        try:
            assert code(cl.request(c.BINDING, [], sign=False)) == 200
            before = stats(svc)
            before_fds = open_fds(pid)
            first = cl.request(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0")])
            assert code(first) == 401
            for _ in range(999):
                txid = os.urandom(12)
                cl.send(c.encode(c.ALLOCATE, c.REQUEST, txid, [
                    (c.REQUESTED_TRANSPORT, b"\x11\0\0\0"),
                    (c.USERNAME, cl.username.encode()), (c.REALM, b"metadata-relay"),
                    (c.NONCE, cl.nonce.encode())], key=cl.key, fingerprint=True))
                resp = cl.recv_message()
                assert code(resp) == 401 and resp.txid == txid
            after = stats(svc)
            # the /stats HTTP connection may still be closing: let the fd count settle
            fds_now = open_fds(pid)
            for _ in range(40):
                if fds_now <= before_fds:
                    break
                time.sleep(0.05)
                fds_now = open_fds(pid)
            assert fds_now <= before_fds
            assert after["allocations"] == 0 and after["allocations_total"] == 0
            assert after["relay_ports_free"] == before["relay_ports_free"] \
                == before["relay_ports_total"]
            assert after["auth_failures"]["bad_integrity"] == 1000
        finally:
            cl.close()


def udp_sink(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(3)
    return s


def send_indication(cl: StunClient, peer: tuple[str, int], data: bytes) -> None:
    txid = os.urandom(12)
    cl.send(c.encode(c.SEND, c.INDICATION, txid, [
        (c.XOR_PEER_ADDRESS, c.xor_address(peer[0], peer[1], txid)), (c.DATA_ATTR, data)]))


@FORWARDING
def test_no_send_reaches_the_relays_own_address_outside_the_relay_range(
        tmp_path: Path, forwarding: str) -> None:
    """Issue 13 #4: with a public relay address (here 127.0.0.1 with a deny list that does not
    cover it) a TURN client reached every port of the node. Now only relay-range ports: no
    permission, channel or Send indication reaches a service on the own address."""
    env = {"TURN_DENIED_PEERS": "10.0.0.0/8"}  # 127.0.0.1 plays a public address
    with turn_service(tmp_path, forwarding, allow_loopback=False, env=env) as svc:
        low, high = int(svc.env["TURN_MIN_PORT"]), int(svc.env["TURN_MAX_PORT"])
        service, peer = udp_sink("127.0.0.1"), udp_sink("127.0.0.2")
        own = service.getsockname()
        service.setblocking(False)  # read only for what is queued
        assert not low <= own[1] <= high
        clients = []
        try:
            for tcp in (False, True):
                other = StunClient(turn_port(svc), user=f"other{tcp}")
                cl = StunClient(turn_port(svc), tcp=tcp, user=f"own{tcp}")
                clients += [other, cl]
                other_relay = other.allocate()
                cl.allocate()
                assert code(cl.peer_request(c.CREATE_PERMISSION, own)) == 403
                assert code(cl.peer_request(c.CHANNEL_BIND, own, 0x4000)) == 403
                # relay-to-relay (another client of this server) stays possible
                assert code(cl.peer_request(c.CHANNEL_BIND, other_relay, 0x4001)) == 200
                assert code(cl.peer_request(c.CREATE_PERMISSION, peer.getsockname())) == 200
                for port in (own[1], low - 1, high + 1):
                    send_indication(cl, ("127.0.0.1", port), b"to the node")
                    send_indication(cl, ("::ffff:127.0.0.1", port), b"to the node")
                send_indication(cl, peer.getsockname(), b"marker")
                assert peer.recv(100) == b"marker"  # sent after the others, by the same relay
                assert queued_datagrams(service) == []
            assert stats(svc)["error_responses"]["403"] == 4
        finally:
            for cl in clients:
                cl.close()
            service.close()
            peer.close()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_one_source_address_cannot_take_every_relay_port(tmp_path: Path, tcp: bool) -> None:
    """Issue 13 #5: 11 TURN users took all 101 relay ports and a newcomer got 508. With
    TURN_IP_QUOTA one address gets 486 after its quota while other addresses still
    allocate."""
    low, high = relay_range(12)
    env = {"TURN_MIN_PORT": str(low), "TURN_MAX_PORT": str(high), "TURN_IP_QUOTA": "4"}
    with turn_service(tmp_path, env=env) as svc:
        clients = []
        try:
            for i in range(6):  # one source, a new user each time (user quota never fires)
                cl = StunClient(turn_port(svc), tcp=tcp, user=f"greedy{i}", source="127.0.0.2")
                clients.append(cl)
                resp = cl.request(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0")])
                assert code(resp) == (200 if i < 4 else 486)
                assert resp.verify_integrity(cl.key)
            for source in ("127.0.0.3", "127.0.0.4"):
                newcomer = StunClient(turn_port(svc), tcp=tcp, user="newcomer", source=source)
                clients.append(newcomer)
                newcomer.allocate()
            s = stats(svc)
            assert s["allocations"] == 6 and s["relay_ports_free"] == 6
            assert s["error_responses"]["486"] == 2
        finally:
            for cl in clients:
                cl.close()
