"""Processes a benchmark starts on loopback — the relay through its ``metadata-relay`` entry
point (as users run it) and the reference servers — each stopped by its own pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench._common import REPO, free_port

# settings a developer's shell may hold that would change what the relay under test does
SETTINGS_PREFIXES = ("HOST", "PORT", "SQLITE_", "REDIS_", "TMDB_", "TVDB_", "UPSTREAM_",
                     "CACHE_", "RELAY_", "TURN_", "TRUSTED_", "LOG_")


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""  # base URL of an HTTP server ("" for others)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        stop_process(self.proc, timeout)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def http_get(url: str, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def answers_http(url: str) -> Callable[[], bool]:
    """A readiness check: ``url`` answers with any HTTP status."""
    def ready() -> bool:
        try:
            http_get(url, timeout=1)
        except OSError:
            return False
        return True
    return ready


def listening(port: int) -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on 127.0.0.1:``port``."""
    def ready() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True
    return ready


def start(name: str, argv: list[str], log_dir: Path, ready: Callable[[], bool],
          env: Mapping[str, str] | None = None, timeout: float = 30, url: str = "",
          inherit_env: bool = True) -> Proc:
    """Start ``argv`` (cwd = the repository) with its output in ``log_dir/<name>.log`` and
    wait until ``ready()``; on failure stop it and raise with its log."""
    log_path = log_dir / f"{name}.log"
    full_env = {**(os.environ if inherit_env else {}), **(env or {})}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT)
    p = Proc(name, proc, log_path, url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{p.log()}")
        if ready():
            return p
        time.sleep(0.05)
    p.stop()
    raise RuntimeError(f"{name} was not ready within {timeout}s:\n{p.log()}")


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


@contextlib.contextmanager
def relay(env: Mapping[str, str] | None = None, name: str = "relay",
          workdir: Path | None = None) -> Iterator[Proc]:
    """The relay as users run it: the ``metadata-relay`` entry point with settings from the
    environment, HTTP and TURN on free loopback ports, a fresh SQLite database, JSON logs at
    warning level; ``env`` adds or overrides settings. Ready when ``/health`` answers;
    stopped (SIGTERM) on exit."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        settings = {
            "HOST": "127.0.0.1", "PORT": str(port),
            "SQLITE_DB_PATH": str(workdir / "data" / "relay.db"),
            "TURN_LISTEN_IP": "127.0.0.1", "TURN_PUBLIC_IP": "127.0.0.1",
            "TURN_PORT": str(free_port()), "LOG_LEVEL": "warning", "LOG_FORMAT": "json",
            **(env or {}),
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
        url = f"http://127.0.0.1:{settings['PORT']}"
        exe = str(Path(sys.executable).with_name("metadata-relay"))
        proc = start(name, [exe], workdir, answers_http(f"{url}/health"),
                     {**base, **settings}, url=url, inherit_env=False)
        stack.callback(proc.stop)
        yield proc
