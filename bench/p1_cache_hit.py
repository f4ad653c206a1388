"""P1: cache-hit GET of a 30 KB show JSON under wrk, vs nginx proxy_cache and bare uvicorn.

Columns, interleaved per round (A B C [D]): ``ours`` (the metadata-relay entry point),
``nginx`` (proxy_cache HIT of the same body from the same fake upstream, 1 worker), ``raw``
(a bare uvicorn raw-ASGI app returning the bytes: the ceiling through ASGI, same flags) and,
when the ``granian`` package is importable, ``granian`` (the relay's ASGI app under granian,
1 worker) — run ``uv run --with granian python -m bench p1_cache_hit`` to include it — and,
with ``--proto``, ``proto`` (``bench/_fastpath_proto.py``: uvicorn whose HTTP protocol answers
every GET with prebuilt bytes below ASGI, the ceiling for the relay's fast path).
Headline figures are medians over rounds of the per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.doubles.fake_upstream import TMDB_KEY, FakeUpstream
from tests.tools import free_port, free_tcp_udp_port, start_service

from bench import _procs, _wrk
from bench._report import Report, median, package_version, tool_version

BODY_BYTES = 30 * 1024
SHOW_ID = "1399"
RELAY_PATH = f"/tmdb/tv/shows/{SHOW_ID}"
UPSTREAM_PATH = f"/3/tv/{SHOW_ID}"

NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=meta:10m max_size=100m inactive=1h
                     use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location = {relay_path} {{
            proxy_pass http://127.0.0.1:{upstream_port}{upstream_path}?api_key={key};
            proxy_cache meta;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header x-cache $upstream_cache_status;
        }}
    }}
}}
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench p1_cache_hit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="wrk -d seconds, whole (spec: 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c (spec: 64)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="unrecorded wrk seconds per column (0: none)")
    p.add_argument("--proto", action="store_true", help="add the fast-path prototype column")
    p.add_argument("--no-granian", action="store_true", help="skip the granian column")
    return p.parse_args(argv)


def tune_body(fake: FakeUpstream) -> bytes:
    """Pad the fake's show JSON to exactly BODY_BYTES; return the upstream bytes."""
    url = f"http://127.0.0.1:{fake.port}{UPSTREAM_PATH}?api_key={TMDB_KEY}"
    fake.body_padding = BODY_BYTES
    _, _, body = _procs.http_get(url)
    fake.body_padding += BODY_BYTES - len(body)
    _, _, body = _procs.http_get(url)
    assert len(body) == BODY_BYTES, len(body)
    return body


def relay_env(fake: FakeUpstream, tmp: Path) -> dict[str, str]:
    return {**fake.env(), "LOG_LEVEL": "warning", "TURN_ENABLED": "false",
            "SQLITE_DB_PATH": str(tmp / "relay.db")}


def granian_available() -> bool:
    return (importlib.util.find_spec("granian") is not None
            and Path(sys.executable).with_name("granian").exists())


