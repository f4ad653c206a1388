"""Shared test helpers: system-tool requirements, free ports, the service as a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """Path of system tool ``name``; skip when absent, but fail under CI=true."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/usr/local/bin/{name}")
         if os.path.exists(p)), None,
    )
    if path:
        return path
    msg = f"system tool {name!r} not installed (apt-get install the package that provides it)"
    if IN_CI:
        pytest.fail(f"CI=true but {msg}")
    pytest.skip(msg)


def require_native() -> None:
    """The C TURN forwarder (``metadata_relay.turn._forward``) is importable; skip when it
    is not, but fail under CI=true (CI proves the build hook compiles it)."""
    from metadata_relay.turn import native

    if native.available():
        return
    msg = f"C forwarder not built ({native.IMPORT_ERROR or 'not Linux'}); is gcc installed?"
    if IN_CI:
        pytest.fail(f"CI=true but {msg}")
    pytest.skip(msg)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def queued_datagrams(s: socket.socket) -> list[bytes]:
    """Every datagram waiting on non-blocking ``s`` now (what a forwarder has delivered)."""
    out = []
    while True:
        try:
            out.append(s.recv(70000))
        except BlockingIOError:
            return out


def free_tcp_udp_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


def start_service(tmp_path: Path, env: dict[str, str] | None = None,
                  timeout: float = 20) -> ServiceProcess:
    """Start ``metadata-relay`` (the installed entry point) as users do; wait for /health."""
    port = int((env or {}).get("PORT") or free_port())
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TMDB_", "TVDB_", "TURN_"))}
    full.update({
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SQLITE_DB_PATH": str(tmp_path / "data" / "relay.db"),
        "TURN_LISTEN_IP": "127.0.0.1",
        "TURN_PUBLIC_IP": "127.0.0.1",
        "TURN_PORT": str(free_tcp_udp_port()),
        "LOG_FORMAT": "json",
    })
    full.update(env or {})
    log_path = tmp_path / f"service-{port}-{time.monotonic_ns()}.log"
    exe = Path(sys.executable).with_name("metadata-relay")
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([str(exe)], env=full, stdout=out, stderr=subprocess.STDOUT)
    svc = ServiceProcess(proc, port, full, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}:\n{svc.log()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{svc.url}/health", timeout=1) as r:
                if r.status in (200, 503):
                    return svc
        time.sleep(0.05)
    svc.stop(signal.SIGKILL)
    raise RuntimeError(f"service did not answer /health in {timeout}s:\n{svc.log()}")


@contextlib.contextmanager
def running_service(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[ServiceProcess]:
    svc = start_service(tmp_path, env)
    try:
        yield svc
    finally:
        svc.stop()
