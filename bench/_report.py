"""Benchmark figures: one stdout line per figure, and JSON in bench/results/<name>.json with
the machine, versions, command line and date."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tool_version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


class Report:
    """Collects figures for one benchmark run; ``figure`` prints, ``write`` saves the JSON."""

    def __init__(self, name: str, argv: list[str], versions: dict[str, str | None] | None = None,
                 **config: Any) -> None:
        self.name = name
        self.data: dict[str, Any] = {
            "benchmark": name,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python", "-m", "bench", name, *argv]),
            "machine": machine(),
            "versions": {"metadata-relay": package_version("metadata-relay"),
                         "uvicorn": package_version("uvicorn"),
                         "uvloop": package_version("uvloop"),
                         "httptools": package_version("httptools"),
                         **(versions or {})},
            "config": config,
            "figures": {},
            "details": {},
        }

    def figure(self, key: str, value: Any, unit: str = "", note: str = "") -> None:
        self.data["figures"][key] = value if not unit else {"value": value, "unit": unit}
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        line = f"{self.name} {key}: {shown}{' ' + unit if unit else ''}"
        print(line + (f"  ({note})" if note else ""), flush=True)

    def detail(self, key: str, value: Any) -> None:
        self.data["details"][key] = value

    def write(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        print(f"{self.name}: results written to {path}", file=sys.stderr, flush=True)
        return path
