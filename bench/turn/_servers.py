"""The TURN benchmarks' servers and load: our relay or Debian coturn on loopback (one at a time,
same relay-port range size, same shared secret), ``turnutils_peer`` as the echoing peer, and
``turnutils_uclient`` runs measured by the server's CPU from /proc; :func:`compare_uclient`
interleaves ours and coturn over rounds and records the run (T1, T2)."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _procs
from bench._common import (
    Run,
    cpu_seconds,
    free_port,
    median,
    parser,
    rss_kb,
    tool_path,
    udp_rcvbuf_errors,
)

SECRET = "bench-turn-secret"
REALM = "bench.example"
SERVERS = ("ours", "coturn")
REFERENCE = "Debian coturn (turnserver), same relay-port range size, --no-rfc5780"


def tool(name: str) -> str:
    path = tool_path(name)
    if path is None:
        raise SystemExit(f"{name} is not installed (apt-get install coturn)")
    return path


def rest_credential(user: str, ttl: int = 3600) -> tuple[str, str]:
    """A TURN REST credential (``<expiry>:<user>``, base64 HMAC-SHA1 of it under the shared
    secret), computed as any client holding the secret would."""
    username = f"{int(time.time()) + ttl}:{user}"
    digest = hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@dataclass
class Server:
    kind: str  # "ours" or "coturn"
    pid: int
    port: int  # the TURN listener
    http: str | None = None  # our HTTP base URL (for /stats)

    def stats(self) -> dict[str, Any]:
        if not self.http:
            return {}
        with urllib.request.urlopen(f"{self.http}/stats", timeout=5) as r:
            return dict(json.loads(r.read()).get("turn", {}))


def relay_range(size: int) -> tuple[int, int]:
    low = random.randrange(20000, 32000 - size)
    return low, low + size - 1


@contextlib.contextmanager
def ours(ports: int = 1000) -> Iterator[Server]:
    """The relay with TURN on loopback: a ``ports``-wide relay range, loopback peers
    allowed, no per-allocation rate limit, user and address quotas no benchmark reaches
    (every load client comes from 127.0.0.1)."""
    port = free_port()
    low, high = relay_range(ports)
    with _procs.relay({
        "TURN_PORT": str(port), "TURN_SECRET": SECRET, "TURN_REALM": REALM,
        "TURN_MIN_PORT": str(low), "TURN_MAX_PORT": str(high),
        "TURN_ALLOWED_PEERS": "127.0.0.0/8", "TURN_USER_QUOTA": "100000", "TURN_MAX_RATE": "0",
        "TURN_IP_QUOTA": "65535",
    }) as relay:
        yield Server("ours", relay.pid, port, relay.url)


def answers_stun(port: int) -> Callable[[], bool]:
    """A readiness check: a STUN Binding request to 127.0.0.1:``port`` gets its answer."""
    def ready() -> bool:
        request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.sendto(request, ("127.0.0.1", port))
            try:
                return s.recv(200)[8:20] == request[8:20]
            except OSError:
                return False
    return ready


def echoes_udp(port: int) -> Callable[[], bool]:
    """A readiness check: a datagram to 127.0.0.1:``port`` comes back."""
    def ready() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.sendto(b"ready?", ("127.0.0.1", port))
            try:
                return s.recv(100) == b"ready?"
            except OSError:
                return False
    return ready


@contextlib.contextmanager
def coturn(ports: int = 1000) -> Iterator[Server]:
    port = free_port()
    low, high = relay_range(ports)
    with tempfile.TemporaryDirectory(prefix="bench-coturn-") as tmp:
        argv = [tool("turnserver"), "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
                f"--listening-port={port}", f"--min-port={low}", f"--max-port={high}",
                "--use-auth-secret", f"--static-auth-secret={SECRET}", f"--realm={REALM}",
                "--no-tls", "--no-dtls", "--no-cli", "--no-rfc5780", "--allow-loopback-peers",
                f"--pidfile={tmp}/turnserver.pid", f"--log-file={tmp}/turn.log",
                "--simple-log", f"--userdb={tmp}/turndb"]
        proc = _procs.start("coturn", argv, Path(tmp), answers_stun(port))
        try:
            yield Server("coturn", proc.pid, port)
        finally:
            proc.stop()


STARTERS: dict[str, Callable[..., contextlib.AbstractContextManager[Server]]] = {
    "ours": ours, "coturn": coturn}


@contextlib.contextmanager
def echo_peer() -> Iterator[int]:
    """``turnutils_peer`` echoing on 127.0.0.1 (it binds its port and the next one)."""
    port = free_port(count=2)
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        proc = _procs.start("turnutils_peer", [tool("turnutils_peer"), "-L", "127.0.0.1", "-p",
                                               str(port)], Path(tmp), echoes_udp(port))
        try:
            yield port
        finally:
            proc.stop()


def uclient(server: Server, peer: int, flags: list[str]) -> dict[str, Any]:
    """One ``turnutils_uclient`` run through ``server``, with the server's CPU for it."""
    argv = [tool("turnutils_uclient"), *flags, "-W", SECRET, "-u",
            f"b{random.randrange(10**9)}", "-e", "127.0.0.1", "-r", str(peer),
            "-p", str(server.port), "127.0.0.1"]
    cpu0, rcv0, t0 = cpu_seconds(server.pid), udp_rcvbuf_errors(), time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(server.pid) - cpu0
    text = out.stdout + out.stderr
    lost = re.findall(r"Total lost packets (\d+) \(([\d.]+)%\)", text)
    totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", text)
    rtt = re.findall(r"Average round trip delay ([\d.]+) ms", text)
    sent, received = (int(totals[-1][0]), int(totals[-1][1])) if totals else (0, 0)
    relayed = sent + received  # client->peer plus peer->client
    return {
        "server": server.kind,
        "sent": sent,
        "received": received,
        "loss_pct": float(lost[-1][1]) if lost else 100.0,
        "avg_rtt_ms": float(rtt[-1]) if rtt else None,
        "server_cpu_s": round(cpu, 3),
        "cpu_s_per_100k": round(cpu / relayed * 100_000, 4) if relayed else None,
        "us_per_packet": round(cpu / relayed * 1e6, 2) if relayed else None,
        "wall_s": round(wall, 2),
        "rss_kb": rss_kb(server.pid),
        "rcvbuf_errors": udp_rcvbuf_errors() - rcv0,
        "exit": out.returncode,
        **({"output_tail": text[-600:]} if out.returncode or not totals else {}),
    }


