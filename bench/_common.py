"""The bench kit shared by every benchmark: free ports, /proc readers, one percentile, machine
facts, the command line every benchmark accepts, and the one results writer (:class:`Run`).

A benchmark records its figures through a :class:`Run`; ``Run.write`` saves
``bench/results/<ID>.json`` (``bench/results/quick/<ID>.json`` for a ``--quick`` run), the
record ``python -m bench report`` turns into the status table of BENCHMARKS.md. The record's
fields are described in bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import operator
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_DIR = RESULTS_DIR / "quick"  # git-ignored: --quick figures mean nothing
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- ports -----------------------------------------------------------------------------------

def free_port(count: int = 1) -> int:
    """A port on 127.0.0.1 free for both TCP and UDP, with the ``count - 1`` ports after it
    free too (``turnutils_peer`` binds two)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + count > 65536:
            continue
        try:
            for p in range(port, port + count):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


# --- /proc readers ---------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str]:
    # the fields after the parenthesised command name (which may hold spaces): field 3 first
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(children)
            stack.extend(children)
    return out


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time (utime + stime, fields 14 and 15 of /proc/PID/stat) of ``pid``; with
    ``children``, plus that of every live descendant (nginx's workers). Sample it before and
    after the measured interval and subtract."""
    total = 0.0
    for p in [pid, *(_descendants(pid) if children else [])]:
        try:
            fields = _stat_fields(p)
        except OSError:
            if p == pid:
                raise
            continue  # a descendant that exited between the listing and the read
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def runqueue_wait_seconds(pid: int) -> float:
    """Time the threads of ``pid`` spent runnable but waiting for a CPU
    (/proc/PID/task/*/schedstat, second field): the CPU other processes took from it."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS of /proc/PID/status), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    """File descriptors open in ``pid`` (/proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def udp_rcvbuf_errors() -> int:
    """System-wide UDP datagrams dropped for a full receive buffer (/proc/net/snmp)."""
    rows = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
            if ln.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


# --- statistics ------------------------------------------------------------------------------

def percentile(values: Iterable[float], p: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``p`` % of the values at
    or below it, i.e. the ``ceil(p/100 * n)``-th smallest (the smallest for ``p = 0``). It is
    always one of the measured values: p99 of 1,000 latencies is the 990th smallest, p50 of
    an even count the lower middle. NaN for no values. Every figure in bench/ uses it."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside 0..100")
    rank = math.ceil(round(p * len(ordered) / 100, 9))  # round: 99.9 * 1000 is 99900.000...01
    return ordered[max(rank, 1) - 1]


def median(values: Iterable[float]) -> float:
    """The median of rounds (mean of the middle two for an even count); NaN for none."""
    data = list(values)
    return statistics.median(data) if data else math.nan


# --- machine facts ---------------------------------------------------------------------------

PACKAGES = ("metadata-relay", "uvicorn", "uvloop", "httptools", "websockets", "aiohttp",
            "aioice")
TOOLS: dict[str, list[str]] = {
    "nginx": ["nginx", "-v"],
    "wrk": ["wrk", "-v"],
    "coturn": ["dpkg-query", "-W", "-f=${Version}", "coturn"],
}


def tool_path(name: str) -> str | None:
    """``name`` on PATH or in the Debian system directories (nginx lives in /usr/sbin)."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


def tool_version(argv: list[str]) -> str | None:
    """First line the command prints (stdout or stderr); None when it cannot run."""
    exe = tool_path(argv[0])
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(tools: Iterable[str] = ()) -> dict[str, Any]:
    """nproc, CPU model, kernel, load average, and the versions of Python, the Python packages
    a benchmark drives and the system ``tools`` it uses (names from :data:`TOOLS`)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    for name in tools:
        versions[name] = tool_version(TOOLS[name])
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "kernel": platform.release(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "versions": versions}


def git_commit() -> tuple[str | None, bool]:
    """The checkout's short commit, and whether tracked files outside bench/results differ
    from it (figures of uncommitted code)."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode:
            return None, False
        diff = git("diff", "--quiet", "HEAD", "--", ".", ":(exclude)bench/results")
    except (OSError, subprocess.TimeoutExpired):
        return None, False
    return head.stdout.strip(), diff.returncode != 0


# --- the command line every benchmark accepts --------------------------------------------------

def parser(bench: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser for ``python -m bench <bench>`` with the kit's own option,
    ``--quick``; the benchmark adds its knobs and calls :func:`parse`."""
    p = argparse.ArgumentParser(prog=f"python -m bench {bench}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a tiny configuration that only shows the benchmark runs end to end "
                        "(figures mean nothing; written to bench/results/quick/)")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str],
          quick: Mapping[str, Any]) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, ``quick`` replaces the defaults (options given on the
    command line still win)."""
    unknown = set(quick) - set(vars(p.parse_args([])))
    if unknown:
        raise ValueError(f"--quick sets options {p.prog} does not have: {sorted(unknown)}")
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(**quick)
        args = p.parse_args(argv)
    return args


# --- results ---------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt,
}


def check(value: Any, target: str) -> bool | None:
    """Whether ``value`` meets ``target`` (``"<op> <number>"``, op one of <= >= == < >);
    None when there is no value to judge."""
    op, _, limit = target.strip().partition(" ")
    if op not in _OPS:
        raise ValueError(f"target {target!r}: want '<op> <number>' with op in {list(_OPS)}")
    bound = float(limit)
    if value is None or isinstance(value, str) or (isinstance(value, float)
                                                    and math.isnan(value)):
        return None
    return bool(_OPS[op](value, bound))


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None, so the record stays valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


TIMES = "\u00d7"  # the multiplication sign after a ratio


def shown(value: Any, unit: str = "") -> str:
    """A figure as printed and tabled: a ratio (unit "x") with two decimals and a
    multiplication sign, others with about three significant digits and their unit."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        text = str(value)
    elif unit == "x":
        return f"{value:.2f}{TIMES}"
    elif float(value).is_integer():
        text = f"{int(value):,}"
    else:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
        text = f"{value:,.{digits}f}"
    return f"{text} {unit}" if unit else text


class Run:
    """One run of benchmark ``bench_id`` (the spec's id: "P1", "T1-t"): collects figures,
    prints one line per figure, and writes the record.

    Three kinds of figure: ``figure`` (ours), ``reference_figure`` (the reference's, from the
    same run) and ``ratio`` (ours against the reference). ``figure`` and ``ratio`` take a
    ``target`` ("<op> <number>", judged at once) and ``headline=True`` for the figures the
    status table shows."""

    def __init__(self, bench_id: str, argv: list[str], *, title: str, reference: str,
                 quick: bool = False, tools: Iterable[str] = (),
                 results_dir: Path | None = None, **config: Any) -> None:
        self.id = bench_id
        self.quick = quick
        self.results_dir = results_dir or (QUICK_DIR if quick else RESULTS_DIR)
        commit, dirty = git_commit()
        self.record: dict[str, Any] = {
            "id": bench_id,
            "title": title,
            "reference": reference,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": commit,
            "dirty": dirty,
            "command": command_line(bench_id, argv),
            "quick": quick,
            "machine": machine(tools),
            "config": config,
            "figures": {},
            "reference_figures": {},
            "ratios": {},
            "targets": {},
            "headline": [],
            "details": {},
        }

    def _add(self, kind: str, name: str, value: Any, unit: str, note: str,
             target: str | None = None, headline: bool = False) -> None:
        entry: dict[str, Any] = {"value": value}
        if unit:
            entry["unit"] = unit
        if note:
            entry["note"] = note
        self.record[kind][name] = entry
        verdict = ""
        if target is not None:
            ok = check(value, target)
            self.record["targets"][name] = {"target": target, "value": value, "pass": ok}
            verdict = f"  [target {target}: {'-' if ok is None else 'pass' if ok else 'FAIL'}]"
        if headline:
            self.record["headline"].append(name)
        label = {"figures": "", "reference_figures": "reference ", "ratios": "ratio "}[kind]
        print(f"{self.id} {label}{name}: {shown(value, unit)}{verdict}"
              + (f"  ({note})" if note else ""), flush=True)

    def figure(self, name: str, value: Any, unit: str = "", note: str = "", *,
               target: str | None = None, headline: bool = False) -> None:
        self._add("figures", name, value, unit, note, target, headline)

    def reference_figure(self, name: str, value: Any, unit: str = "", note: str = "") -> None:
        self._add("reference_figures", name, value, unit, note)

    def ratio(self, name: str, value: float, note: str = "", *, target: str | None = None,
              headline: bool = False) -> None:
        self._add("ratios", name, value, "x", note, target, headline)

    def detail(self, key: str, value: Any) -> None:
        """Anything else worth keeping (per-round rows, configuration seen by the server)."""
        self.record["details"][key] = value

    def write(self) -> Path:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.results_dir / f"{self.id}.json"
        path.write_text(json.dumps(_finite(self.record), indent=2, default=str) + "\n")
        print(f"{self.id}: record written to {path}", file=sys.stderr, flush=True)
        return path


def command_line(bench_id: str, argv: list[str]) -> str:
    """How the run was started: the command is the id in lower case before any variant
    suffix ("T1-t" is ``t1 -t``), the variant being one of ``argv``."""
    return " ".join(["python", "-m", "bench", bench_id.split("-")[0].lower(), *argv])


def spec_order(name: str) -> tuple[int, str, int, str]:
    """Sort key putting ids and command names in the spec's order: P, W, T, then by number,
    then the variant ("T1" < "T1-s" < "T1-t" < "T2")."""
    m = re.fullmatch(r"([a-z]+)(\d+)(.*)", name.lower())
    if m is None:
        return (9, name.lower(), 0, "")
    area = "pwt".find(m[1])
    return (area if area >= 0 else 8, m[1], int(m[2]), m[3])


def summary(doc: str | None) -> str:
    """The first line of a docstring: a benchmark's one-line summary."""
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""
