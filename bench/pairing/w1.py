"""W1: relay throughput and one-way latency of 1 KiB frames, against two bare echo servers.

Throughput: N instance/client pairs (N = 100, 1000) exchange 1 KiB ``message`` /
``relay_message`` frames in a closed loop (window of 4 per pair; the instance answers every
frame), against a bare ``websockets`` echo server with 2N connections doing the same. Figure:
messages the server received and forwarded per second; rounds interleaved relay, echo, relay,
echo, ...; median of the rounds; server CPU per message from /proc/PID/stat.

Latency: 1,000 pairs at 1, 2, 5 and 10 msg/s each (half each direction, fixed phases), one-way
latency from a timestamp in the payload (both ends live in this process: one clock). The
latency run uses a lean client (``bench/pairing/_rawws.py``) so the load generator's CPU
competes less with the relay. At each rate the same run is repeated against the bare
``websockets`` echo server and a bare asyncio echo (``bench/pairing/_rawecho.py``: no
framework, no JSON; the floor of a Python server on this machine), one right after the other,
so the three share the machine's conditions; the relay's p99 and CPU per frame are reported as
ratios to the bare asyncio echo's (``--no-reference-latency`` skips the references).
``--canary`` runs a CPU canary (``bench/pairing/_canary.py``) beside each latency row to tell
host stalls apart from the relay's own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import bisect
import contextlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

import uvloop
import websockets

from bench import _procs
from bench._common import (
    REPO,
    Run,
    cpu_seconds,
    free_port,
    median,
    parse,
    parser,
    percentile,
    runqueue_wait_seconds,
    summary,
)
from bench.pairing._clients import (
    fresh_ip,
    gather_limited,
    keepalive,
    new_key,
    open_ws,
    register,
)
from bench.pairing._rawws import RawWS

Socket = TypeVar("Socket", websockets.ClientConnection, RawWS)
ID = "W1"
REFERENCE = "bare websockets echo server; bare asyncio echo (latency and CPU per frame)"
# 100 pairs at least: fewer would each exceed the relay's 500 msg/s per session and be closed
QUICK = {"rounds": 1, "seconds": 1.0, "pairs": [100], "latency_pairs": 100, "rates": [10.0]}

WINDOW = 4
PAYLOAD = base64.b64encode(b"\x00" * 1024).decode()


class Pairs(Generic[Socket]):
    """N instance sockets and their N client sockets, with the session ids that join them."""

    def __init__(self) -> None:
        self.instances: list[Socket] = []
        self.clients: list[Socket] = []
        self.sessions: list[str] = []

    async def collect_sessions(self) -> None:
        """The ``connection`` each instance got for its client: the session ids, in order."""
        for inst in self.instances:
            conn = json.loads(await inst.recv())
            assert conn["type"] == "connection"
            self.sessions.append(conn["session_id"])

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.instances + self.clients),
                             return_exceptions=True)


async def open_pairs(url: str, n: int, tag: str) -> Pairs[websockets.ClientConnection]:
    """N registered instances and N clients connected to them, on the ``websockets`` client."""
    ws_base = url.replace("http://", "ws://")
    pairs: Pairs[websockets.ClientConnection] = Pairs()
    pairs.instances = await gather_limited(
        [register(ws_base, f"w1-{tag}-{i}") for i in range(n)], 100)

    async def client(i: int) -> websockets.ClientConnection:
        ws = await open_ws(ws_base + "/relay/client/websocket")
        await ws.send(json.dumps({"type": "connect", "instance_id": f"w1-{tag}-{i}"}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "connected", reply
        return ws

    pairs.clients = await gather_limited([client(i) for i in range(n)], 100)
    await pairs.collect_sessions()
    return pairs


async def closed_loop(sender: websockets.ClientConnection, frame: str,
                      stop: asyncio.Event, counter: list[int]) -> None:
    for _ in range(WINDOW):
        await sender.send(frame)
    while not stop.is_set():
        await sender.recv()
        counter[0] += 1
        await sender.send(frame)


async def instance_echo(inst: websockets.ClientConnection, reply: str,
                        stop: asyncio.Event) -> None:
    while not stop.is_set():
        raw = await inst.recv()
        if isinstance(raw, str) and raw.startswith('{"type":"pong"'):
            continue
        await inst.send(reply)


async def drain(ws: websockets.ClientConnection) -> None:
    """Consume frames left in flight after a round (up to a short quiet period)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 0.5)
    except (TimeoutError, websockets.ConnectionClosed):
        pass


