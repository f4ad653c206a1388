"""Shared by the pairing benchmarks W1-W3: run the service, open sockets, record results."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import websockets

from bench._procs import stop_process

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def service(
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real ``metadata-relay`` entry point on a free loopback port, temp database."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-pairing-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TURN_", "REDIS"))}
        env.update({"HOST": "127.0.0.1", "PORT": str(port),
                    "SQLITE_DB_PATH": f"{tmp}/relay.db", "TURN_PUBLIC_IP": "127.0.0.1",
                    "TURN_LISTEN_IP": "127.0.0.1", "TURN_PORT": str(free_port()),
                    "LOG_LEVEL": "warning", "LOG_FORMAT": "json", **(extra_env or {})})
        exe = Path(sys.executable).with_name("metadata-relay")
        log = open(f"{tmp}/service.log", "wb")
        proc = subprocess.Popen([str(exe)], env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(Path(f"{tmp}/service.log").read_text())
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"{url}/health", timeout=1):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("service did not start")
                time.sleep(0.05)
            yield url, proc
        finally:
            stop_process(proc, 15)
            log.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_n = 0


def fresh_ip() -> str:
    global _n
    _n += 1
    return f"9.{(_n >> 16) & 255}.{(_n >> 8) & 255}.{_n & 255}"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def open_ws(url: str, **kw: Any) -> websockets.ClientConnection:
    return await websockets.connect(url, additional_headers={"x-forwarded-for": fresh_ip()},
                                    max_size=2**20, compression=None, open_timeout=60, **kw)


async def register(ws_base: str, instance_id: str) -> websockets.ClientConnection:
    ws = await open_ws(ws_base + "/relay/tunnel/websocket")
    await ws.send(json.dumps({"type": "register", "instance_id": instance_id,
                              "public_key": new_key(), "direct_urls": []}))
    reply = json.loads(await ws.recv())
    assert reply["type"] == "registered", reply
    return ws


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "websockets": websockets.__version__, "platform": platform.platform()}


def write(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": name, "machine": machine(), "argv": sys.argv, **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


def uvloop_run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def keepalive(instances: list[websockets.ClientConnection], every: float = 20.0) -> None:
    """Ping instance sockets as mydia does (the relay closes them after 60 s of silence)."""
    while True:
        await asyncio.sleep(every)
        for ws in instances:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send('{"type":"ping"}')
