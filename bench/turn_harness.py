"""Shared machinery of the TURN benchmarks (T1-T3): start our server or Debian coturn on
loopback (one at a time), sample server CPU from /proc, run turnutils_uclient, write results.

Not a benchmark itself (no ``main``)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._procs import stop_process

SECRET = "bench-turn-secret"
REALM = "bench.example"
RESULTS = Path(__file__).parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_DGRAM, pair: bool = False) -> int:
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
        try:
            for p in (port, port + 1) if pair else (port,):
                for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, k) as s:
                        s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime (fields 14, 15)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rcvbuf_errors() -> int:
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
             if ln.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}")
                                  else None)
    if path is None:
        sys.exit(f"{name} not installed: apt-get install coturn")
    return path


@dataclass
class Server:
    kind: str
    pid: int
    port: int
    proc: subprocess.Popen[bytes]
    http: str | None = None

    def stats(self) -> dict[str, Any]:
        if not self.http:
            return {}
        with urllib.request.urlopen(f"{self.http}/stats", timeout=5) as r:
            return dict(json.loads(r.read()).get("turn", {}))


def relay_range(size: int) -> tuple[int, int]:
    low = random.randrange(20000, 32000 - size)
    return low, low + size - 1


@contextlib.contextmanager
def ours(ports: int = 1000, extra: dict[str, str] | None = None) -> Iterator[Server]:
    exe = Path(sys.executable).with_name("metadata-relay")
    port, http = free_port(), free_port(socket.SOCK_STREAM)
    low, high = relay_range(ports)
    with tempfile.TemporaryDirectory(prefix="bench-turn-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TURN_", "TMDB_", "TVDB_"))}
        env.update({
            "HOST": "127.0.0.1", "PORT": str(http), "SQLITE_DB_PATH": f"{tmp}/relay.db",
            "TURN_LISTEN_IP": "127.0.0.1", "TURN_PUBLIC_IP": "127.0.0.1",
            "TURN_PORT": str(port), "TURN_SECRET": SECRET, "TURN_REALM": REALM,
            "TURN_MIN_PORT": str(low), "TURN_MAX_PORT": str(high),
            "TURN_ALLOWED_PEERS": "127.0.0.0/8", "TURN_USER_QUOTA": "100000",
            "TURN_MAX_RATE": "0", "LOG_LEVEL": "warning", "LOG_FORMAT": "json",
        })
        env.update(extra or {})
        proc = subprocess.Popen([str(exe)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        server = Server("ours", proc.pid, port, proc, f"http://127.0.0.1:{http}")
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"{server.http}/health", timeout=1):
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("metadata-relay did not start")
                time.sleep(0.05)
            yield server
        finally:
            stop_process(proc, 15)


@contextlib.contextmanager
def coturn(ports: int = 1000) -> Iterator[Server]:
    port = free_port()
    low, high = relay_range(ports)
    with tempfile.TemporaryDirectory(prefix="bench-coturn-") as tmp:
        cmd = [tool("turnserver"), "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
               f"--listening-port={port}", f"--min-port={low}", f"--max-port={high}",
               "--use-auth-secret", f"--static-auth-secret={SECRET}", f"--realm={REALM}",
               "--no-tls", "--no-dtls", "--no-cli", "--no-rfc5780", "--allow-loopback-peers",
               f"--pidfile={tmp}/turnserver.pid", f"--log-file={tmp}/turn.log",
               "--simple-log", f"--userdb={tmp}/turndb"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = Server("coturn", proc.pid, port, proc)
        try:
            wait_stun(port)
            yield server
        finally:
            stop_process(proc, 15)


def wait_stun(port: int, timeout: float = 20) -> None:
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(request, ("127.0.0.1", port))
            with contextlib.suppress(OSError):
                if s.recv(200)[8:20] == request[8:20]:
                    return
    raise RuntimeError(f"no STUN answer on {port}")


@contextlib.contextmanager
def echo_peer() -> Iterator[int]:
    port = free_port(pair=True)
    proc = subprocess.Popen([tool("turnutils_peer"), "-L", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def uclient(server: Server, peer: int, flags: list[str]) -> dict[str, Any]:
    cmd = [tool("turnutils_uclient"), *flags, "-W", SECRET, "-u",
           f"b{random.randrange(10**9)}", "-e", "127.0.0.1", "-r", str(peer),
           "-p", str(server.port), "127.0.0.1"]
    cpu0, rcv0, t0 = cpu_seconds(server.pid), rcvbuf_errors(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(server.pid) - cpu0
    text = out.stdout + out.stderr
    lost = re.findall(r"Total lost packets (\d+) \(([\d.]+)%\)", text)
    totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", text)
    rtt = re.findall(r"Average round trip delay ([\d.]+) ms", text)
    sent, received = (int(totals[-1][0]), int(totals[-1][1])) if totals else (0, 0)
    relayed = sent + received  # client->peer plus peer->client (reference 3.5)
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
        "rcvbuf_errors": rcvbuf_errors() - rcv0,
        "exit": out.returncode,
        **({"output_tail": text[-600:]} if out.returncode or not totals else {}),
    }


def machine() -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    coturn_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "coturn"],
                                    capture_output=True, text=True).stdout
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(), "coturn": coturn_version,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None and r.get("exit", 0) == 0]
    return statistics.median(values) if values else None


def write(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def compare_uclient(name: str, flags: list[str], rounds: int,
                    servers: tuple[str, ...] = ("ours", "coturn")) -> dict[str, Any]:
    """Interleaved ours/coturn rounds of one uclient profile; medians and ratios."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
    starters: dict[str, Any] = {
        "ours": ours, "coturn": coturn,
        # ours with the C forwarder switched off: the pure-Python batched path (A/B)
        "python": functools.partial(ours, extra={"TURN_NATIVE_FORWARDING": "false"}),
    }
    with echo_peer() as peer:
        for i in range(rounds):
            for kind, start in ((k, starters[k]) for k in servers):
                for attempt in range(1, 4):
                    # uclient 4.6.1 sometimes picks one channel number twice and exits 255
                    # (both servers answer 400); such a run measures nothing: redo it.
                    with start() as server:
                        time.sleep(0.5)
                        run = uclient(server, peer, flags)
                    run["attempt"] = attempt
                    if run["exit"] == 0 and run["sent"]:
                        break
                runs[kind].append(run)
                print(f"# round {i + 1} {kind}: {json.dumps(run)}", flush=True)
                time.sleep(1)
    summary: dict[str, Any] = {}
    for kind, rs in runs.items():
        summary[kind] = {k: median(rs, k) for k in
                         ("loss_pct", "avg_rtt_ms", "server_cpu_s", "cpu_s_per_100k",
                          "us_per_packet", "rss_kb")}
    o = summary.get("ours", {}).get("cpu_s_per_100k")
    c = summary.get("coturn", {}).get("cpu_s_per_100k")
    summary["cpu_ratio"] = round(o / c, 3) if o and c else None
    result = {"benchmark": name, "command": f"turnutils_uclient {' '.join(flags)} -W <secret> "
              "-u <user> -e 127.0.0.1 -r <peer> -p <port> 127.0.0.1",
              "rounds": rounds, "machine": machine(), "summary": summary, "runs": runs}
    path = write(name, result)
    for kind in servers:
        for k, v in summary[kind].items():
            print(f"{name} {kind} {k} {v}")
    print(f"{name} cpu_ratio_ours_over_coturn {summary['cpu_ratio']}")
    print(f"# written {path}")
    return result