def check_hit(name: str, url: str, body: bytes, header: str = "x-cache") -> None:
    _procs.http_get(url)  # first request fills the cache
    status, headers, got = _procs.http_get(url)
    if status != 200 or got != body:
        raise RuntimeError(f"{name}: status {status}, {len(got)} bytes (want 200, identical body)")
    if header and headers.get(header) != "HIT":
        raise RuntimeError(f"{name}: {header}={headers.get(header)!r}, want HIT")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("nginx is not installed (apt-get install nginx-light)")
    use_granian = not args.no_granian and granian_available()
    report = Report(
        "p1_cache_hit", argv,
        versions={"nginx": tool_version([nginx, "-v"]), "wrk": tool_version(["wrk", "-v"]),
                  "granian": package_version("granian") if use_granian else None},
        duration_s=args.duration, rounds=args.rounds, connections=args.connections,
        body_bytes=BODY_BYTES, path=RELAY_PATH,
        wrk=" ".join(_wrk.command("http://127.0.0.1:PORT" + RELAY_PATH, args.duration,
                                  args.connections)[1:]),
    )
    if not use_granian and not args.no_granian:
        print("p1_cache_hit: granian not importable; run `uv run --with granian python -m bench "
              "p1_cache_hit` for the granian column", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-p1-")))
        fake = FakeUpstream().start()
        stack.callback(fake.stop)
        body = tune_body(fake)
        urls: dict[str, str] = {}
        pids: dict[str, int] = {}

        # ours: the real entry point
        (tmp / "ours").mkdir()
        svc = start_service(tmp / "ours", relay_env(fake, tmp / "ours"))
        stack.callback(svc.stop)
        urls["ours"] = svc.url + RELAY_PATH
        pids["ours"] = svc.proc.pid

        # nginx proxy_cache, 1 worker
        nport = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "", tmp=tmp, port=nport,
            relay_path=RELAY_PATH, upstream_port=fake.port, upstream_path=UPSTREAM_PATH,
            key=TMDB_KEY))
        ngx = _procs.start("nginx", [nginx, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"),
                                     "-c", str(conf)], tmp, f"http://127.0.0.1:{nport}/")
        stack.callback(ngx.stop)
        urls["nginx"] = f"http://127.0.0.1:{nport}{RELAY_PATH}"
        pids["nginx"] = ngx.pid

        # bare uvicorn raw-ASGI app, same flags as cli.py
        body_file = tmp / "body.json"
        body_file.write_bytes(body)
        rport = free_port()
        raw = _procs.start("raw", [sys.executable, "-m", "uvicorn", "bench._raw_asgi:app",
                                   "--host", "127.0.0.1", "--port", str(rport),
                                   "--loop", "uvloop", "--http", "httptools",
                                   "--no-access-log", "--no-server-header",
                                   "--log-level", "warning"],
                           tmp, f"http://127.0.0.1:{rport}/", {"RAW_ASGI_BODY": str(body_file)})
        stack.callback(raw.stop)
        urls["raw"] = f"http://127.0.0.1:{rport}{RELAY_PATH}"
        pids["raw"] = raw.pid

        if args.proto:
            pport = free_port()
            proto = _procs.start("proto", [sys.executable, "-m", "bench._fastpath_proto",
                                           str(pport)], tmp, f"http://127.0.0.1:{pport}/",
                                 {"RAW_ASGI_BODY": str(body_file)})
            stack.callback(proto.stop)
            urls["proto"] = f"http://127.0.0.1:{pport}{RELAY_PATH}"
            pids["proto"] = proto.pid

        if use_granian:
            (tmp / "granian").mkdir()
            gport = free_port()
            genv = {**relay_env(fake, tmp / "granian"), "TURN_PORT": str(free_tcp_udp_port()),
                    "TURN_LISTEN_IP": "127.0.0.1", "TURN_PUBLIC_IP": "127.0.0.1"}
            gran = _procs.start("granian", [
                str(Path(sys.executable).with_name("granian")), "--interface", "asgi",
                "--host", "127.0.0.1", "--port", str(gport), "--workers", "1",
                "--loop", "uvloop", "--http", "1", "--no-ws", "--log-level", "warning",
                "--factory", "bench._granian_app:create"], tmp,
                f"http://127.0.0.1:{gport}/health", genv)
            stack.callback(gran.stop)
            urls["granian"] = f"http://127.0.0.1:{gport}{RELAY_PATH}"
            pids["granian"] = gran.pid

        for name, url in urls.items():
            check_hit(name, url, body, "" if name == "raw" else "x-cache")
        upstream_calls = fake.count(UPSTREAM_PATH) - 2  # two calls from tune_body

        if args.warmup > 0:
            for url in urls.values():
                _wrk.run(url, args.warmup, args.connections)

        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
        for r in range(args.rounds):
            for name, url in urls.items():
                cpu0 = _procs.tree_cpu_seconds(pids[name])
                res = _wrk.run(url, args.duration, args.connections)
                cpu = _procs.tree_cpu_seconds(pids[name]) - cpu0
                runs[name].append({**res.as_dict(), "server_cpu_s": cpu,
                                   "cpu_us_per_req": 1e6 * cpu / max(res.requests, 1)})
                print(f"p1_cache_hit round {r + 1} {name}: {res.rps:.0f} req/s, "
                      f"p99 {res.p99_ms:.2f} ms, server CPU "
                      f"{runs[name][-1]['cpu_us_per_req']:.1f} us/req, non-2xx {res.non_2xx}, "
                      f"socket errors {res.socket_errors}", file=sys.stderr, flush=True)
        report.detail("rounds", runs)
        report.detail("upstream_calls_during_run", fake.count(UPSTREAM_PATH) - 2)
        report.detail("upstream_calls_to_fill_caches", upstream_calls)

    def ratios(a: str, b: str) -> float:
        return median([x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b], strict=True)])

    for name in runs:
        report.figure(f"{name}_rps", median([x["rps"] for x in runs[name]]), "req/s",
                      "median of rounds")
    report.figure("ratio_ours_nginx", ratios("ours", "nginx"), "", "median per-round ratio")
    report.figure("ratio_ours_raw_asgi", ratios("ours", "raw"), "", "median per-round ratio")
    if "granian" in runs:
        report.figure("ratio_granian_ours", ratios("granian", "ours"), "",
                      "relay app under granian / under uvicorn")
        report.figure("ratio_granian_nginx", ratios("granian", "nginx"))
    for name in runs:
        report.figure(f"{name}_p99", median([x["p99_ms"] for x in runs[name]]), "ms",
                      "median of rounds")
    for name in runs:
        report.figure(f"{name}_cpu_per_req", median([x["cpu_us_per_req"] for x in runs[name]]),
                      "us", "server process-tree CPU (utime+stime) per request, median")
    report.figure("cpu_ratio_ours_nginx", median(
        [x["cpu_us_per_req"] / y["cpu_us_per_req"] for x, y in zip(runs["ours"], runs["nginx"],
                                                                    strict=True)]), "",
        "CPU per request, less sensitive to the noisy neighbours than req/s")
    report.figure("cpu_ratio_ours_raw_asgi", median(
        [x["cpu_us_per_req"] / y["cpu_us_per_req"] for x, y in zip(runs["ours"], runs["raw"],
                                                                    strict=True)]))
    errors = sum(x["non_2xx"] + x["socket_errors"] for v in runs.values() for x in v)
    report.figure("errors", errors, "", "non-2xx + socket errors, all columns")
    report.write()
    return 0