async def measure(tasks_factory: Any, counter: list[int], seconds: float,
                  pid: int | None) -> tuple[float, float | None]:
    stop = asyncio.Event()
    tasks = tasks_factory(stop)
    await asyncio.sleep(1.0)  # warm-up
    c0, t0 = counter[0], time.perf_counter()
    cpu0 = cpu_seconds(pid) if pid else None
    await asyncio.sleep(seconds)
    c1, t1 = counter[0], time.perf_counter()
    cpu = (cpu_seconds(pid) - cpu0) if pid and cpu0 is not None else None
    stop.set()
    await asyncio.sleep(0.5)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return (c1 - c0) / (t1 - t0), cpu


async def relay_round(pairs: Pairs[websockets.ClientConnection], seconds: float,
                      pid: int) -> tuple[float, float | None]:
    counter = [0]
    frame = json.dumps({"type": "message", "payload": PAYLOAD})

    def factory(stop: asyncio.Event) -> list[asyncio.Task[None]]:
        tasks = []
        for inst, client, sid in zip(pairs.instances, pairs.clients, pairs.sessions,
                                     strict=True):
            reply = json.dumps({"type": "relay_message", "session_id": sid, "payload": PAYLOAD})
            tasks.append(asyncio.create_task(instance_echo(inst, reply, stop)))
            tasks.append(asyncio.create_task(closed_loop(client, frame, stop, counter)))
        return tasks

    rate, cpu = await measure(factory, counter, seconds, pid)
    await asyncio.gather(*(drain(w) for w in pairs.instances + pairs.clients))
    return rate * 2, cpu  # each round trip is two relayed messages


async def echo_round(conns: list[websockets.ClientConnection], seconds: float,
                     pid: int) -> tuple[float, float | None]:
    counter = [0]
    frame = json.dumps({"type": "message", "payload": PAYLOAD})

    def factory(stop: asyncio.Event) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(closed_loop(c, frame, stop, counter)) for c in conns]

    rate, cpu = await measure(factory, counter, seconds, pid)
    await asyncio.gather(*(drain(c) for c in conns))
    return rate, cpu