def uclient_parser(bench: str, doc: str | None, messages: int) -> argparse.ArgumentParser:
    """The options of a uclient comparison: rounds, the message count (uclient ``-n``)."""
    p = parser(bench, doc)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3)")
    p.add_argument("--messages", type=int, default=messages,
                   help=f"turnutils_uclient -n (spec: {messages})")
    return p


QUICK = {"rounds": 1, "messages": 100}


def compare_uclient(run: Run, flags: list[str], rounds: int) -> dict[str, Any]:
    """Interleaved ours/coturn rounds of one uclient profile (one server up at a time);
    records per-round rows, medians and reference medians into ``run``; returns the summary
    (medians per server and ``cpu_ratio``). A run uclient aborts is redone, up to 3 times:
    uclient 4.6.1 sometimes binds one channel number to two peers and exits 255."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in SERVERS}
    with echo_peer() as peer:
        for i in range(rounds):
            for kind in SERVERS:
                for attempt in range(1, 4):
                    with STARTERS[kind]() as server:
                        time.sleep(0.5)
                        row = uclient(server, peer, flags)
                    row["attempt"] = attempt
                    if row["exit"] == 0 and row["sent"]:
                        break
                runs[kind].append(row)
                print(f"# round {i + 1} {kind}: {json.dumps(row)}", flush=True)
                time.sleep(1)

    def med(kind: str, key: str) -> float:
        return median(r[key] for r in runs[kind] if r.get(key) is not None and r["exit"] == 0)

    keys = ("loss_pct", "avg_rtt_ms", "cpu_s_per_100k", "us_per_packet", "rss_kb")
    result: dict[str, Any] = {kind: {k: med(kind, k) for k in keys} for kind in SERVERS}
    ours_cpu, coturn_cpu = result["ours"]["cpu_s_per_100k"], result["coturn"]["cpu_s_per_100k"]
    result["cpu_ratio"] = ours_cpu / coturn_cpu if coturn_cpu else float("nan")
    run.detail("uclient", f"turnutils_uclient {' '.join(flags)} -W <secret> -u <user> "
               "-e 127.0.0.1 -r <peer> -p <port> 127.0.0.1")
    run.detail("runs", runs)
    run.figure("cpu_per_100k", result["ours"]["cpu_s_per_100k"], "CPU-s",
               "server CPU per 100k relayed packets, median of rounds")
    run.figure("us_per_packet", result["ours"]["us_per_packet"], "us")
    run.figure("avg_rtt", result["ours"]["avg_rtt_ms"], "ms")
    run.figure("rss", result["ours"]["rss_kb"], "KB")
    for key, unit in (("cpu_s_per_100k", "CPU-s"), ("us_per_packet", "us"),
                      ("loss_pct", "%"), ("avg_rtt_ms", "ms")):
        run.reference_figure(f"coturn_{key}", result["coturn"][key], unit)
    return result

