"""Reference servers as subprocesses on loopback, each stopped by its own pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> None:
        stop_process(self.proc, timeout)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
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


def start(name: str, argv: list[str], log_dir: Path, ready_url: str,
          env: dict[str, str] | None = None, timeout: float = 20) -> Proc:
    """Start ``argv`` (cwd = repo root) and wait until ``ready_url`` answers any HTTP status."""
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT)
    p = Proc(name, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{p.log()}")
        with contextlib.suppress(OSError):
            http_get(ready_url, timeout=1)
            return p
        time.sleep(0.05)
    p.stop()
    raise RuntimeError(f"{name} did not answer {ready_url} in {timeout}s:\n{p.log()}")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and all its descendants (from /proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    stack = [pid]
    while stack:
        p = stack.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            # fields after the parenthesised command name; utime, stime are fields 14 and 15
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        stack.extend(_children(p))
    return total