class RawPairs(Pairs[RawWS]):
    """N instance/client pairs on the lean client (:mod:`bench.pairing._rawws`), for the
    latency run."""

    @classmethod
    async def open(cls, url: str, n: int, tag: str) -> RawPairs:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self = cls()

        async def instance(i: int) -> RawWS:
            ws = await RawWS.connect(host, int(port), "/relay/tunnel/websocket",
                                     {"x-forwarded-for": fresh_ip()})
            ws.send(json.dumps({"type": "register", "instance_id": f"w1-{tag}-{i}",
                                "public_key": new_key(), "direct_urls": []}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "registered", reply
            return ws

        async def client(i: int) -> RawWS:
            ws = await RawWS.connect(host, int(port), "/relay/client/websocket",
                                     {"x-forwarded-for": fresh_ip()})
            ws.send(json.dumps({"type": "connect", "instance_id": f"w1-{tag}-{i}"}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "connected", reply
            return ws

        self.instances = await gather_limited([instance(i) for i in range(n)], 100)
        self.clients = await gather_limited([client(i) for i in range(n)], 100)
        await self.collect_sessions()
        return self

    def keepalive(self, every: float = 20.0) -> asyncio.Task[None]:
        """Each instance pings every ``every`` s at its own phase, as independent mydia
        servers do (1,000 pings at once would be a burst of 1,000 database writes)."""
        async def ping() -> None:
            step = every / max(1, len(self.instances))
            while True:
                for ws in self.instances:
                    await asyncio.sleep(step)
                    ws.send(b'{"type":"ping"}')
        return asyncio.create_task(ping())


def start_canary(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(_procs.python_module("bench.pairing._canary", str(seconds)),
                            cwd=REPO, stdout=subprocess.PIPE)


def canary_figures(canary: subprocess.Popen[bytes], ms: list[float],
                   sent_at: list[float]) -> dict[str, Any]:
    """How many canary units ran > 8x slow, and how many of the frames later than 5 ms were
    sent in the 150 ms that follow such a unit (the time a backlog takes to drain), next to
    the share of all frames sent in those windows (what chance alone would give)."""
    out, _ = canary.communicate(timeout=30)
    report = json.loads(out.decode().strip().splitlines()[-1])
    stalls = sorted(t for t, _ in report["stalls"])

    def after_stall(t: float) -> bool:
        i = bisect.bisect_right(stalls, t + 0.010)
        return bool(i) and t - stalls[i - 1] <= 0.150

    late = [t for t, x in zip(sent_at, ms, strict=True) if x > 5.0]
    near = sum(map(after_stall, late))
    base = sum(map(after_stall, sent_at))
    return {"canary_units": report["units"], "canary_median_us": report["median_us"],
            "canary_units_over_8x": len(stalls),
            "late_frames_within_150ms_of_a_canary_stall_pct":
                round(100 * near / len(late), 1) if late else None,
            "all_frames_within_150ms_of_a_canary_stall_pct":
                round(100 * base / len(sent_at), 1) if sent_at else None}


async def latency(pairs: RawPairs, seconds: float, rate_per_pair: float,
                  pid: int, slot: float = 0.001, canary: bool = False) -> dict[str, Any]:
    """Open loop: every pair sends ``rate_per_pair`` msg/s, half each way, phases spread
    evenly over ``slot``-long slots (1 ms: 10 frames per slot at 10,000 msg/s; the former
    10 ms slots sent synchronised bursts of 100 frames, whose queueing alone is ~6 ms).
    One ticker writes every frame synchronously and receivers are
    plain callbacks (:mod:`bench.pairing._rawws`), so the generator costs little CPU. Frames are the
    same size as in the throughput run: the payload is base64 of 1,024 bytes whose first 24
    are a ``perf_counter`` timestamp (one clock: both ends live in this process).
    With ``canary``, :mod:`bench.pairing._canary` runs beside the measured seconds."""
    one_way: list[float] = []
    sent_at: list[float] = []
    recording = [False]
    stop = asyncio.Event()
    period = 2.0 / rate_per_pair  # each direction sends half the pair's rate
    nslots = max(1, round(period / slot))
    # base64(ts24 + pad) == base64(ts24) + base64(pad) since 24 is a multiple of 3
    tail = binascii.b2a_base64(b" " * 1000, newline=False) + b'"}'
    perf = time.perf_counter
    b64 = binascii.b2a_base64
    a2b = binascii.a2b_base64

    senders: list[list[tuple[RawWS, bytes]]] = [[] for _ in range(nslots)]
    for i, (inst, client, sid) in enumerate(zip(pairs.instances, pairs.clients,
                                                pairs.sessions, strict=True)):
        senders[i % nslots].append((client, b'{"type":"message","payload":"'))
        senders[(i + nslots // 2) % nslots].append(
            (inst, b'{"type":"relay_message","session_id":"' + sid.encode()
             + b'","payload":"'))

    def on_message(data: bytes) -> None:
        now = perf()
        at = data.find(b'"payload":"')
        if at < 0:
            return
        sent = float(a2b(data[at + 11:at + 43])[:24])
        if recording[0]:
            one_way.append(now - sent)
            sent_at.append(sent)

    async def ticker() -> None:
        nxt = perf()
        k = 0
        while not stop.is_set():
            for ws, head in senders[k % nslots]:
                ws.send(head + b64(f"{perf():.9f}".encode().ljust(24), newline=False) + tail)
            k += 1
            nxt += slot
            await asyncio.sleep(max(0.0, nxt - perf()))

    for w in pairs.instances + pairs.clients:
        w.on_message = on_message
    task = asyncio.create_task(ticker())
    await asyncio.sleep(1.0)
    recording[0] = True
    probe = start_canary(seconds) if canary else None
    cpu0, gen0 = cpu_seconds(pid), time.process_time()
    wait0, gwait0 = runqueue_wait_seconds(pid), runqueue_wait_seconds(os.getpid())
    await asyncio.sleep(seconds)
    server_cpu, gen_cpu = cpu_seconds(pid) - cpu0, time.process_time() - gen0
    wait, gwait = runqueue_wait_seconds(pid) - wait0, runqueue_wait_seconds(os.getpid()) - gwait0
    recording[0] = False
    stop.set()
    await task
    await asyncio.sleep(0.5)
    ms = [x * 1000 for x in one_way]
    n = len(ms)
    # where the tail comes from: how many 100 ms windows hold a frame later than 5 ms
    slow_windows = {int(t * 10) for t, x in zip(sent_at, ms, strict=True) if x > 5.0}
    extra = await asyncio.to_thread(canary_figures, probe, ms, sent_at) if probe else {}
    return {**extra, "rate_per_pair": rate_per_pair, "slot_ms": slot * 1000, "messages": n,
            "offered_msg_per_s": rate_per_pair * len(pairs.instances),
            "achieved_msg_per_s": round(n / seconds),
            "p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3),
            "max_ms": round(max(ms, default=float("nan")), 3),
            "over_5ms_pct": round(100 * sum(x > 5.0 for x in ms) / n, 2) if n else float("nan"),
            "windows_100ms_with_over_5ms": f"{len(slow_windows)} of {round(seconds * 10)}",
            "server_cpu_pct": round(100 * server_cpu / seconds),
            # time runnable but not running (CPU taken by other processes): the noise floor
            "server_runqueue_wait_ms_per_s": round(1000 * wait / seconds, 1),
            "load_generator_runqueue_wait_ms_per_s": round(1000 * gwait / seconds, 1),
            "server_cpu_us_per_msg": round(1e6 * server_cpu / n, 1) if n else float("nan"),
            "load_generator_cpu_pct": round(100 * gen_cpu / seconds),
            "load_generator_cpu_us_per_msg": round(1e6 * gen_cpu / n, 1) if n else float("nan")}


class EchoPairs(RawPairs):
    """2N lean connections to an echo server, shaped like :class:`RawPairs` so the latency
    harness drives a reference exactly as it drives the relay (each frame comes back to its
    sender: the same gen -> server -> gen path as a relayed frame)."""

    @classmethod
    async def open_echo(cls, port: int, n: int) -> EchoPairs:
        self = cls()
        self.instances = await gather_limited(
            [RawWS.connect("127.0.0.1", port, "/") for _ in range(n)], 100)
        self.clients = await gather_limited(
            [RawWS.connect("127.0.0.1", port, "/") for _ in range(n)], 100)
        self.sessions = ["-" * 22] * n
        return self


def print_latency(name: str, n: int, row: dict[str, Any]) -> None:
    print(f"  latency {name}, {n} pairs x {row['rate_per_pair']:g} msg/s: p50 "
          f"{row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, achieved "
          f"{row['achieved_msg_per_s']:,} of {row['offered_msg_per_s']:,.0f} msg/s; "
          f"{row['over_5ms_pct']}% > 5 ms in {row['windows_100ms_with_over_5ms']} 100 ms "
          f"windows; CPU server "
          f"{row['server_cpu_pct']}% ({row['server_cpu_us_per_msg']} us/msg), load generator "
          f"{row['load_generator_cpu_pct']}% ({row['load_generator_cpu_us_per_msg']} us/msg); "
          f"waiting for a CPU: server {row['server_runqueue_wait_ms_per_s']} ms/s, "
          f"generator {row['load_generator_runqueue_wait_ms_per_s']} ms/s", flush=True)
    if "canary_units" in row:
        print(f"    canary: {row['canary_units_over_8x']} of {row['canary_units']} units > 8x "
              f"their median ({row['canary_median_us']} us); frames > 5 ms sent within 150 ms "
              f"after such a unit: {row['late_frames_within_150ms_of_a_canary_stall_pct']}% "
              f"(all frames: {row['all_frames_within_150ms_of_a_canary_stall_pct']}%)",
              flush=True)


async def latency_sweep(url: str, n: int, seconds: float, rates: list[float],
                        pid: int, slot: float, ping_every: float = 20.0,
                        references: dict[str, tuple[int, int]] | None = None,
                        canary: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The relay's latency at each rate, each followed by the same run against every
    reference server (name -> (port, pid)): one after the other, so they share the machine's
    conditions of the moment."""
    targets: dict[str, tuple[RawPairs, int]] = {"relay": (await RawPairs.open(url, n, "lat"),
                                                          pid)}
    for name, (port, ref_pid) in (references or {}).items():
        targets[name] = (await EchoPairs.open_echo(port, n), ref_pid)
    pinger = targets["relay"][0].keepalive(ping_every) if ping_every > 0 else None
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for rate in rates:
        for name, (pairs, target_pid) in targets.items():
            row = await latency(pairs, seconds, rate, target_pid, slot, canary)
            print_latency(name, n, row)
            rows[name].append(row)
    if pinger is not None:
        pinger.cancel()
    for pairs, _ in targets.values():
        await pairs.close()
    return rows


async def throughput(url: str, pid: int, echo: tuple[int, int], n: int,
                     args: argparse.Namespace) -> dict[str, Any]:
    """Closed-loop rounds at N pairs, relay and websockets echo (port, pid) interleaved."""
    echo_port, echo_pid = echo
    pairs = await open_pairs(url, n, f"n{n}")
    pinger = asyncio.create_task(keepalive(pairs.instances))
    conns = await gather_limited(
        [open_ws(f"ws://127.0.0.1:{echo_port}/") for _ in range(2 * n)], 100)
    rows = []
    for r in range(args.rounds):
        relay, relay_cpu = await relay_round(pairs, args.seconds, pid)
        ref, ref_cpu = await echo_round(conns, args.seconds, echo_pid)
        relay_us = 1e6 * (relay_cpu or 0) / (relay * args.seconds)
        echo_us = 1e6 * (ref_cpu or 0) / (ref * args.seconds)
        rows.append({"round": r + 1, "relay_msg_s": round(relay), "echo_msg_s": round(ref),
                     "ratio": round(relay / ref, 3), "relay_server_cpu_s": relay_cpu,
                     "echo_server_cpu_s": ref_cpu, "relay_cpu_us_per_msg": round(relay_us, 1),
                     "echo_cpu_us_per_msg": round(echo_us, 1)})
        print(f"  N={n} round {r + 1}: relay {relay:,.0f} msg/s, echo {ref:,.0f} msg/s, ratio "
              f"{relay / ref:.2f}; server CPU per message: relay {relay_us:.0f} us, echo "
              f"{echo_us:.0f} us", flush=True)
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    pinger.cancel()
    await pairs.close()
    return {"rounds": rows,
            **{f"median_{k}": median(x[k] for x in rows) for k in (
                "relay_msg_s", "echo_msg_s", "ratio", "relay_cpu_us_per_msg",
                "echo_cpu_us_per_msg")}}


async def measure_all(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"throughput": {}, "latency": None}
    with contextlib.ExitStack() as stack:
        refs: dict[str, tuple[int, int]] = {}  # name -> (port, pid)
        for name, module in (("websockets echo", "bench.pairing._echo"),
                             ("bare asyncio echo", "bench.pairing._rawecho")):
            port = free_port()
            proc = _procs.start(name.replace(" ", "-"), _procs.python_module(module, str(port)),
                                tmp, _procs.listening(port))
            stack.callback(proc.stop)
            refs[name] = (port, proc.pid)
        relay = stack.enter_context(_procs.relay(workdir=tmp / "relay"))
        for n in ([] if args.latency_only else args.pairs):
            results["throughput"][str(n)] = await throughput(
                relay.url, relay.pid, refs["websockets echo"], n, args)
        references = {} if args.no_reference_latency else refs
        results["latency"] = {"pairs": args.latency_pairs, "sweep": await latency_sweep(
            relay.url, args.latency_pairs, args.seconds * 2, args.rates, relay.pid,
            args.slot_ms / 1000, args.ping_every, references, args.canary)}
    return results


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("w1", __doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0,
                   help="seconds per throughput round (latency rows run twice as long)")
    p.add_argument("--pairs", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    p.add_argument("--latency-pairs", type=int, default=1000)
    p.add_argument("--slot-ms", type=float, default=1.0,
                   help="latency run: sending slot (frames due in one slot are sent together)")
    p.add_argument("--ping-every", type=float, default=20.0,
                   help="latency run: each instance's ping period in s (0: no pings)")
    p.add_argument("--no-reference-latency", action="store_true",
                   help="latency run: skip the same run against the two echo servers")
    p.add_argument("--canary", action="store_true",
                   help="latency run: time a CPU canary (pairing/_canary.py) beside each row")
    p.add_argument("--latency-only", action="store_true",
                   help="skip the closed-loop throughput rounds")
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                   default=[1.0, 2.0, 5.0, 10.0], help="messages/s per pair (latency sweep)")
    return parse(p, argv, QUICK)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = Run(ID, argv, title=summary(__doc__), reference=REFERENCE, quick=args.quick,
              rounds=args.rounds, seconds=args.seconds, pairs=args.pairs,
              latency_pairs=args.latency_pairs, rates=args.rates, slot_ms=args.slot_ms,
              ping_every_s=args.ping_every, canary=args.canary)
    with tempfile.TemporaryDirectory(prefix="bench-w1-") as tmp:
        results = uvloop.run(measure_all(args, Path(tmp)))
    run.detail("throughput", results["throughput"])
    run.detail("latency", results["latency"])
    for n, t in results["throughput"].items():
        run.ratio(f"vs_echo_n{n}", t["median_ratio"],
                  f"relayed msg/s at N={n} pairs over the websockets echo's, median of rounds",
                  target=">= 0.5", headline=True)
        run.figure(f"msg_s_n{n}", t["median_relay_msg_s"], "msg/s", "median of rounds")
        run.figure(f"cpu_per_msg_n{n}", t["median_relay_cpu_us_per_msg"], "us",
                   "server CPU per relayed message, median of rounds")
        run.reference_figure(f"echo_msg_s_n{n}", t["median_echo_msg_s"], "msg/s")
        run.reference_figure(f"echo_cpu_per_msg_n{n}", t["median_echo_cpu_us_per_msg"], "us")
    sweep = results["latency"]["sweep"]
    for i, row in enumerate(sweep["relay"]):
        at = f"@{row['rate_per_pair']:g}/s"  # message rate per pair
        top = i == len(sweep["relay"]) - 1  # the highest rate: the spec's 10 msg/s per pair
        run.figure(f"p99{at}", row["p99_ms"], "ms",
                   f"one-way, {results['latency']['pairs']} pairs")
        run.figure(f"cpu_per_frame{at}", row["server_cpu_us_per_msg"], "us")
        for name, rows in sweep.items():
            if name == "relay":
                continue
            tag = "echo" if name == "websockets echo" else "bare_echo"
            ref = rows[i]
            run.reference_figure(f"{tag}_p99{at}", ref["p99_ms"], "ms")
            run.reference_figure(f"{tag}_cpu_per_frame{at}", ref["server_cpu_us_per_msg"], "us")
            if tag == "bare_echo":
                run.ratio(f"p99_vs_bare_echo{at}", ratio(row["p99_ms"], ref["p99_ms"]),
                          "one-way p99, the same open loop right after", headline=top)
                run.ratio(f"cpu_vs_bare_echo{at}", ratio(row["server_cpu_us_per_msg"],
                                                         ref["server_cpu_us_per_msg"]),
                          "server CPU per frame", headline=top)
    run.write()
    return 0
