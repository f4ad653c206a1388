"""TURN transports on the real process: TCP framing (split and coalesced frames, padding),
peer data rules, the bandwidth limit on UDP, TCP close, /stats and /metrics."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from metadata_relay.turn import codec as c
from tests.interop.turn.support import (
    StunClient,
    code,
    metrics,
    stats,
    turn_port,
    turn_service,
)


def sink() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    return s


def drain(s: socket.socket, wait: float = 0.3) -> list[bytes]:
    out = []
    s.settimeout(wait)
    try:
        while True:
            out.append(s.recv(65535))
    except OSError:
        return out


def test_tcp_frames_split_byte_by_byte_and_coalesced(tmp_path: Path) -> None:
    with turn_service(tmp_path) as svc:
        peer = sink()
        peer_addr = peer.getsockname()
        cl = StunClient(turn_port(svc), tcp=True, user="tcpframes")
        try:
            relay = cl.allocate()
            assert code(cl.peer_request(c.CHANNEL_BIND, peer_addr, channel=0x4001)) == 200
            # a Binding request sent one byte at a time
            binding = c.encode(c.BINDING, c.REQUEST, os.urandom(12), fingerprint=True)
            for b in binding:
                cl.sock.sendall(bytes([b]))
                time.sleep(0.001)
            assert code(cl.recv_message()) == 200
            # three padded ChannelData frames and a Binding in one write
            frames = [c.channel_data(0x4001, p, pad=True) for p in (b"a", b"bbbbb", b"cccc")]
            cl.sock.sendall(b"".join(frames) + binding)
            assert code(cl.recv_message()) == 200
            got = [peer.recvfrom(100) for _ in range(3)]
            assert [g[0] for g in got] == [b"a", b"bbbbb", b"cccc"]
            assert all(g[1] == relay for g in got)
            # peer -> client comes back as padded ChannelData
            peer.sendto(b"xyz", relay)
            frame = cl.recv_frame()
            assert frame == b"\x40\x01\x00\x03xyz\x00"
            assert stats(svc)["tcp_connections"] == 1
        finally:
            cl.close()
        for _ in range(40):  # TCP close deletes the allocation at once
            if stats(svc)["allocations"] == 0:
                break
            time.sleep(0.05)
        s = stats(svc)
        assert s["allocations"] == 0 and s["relay_ports_free"] == s["relay_ports_total"]
        peer.close()


def test_tcp_garbage_closes_the_connection(tmp_path: Path) -> None:
    with turn_service(tmp_path) as svc:
        for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40,
                        b"\xff" * 64, b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\0" * 12):
            s = socket.create_connection(("127.0.0.1", turn_port(svc)), timeout=3)
            s.sendall(garbage)
            assert s.recv(100) == b""
            s.close()


def test_peer_data_needs_permission_and_uses_data_indication_without_channel(
        tmp_path: Path) -> None:
    with turn_service(tmp_path) as svc:
        peer = sink()
        cl = StunClient(turn_port(svc), user="peerdata")
        try:
            relay = cl.allocate()
            peer.sendto(b"unsolicited", relay)
            cl.sock.settimeout(0.3)
            try:
                data = cl.sock.recv(100)
                raise AssertionError(f"relayed without permission: {data!r}")
            except TimeoutError:
                pass
            cl.sock.settimeout(3)
            assert code(cl.peer_request(c.CREATE_PERMISSION, peer.getsockname())) == 200
            peer.sendto(b"welcome", relay)
            msg = c.parse(cl.recv_frame())
            assert msg is not None and (msg.method, msg.cls) == (c.DATA, c.INDICATION)
            assert msg.attrs[c.DATA_ATTR] == b"welcome"
            assert c.parse_xor_address(msg.attrs[c.XOR_PEER_ADDRESS], msg.txid) \
                == peer.getsockname()
            # Send indication out; ChannelData with a length beyond the datagram is dropped
            txid = os.urandom(12)
            cl.send(c.encode(c.SEND, c.INDICATION, txid, [
                (c.XOR_PEER_ADDRESS, c.xor_address(*peer.getsockname(), txid)),
                (c.DATA_ATTR, b"via send")]))
            assert peer.recvfrom(100) == (b"via send", relay)
            assert code(cl.peer_request(c.CHANNEL_BIND, peer.getsockname(), 0x4002)) == 200
            cl.send(b"\x40\x02\x00\x10short")
            cl.send(c.channel_data(0x4003, b"unbound channel"))
            cl.send(c.channel_data(0x4002, b"ok"))
            assert drain(peer) == [b"ok"]
        finally:
            cl.close()
            peer.close()


def test_bandwidth_limit_fires_on_udp(tmp_path: Path) -> None:
    with turn_service(tmp_path, env={"TURN_MAX_RATE": "1000"}) as svc:
        peer = sink()
        cl = StunClient(turn_port(svc), user="ratelimited")
        try:
            cl.allocate()
            assert code(cl.peer_request(c.CHANNEL_BIND, peer.getsockname(), 0x4000)) == 200
            frame = c.channel_data(0x4000, b"x" * 1000)
            for _ in range(200):
                cl.send(frame)
            received = drain(peer, 0.5)
            # burst of 64 KiB passes, the rest of the 200 KB is over the 1 KB/s rate
            assert 60 <= len(received) <= 100
        finally:
            cl.close()
            peer.close()


def test_stats_and_metrics_report_turn_counters(tmp_path: Path) -> None:
    with turn_service(tmp_path) as svc:
        peer = sink()
        cl = StunClient(turn_port(svc), user="metrics")
        try:
            relay = cl.allocate()
            assert code(cl.peer_request(c.CHANNEL_BIND, peer.getsockname(), 0x4000)) == 200
            cl.send(c.channel_data(0x4000, b"12345"))
            assert peer.recvfrom(100)[0] == b"12345"
            peer.sendto(b"abc", relay)
            assert cl.recv_frame() == b"\x40\x00\x00\x03abc"
            s = stats(svc)
            assert s["allocations"] == 1 and s["permissions"] == 1 and s["channels"] == 1
            assert s["relayed_packets"] == {"client_to_peer": 1, "peer_to_client": 1}
            assert s["relayed_bytes"] == {"client_to_peer": 5, "peer_to_client": 3}
            assert s["auth_failures"]["missing_credentials"] == 1
            text = metrics(svc)
            assert "relay_turn_allocations 1.0" in text
            assert 'relay_turn_relayed_packets_total{direction="client_to_peer"} 1.0' in text
            assert 'relay_turn_auth_failures_total{reason="missing_credentials"} 1.0' in text
            assert 'relay_turn_error_responses_total{code="401"} 1.0' in text
        finally:
            cl.close()
            peer.close()


def test_bandwidth_limit_fires_on_tcp(tmp_path: Path) -> None:
    with turn_service(tmp_path, env={"TURN_MAX_RATE": "1000"}) as svc:
        peer = sink()
        cl = StunClient(turn_port(svc), tcp=True, user="ratelimited-tcp")
        try:
            cl.allocate()
            assert code(cl.peer_request(c.CHANNEL_BIND, peer.getsockname(), 0x4000)) == 200
            cl.sock.sendall(c.channel_data(0x4000, b"x" * 1000, pad=True) * 200)
            received = drain(peer, 0.5)
            assert 60 <= len(received) <= 100
        finally:
            cl.close()
            peer.close()
