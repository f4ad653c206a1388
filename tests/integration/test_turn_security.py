"""TURN safety on the real process with the default deny list: no open proxy into private
networks (CreatePermission/ChannelBind only: nothing is ever sent to these addresses), and a
flood of bad credentials opens no socket."""

from __future__ import annotations

import os
import time
from pathlib import Path

from metadata_relay.turn import codec as c
from tests.interop.turn.support import StunClient, code, open_fds, stats, turn_port, turn_service
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
