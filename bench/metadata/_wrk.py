"""Runs Debian ``wrk`` and parses its ``--latency`` report."""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from bench._common import tool_path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_path() -> str:
    path = tool_path("wrk")
    if path is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    return path


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"unparseable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(output: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rps is None or total is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    pct = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    return WrkResult(
        rps=float(rps.group(1)), requests=int(total.group(1)),
        p50_ms=pct.get(50, 0.0), p75_ms=pct.get(75, 0.0), p90_ms=pct.get(90, 0.0),
        p99_ms=pct.get(99, 0.0),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def command(url: str, duration: float, connections: int = 64, threads: int = 1) -> list[str]:
    seconds = max(1, round(duration))  # wrk takes whole seconds
    return [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]


def run(url: str, duration: float, connections: int = 64, threads: int = 1) -> WrkResult:
    argv = command(url, duration, connections, threads)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True)
    return parse(out.stdout)
