"""Helpers for TURN tests against the real ``metadata-relay`` process on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metadata_relay.turn import codec as c
from metadata_relay.turn.credentials import long_term_key, rest_credential
from tests.tools import ServiceProcess, require_native, require_tool, start_service

SECRET = "interop-turn-secret"
REALM = "metadata-relay"


def relay_range(size: int = 200) -> tuple[int, int]:
    """A relay port range below the ephemeral range (fewer clashes with other tests)."""
    low = random.randrange(20000, 32000 - size)
    return low, low + size - 1


def turn_env(allow_loopback: bool = True, **extra: str) -> dict[str, str]:
    low, high = relay_range()
    env = {
        "TURN_SECRET": SECRET,
        "TURN_MIN_PORT": str(low),
        "TURN_MAX_PORT": str(high),
        "TURN_USER_QUOTA": "100",
    }
    if allow_loopback:
        env["TURN_ALLOWED_PEERS"] = "127.0.0.0/8"
    env.update(extra)
    return env


FORWARDING = pytest.mark.parametrize("forwarding", ["native", "event-loop"])
"""Run a relaying test on both UDP engines: the C forwarder and the event-loop edge."""


@contextlib.contextmanager
def turn_service(tmp_path: Path, forwarding: str | None = None, **kw: Any
                 ) -> Iterator[ServiceProcess]:
    """The service with TURN on loopback; ``forwarding`` ("native"/"event-loop") picks the
    UDP engine via TURN_NATIVE_FORWARDING and checks the service runs that one."""
    extra = dict(kw.pop("env", {}))
    if forwarding == "native":
        require_native()
    if forwarding is not None:
        extra["TURN_NATIVE_FORWARDING"] = str(forwarding == "native").lower()
    svc = start_service(tmp_path, turn_env(**kw, **extra))
    try:
        if forwarding is not None:
            started = [line for line in svc.log().splitlines() if "turn_started" in line]
            assert started and f'"udp_io": "{forwarding}"' in started[0], started
        yield svc
    finally:
        svc.stop()


def turn_port(svc: ServiceProcess) -> int:
    return int(svc.env["TURN_PORT"])


def stats(svc: ServiceProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{svc.url}/stats", timeout=5) as r:
        return dict(json.loads(r.read())["turn"])


def metrics(svc: ServiceProcess) -> str:
    with urllib.request.urlopen(f"{svc.url}/metrics", timeout=5) as r:
        return str(r.read().decode())


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def free_udp_pair(host: str = "127.0.0.1") -> int:
    """A UDP port P with P+1 also free on ``host`` (turnutils_peer binds both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_DGRAM) as a:
            a.bind((host, 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(family, socket.SOCK_DGRAM) as b:
                try:
                    b.bind((host, port + 1))
                except OSError:
                    continue
        return int(port)
    raise RuntimeError("no free UDP port pair")


@contextlib.contextmanager
def turnutils_peer(host: str = "127.0.0.1") -> Iterator[int]:
    exe = require_tool("turnutils_peer")
    port = free_udp_pair(host)
    proc = subprocess.Popen([exe, "-L", host, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:  # wait until it echoes
            s.settimeout(0.2)
            for _ in range(50):
                s.sendto(b"probe", (host, port))
                try:
                    if s.recvfrom(100)[0] == b"probe":
                        break
                except OSError:
                    continue
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def uclient(turn: int, peer: int, *flags: str, n: int = 100, m: int = 2, z: int = 5,
            length: int = 172, peer_host: str = "127.0.0.1", server: str = "127.0.0.1"
            ) -> dict[str, Any]:
    exe = require_tool("turnutils_uclient")
    user = f"u{random.randrange(10**9)}"
    cmd = [exe, "-c", *flags, "-W", SECRET, "-u", user, "-e", peer_host, "-r", str(peer),
           "-n", str(n), "-l", str(length), "-m", str(m), "-z", str(z), "-p", str(turn),
           server]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    lost = re.search(r"Total lost packets (\d+) \(([\d.]+)%\)", text)
    totals_all = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", text)
    totals = totals_all[-1] if totals_all else None
    rtt = re.search(r"Average round trip delay ([\d.]+) ms", text)
    return {
        "returncode": out.returncode,
        "output": text[-3000:],
        "lost": int(lost.group(1)) if lost else None,
        "lost_pct": float(lost.group(2)) if lost else None,
        "sent": int(totals[0]) if totals else None,
        "received": int(totals[1]) if totals else None,
        "rtt_ms": float(rtt.group(1)) if rtt else None,
        "command": " ".join(cmd),
    }


class StunClient:
    """A minimal signed-request client over a real UDP or TCP socket (for checks that need
    exact control of the bytes; the independent clients are aioice and turnutils_*)."""

    def __init__(self, port: int, tcp: bool = False, user: str = "probe",
                 secret: str = SECRET, ttl: int = 3600, now: float | None = None,
                 source: str | None = None, host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.tcp = tcp or tls is not None
        kind = socket.SOCK_STREAM if self.tcp else socket.SOCK_DGRAM
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, kind)
        self.sock.settimeout(3)
        self.sock.bind((source or ("::1" if ":" in host else "127.0.0.1"), 0))
        self.sock.connect((host, port))
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="turn.test")
        self.username, password = rest_credential(secret, user, ttl,
                                                  time.time() if now is None else now)
        self.key = long_term_key(self.username, REALM, password)
        self.nonce = ""
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        if self.tcp:
            self.sock.sendall(data)
        else:
            self.sock.send(data)

    def recv_frame(self) -> bytes:
        if not self.tcp:
            return self.sock.recv(65535)
        while True:
            n = c.stream_frame_length(self.buf)
            if n is not None and n > 0 and len(self.buf) >= n:
                frame, self.buf = self.buf[:n], self.buf[n:]
                return frame
            chunk = self.sock.recv(65535)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def recv_message(self) -> c.Message:
        while True:
            frame = self.recv_frame()
            msg = c.parse(frame)
            if msg is not None and msg.cls in (c.SUCCESS, c.ERROR):
                return msg

    def request(self, method: int, attrs: list[tuple[int, bytes]], txid: bytes | None = None,
                sign: bool = True) -> c.Message:
        txid = txid or os.urandom(12)
        for _ in range(2):
            full = list(attrs)
            if sign and self.nonce:
                full += [(c.USERNAME, self.username.encode()), (c.REALM, REALM.encode()),
                         (c.NONCE, self.nonce.encode())]
            self.send(c.encode(method, c.REQUEST, txid, full,
                               key=self.key if sign and self.nonce else None, fingerprint=True))
            resp = self.recv_message()
            if sign and resp.cls == c.ERROR and code(resp) in (401, 438) and resp.text(c.NONCE):
                if self.nonce and code(resp) == 401:
                    return resp
                self.nonce = resp.text(c.NONCE) or ""
                txid = os.urandom(12)
                continue
            return resp
        return resp

    def allocate(self) -> tuple[str, int]:
        resp = self.request(c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0")])
        assert code(resp) == 200, code(resp)
        relay = c.parse_xor_address(resp.attrs[c.XOR_RELAYED_ADDRESS], resp.txid)
        assert relay is not None
        return relay

    def peer_request(self, method: int, peer: tuple[str, int], channel: int | None = None
                     ) -> c.Message:
        txid = os.urandom(12)
        attrs = [(c.XOR_PEER_ADDRESS, c.xor_address(peer[0], peer[1], txid))]
        if channel is not None:
            attrs.insert(0, (c.CHANNEL_NUMBER, channel.to_bytes(2, "big") + b"\0\0"))
        return self.request(method, attrs, txid=txid)


def code(msg: c.Message) -> int:
    if msg.cls == c.SUCCESS:
        return 200
    return c.parse_error(msg.attrs[c.ERROR_CODE])[0]
