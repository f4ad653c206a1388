"""P1: cache-hit GET of a 30 KB show JSON under wrk -c64, against nginx proxy_cache.

Three columns, interleaved per round (A B C A B C ...): ``ours`` (the ``metadata-relay`` entry
point), ``nginx`` (a proxy_cache HIT of the same body from the same fake upstream, 1 worker)
and ``raw`` (a bare uvicorn raw-ASGI app returning the bytes, same flags as the relay: the
Python ceiling through ASGI). Each round runs ``wrk -t1 -c64 -d10s --latency`` against each
column; server CPU per request comes from the process tree's /proc/PID/stat. Headline
figures: the median over rounds of the per-round req/s ratio ours/nginx, and ours' p99.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.doubles.fake_upstream import TMDB_KEY, FakeUpstream

from bench import _procs
from bench._common import Run, cpu_seconds, free_port, median, parse, parser, summary, tool_path
from bench.metadata import _wrk

ID = "P1"
REFERENCE = "nginx proxy_cache HIT (1 worker); bare uvicorn raw-ASGI app"
QUICK = {"duration": 1.0, "rounds": 1, "connections": 8, "warmup": 0.0}
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
    p = parser("p1", __doc__)
    p.add_argument("--duration", type=float, default=10.0, help="wrk -d seconds, whole (spec: 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c (spec: 64)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="unrecorded wrk seconds per column (0: none)")
    return parse(p, argv, QUICK)


def tune_body(fake: FakeUpstream) -> bytes:
    """Pad the fake's show JSON to exactly BODY_BYTES; return the upstream bytes."""
    url = f"http://127.0.0.1:{fake.port}{UPSTREAM_PATH}?api_key={TMDB_KEY}"
    fake.body_padding = BODY_BYTES
    _, _, body = _procs.http_get(url)
    fake.body_padding += BODY_BYTES - len(body)
    _, _, body = _procs.http_get(url)
    assert len(body) == BODY_BYTES, len(body)
    return body


def relay_env(fake: FakeUpstream) -> dict[str, str]:
    return {**fake.env(), "TURN_ENABLED": "false"}


def check_hit(name: str, url: str, body: bytes, header: str = "x-cache") -> None:
    _procs.http_get(url)  # first request fills the cache
    status, headers, got = _procs.http_get(url)
    if status != 200 or got != body:
        raise RuntimeError(f"{name}: status {status}, {len(got)} bytes (want 200, identical body)")
    if header and headers.get(header) != "HIT":
        raise RuntimeError(f"{name}: {header}={headers.get(header)!r}, want HIT")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    nginx = tool_path("nginx")
    if nginx is None:
        raise SystemExit("nginx is not installed (apt-get install nginx-light)")
    run = Run(ID, argv, title=summary(__doc__), reference=REFERENCE, quick=args.quick,
              tools=("nginx", "wrk"), duration_s=args.duration, rounds=args.rounds,
              connections=args.connections, body_bytes=BODY_BYTES, path=RELAY_PATH,
              wrk=" ".join(_wrk.command("http://127.0.0.1:PORT" + RELAY_PATH, args.duration,
                                        args.connections)[1:]))
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-p1-")))
        fake = FakeUpstream().start()
        stack.callback(fake.stop)
        body = tune_body(fake)

        ours = stack.enter_context(_procs.relay(relay_env(fake), workdir=tmp / "ours"))

        nport = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "", tmp=tmp, port=nport,
            relay_path=RELAY_PATH, upstream_port=fake.port, upstream_path=UPSTREAM_PATH,
            key=TMDB_KEY))
        nurl = f"http://127.0.0.1:{nport}"
        ngx = _procs.start("nginx", [nginx, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"),
                                     "-c", str(conf)], tmp, _procs.answers_http(nurl + "/"),
                           url=nurl)
        stack.callback(ngx.stop)

        body_file = tmp / "body.json"
        body_file.write_bytes(body)
        rport = free_port()
        rurl = f"http://127.0.0.1:{rport}"
        raw = _procs.start("raw", _procs.python_module(
            "uvicorn", "bench.metadata._raw_asgi:app", "--host", "127.0.0.1", "--port",
            str(rport), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--no-server-header", "--log-level", "warning"), tmp,
            _procs.answers_http(rurl + "/"), {"RAW_ASGI_BODY": str(body_file)}, url=rurl)
        stack.callback(raw.stop)

        columns = {"ours": ours, "nginx": ngx, "raw": raw}
        for name, proc in columns.items():
            check_hit(name, proc.url + RELAY_PATH, body, "" if name == "raw" else "x-cache")
        upstream_calls = fake.count(UPSTREAM_PATH) - 2  # two calls from tune_body

        if args.warmup > 0:
            for proc in columns.values():
                _wrk.run(proc.url + RELAY_PATH, args.warmup, args.connections)

        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in columns}
        for r in range(args.rounds):
            for name, proc in columns.items():
                cpu0 = cpu_seconds(proc.pid, children=True)
                res = _wrk.run(proc.url + RELAY_PATH, args.duration, args.connections)
                cpu = cpu_seconds(proc.pid, children=True) - cpu0
                runs[name].append({**res.as_dict(), "server_cpu_s": cpu,
                                   "cpu_us_per_req": 1e6 * cpu / max(res.requests, 1)})
                print(f"P1 round {r + 1} {name}: {res.rps:.0f} req/s, "
                      f"p99 {res.p99_ms:.2f} ms, server CPU "
                      f"{runs[name][-1]['cpu_us_per_req']:.1f} us/req, non-2xx {res.non_2xx}, "
                      f"socket errors {res.socket_errors}", file=sys.stderr, flush=True)
        run.detail("rounds", runs)
        run.detail("upstream_calls_during_run", fake.count(UPSTREAM_PATH) - 2 - upstream_calls)
        run.detail("upstream_calls_to_fill_caches", upstream_calls)

    def per_round(key: str, a: str, b: str) -> float:
        return median([x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True)])

    def med(name: str, key: str) -> float:
        return median([x[key] for x in runs[name]])

    run.ratio("vs_nginx", per_round("rps", "ours", "nginx"), "req/s, median of per-round ratios",
              target=">= 0.6", headline=True)
    run.figure("p99", med("ours", "p99_ms"), "ms", "median of rounds", target="< 10",
               headline=True)
    run.ratio("vs_raw_asgi", per_round("rps", "ours", "raw"), "req/s, median of per-round ratios")
    run.ratio("cpu_vs_nginx", per_round("cpu_us_per_req", "ours", "nginx"),
              "server CPU per request, median of per-round ratios (steadier than req/s)")
    run.figure("rps", med("ours", "rps"), "req/s", "median of rounds")
    run.figure("cpu_per_req", med("ours", "cpu_us_per_req"), "us",
               "server process-tree CPU (utime+stime) per request, median of rounds")
    for name in ("nginx", "raw"):
        run.reference_figure(f"{name}_rps", med(name, "rps"), "req/s", "median of rounds")
        run.reference_figure(f"{name}_p99", med(name, "p99_ms"), "ms", "median of rounds")
        run.reference_figure(f"{name}_cpu_per_req", med(name, "cpu_us_per_req"), "us")
    errors = sum(x["non_2xx"] + x["socket_errors"] for v in runs.values() for x in v)
    run.figure("errors", errors, "", "non-2xx + socket errors, all columns", target="== 0")
    run.write()
    return 0
