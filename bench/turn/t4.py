"""T4: bulk media through TURN against coturn, 8 allocations x 10 Mbit/s of 1,200-byte datagrams.

Each round opens ``--allocations`` aioice allocations (UDP, channels) on one server and
streams ``--size``-byte datagrams at ``--mbps`` per allocation for ``--seconds``: even
allocations from the client to its peer (client -> relay -> peer), odd ones from the peer to
the client (peer -> relay -> client), so both directions of the relay path carry video-like
load. Servers alternate, one up at a time (interleaved, median of ``--rounds``). Figures:
server CPU-seconds per relayed GB of payload (utime + stime from /proc/PID/stat over the
streaming window and one second of drain) as a ratio ours/coturn, and loss % (datagrams sent
that never arrived).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import aioice.turn

from bench._common import Run, cpu_seconds, median, parse, parser, summary, udp_rcvbuf_errors
from bench.turn._servers import REFERENCE, SERVERS, STARTERS, Server, rest_credential

ID = "T4"
QUICK = {"rounds": 1, "seconds": 1.0, "allocations": 2}
BUFFER = 4 << 20
DRAIN = 1.0


class Counter(asyncio.DatagramProtocol):
    """Counts the datagrams (and payload bytes) that arrive."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.count += 1
        self.bytes += len(data)


@dataclass
class Flow:
    send: Any  # (data) -> None
    receiver: Counter
    upstream: bool
    sent: int = 0
    closers: list[Any] = field(default_factory=list)


async def open_flow(server: Server, k: int) -> Flow:
    """Allocation ``k`` and its peer, its channel bound by a first datagram each way."""
    loop = asyncio.get_running_loop()
    username, password = rest_credential(f"t4-{k}")
    tr, client = await aioice.turn.create_turn_endpoint(
        Counter, ("127.0.0.1", server.port), username, password)
    peer_tr, peer = await loop.create_datagram_endpoint(Counter, local_addr=("127.0.0.1", 0))
    peer_addr = peer_tr.get_extra_info("sockname")
    relayed = tuple(tr.get_extra_info("sockname"))
    tr.sendto(b"hello", peer_addr)  # binds the channel (and the permission)
    for _ in range(500):
        if peer.count:
            break
        await asyncio.sleep(0.01)
    peer_tr.sendto(b"hello", relayed)
    for _ in range(500):
        if client.count:
            break
        await asyncio.sleep(0.01)
    if not (peer.count and client.count):
        raise RuntimeError(f"flow {k}: the relay does not pass data")
    peer.count = peer.bytes = client.count = client.bytes = 0
    upstream = k % 2 == 0
    if upstream:
        flow = Flow(lambda data: tr.sendto(data, peer_addr), peer, True)
    else:
        flow = Flow(lambda data: peer_tr.sendto(data, relayed), client, False)
    flow.closers = [tr, peer_tr]
    return flow


async def stream(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    flows = [await open_flow(server, k) for k in range(args.allocations)]
    rate = args.mbps * 1e6 / 8 / args.size  # datagrams per second per flow
    payload = bytes(args.size)
    rcv0 = udp_rcvbuf_errors()
    cpu0 = cpu_seconds(server.pid)
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < args.seconds:
        due = int(elapsed * rate)
        for flow in flows:
            while flow.sent < due:
                flow.send(payload)
                flow.sent += 1
        await asyncio.sleep(0.001)
    for flow in flows:  # the last datagrams of the window
        while flow.sent < int(args.seconds * rate):
            flow.send(payload)
            flow.sent += 1
    wall = time.perf_counter() - t0
    await asyncio.sleep(DRAIN)
    cpu = cpu_seconds(server.pid) - cpu0
    sent = sum(f.sent for f in flows)
    received = sum(f.receiver.count for f in flows)
    relayed_bytes = sum(f.receiver.bytes for f in flows)
    for flow in flows:
        for closer in flow.closers:
            closer.close()
    await asyncio.sleep(0.2)
    return {
        "server": server.kind,
        "sent": sent,
        "received": received,
        "upstream_received": sum(f.receiver.count for f in flows if f.upstream),
        "downstream_received": sum(f.receiver.count for f in flows if not f.upstream),
        "loss_pct": round(100 * (sent - received) / sent, 3) if sent else 100.0,
        "relayed_gb": round(relayed_bytes / 1e9, 4),
        "server_cpu_s": round(cpu, 3),
        "cpu_s_per_gb": round(cpu / (relayed_bytes / 1e9), 3) if relayed_bytes else None,
        "offered_mbps": round(sent * args.size * 8 / 1e6 / wall, 1),
        "wall_s": round(wall, 2),
        "rcvbuf_errors": udp_rcvbuf_errors() - rcv0,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = parser("t4", __doc__)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3)")
    p.add_argument("--allocations", type=int, default=8, help="allocations (spec: 8)")
    p.add_argument("--mbps", type=float, default=10.0, help="Mbit/s per allocation (spec: 10)")
    p.add_argument("--size", type=int, default=1200, help="datagram payload bytes (spec: 1200)")
    p.add_argument("--seconds", type=float, default=10.0, help="streaming time (spec: 10)")
    return parse(p, argv, QUICK)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = Run(ID, argv, title=summary(__doc__), reference=REFERENCE, quick=args.quick,
              tools=("coturn",), rounds=args.rounds, allocations=args.allocations,
              mbps=args.mbps, size=args.size, seconds=args.seconds)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in SERVERS}
    for i in range(args.rounds):
        for kind in SERVERS:
            with STARTERS[kind]() as server:
                time.sleep(0.5)
                row = asyncio.run(stream(server, args))
            runs[kind].append(row)
            print(f"# round {i + 1} {kind}: {json.dumps(row)}", flush=True)
            time.sleep(1)
    run.detail("runs", runs)

    def med(kind: str, key: str) -> float:
        return median(r[key] for r in runs[kind] if r.get(key) is not None)

    ours, coturn = med("ours", "cpu_s_per_gb"), med("coturn", "cpu_s_per_gb")
    loss, coturn_loss = med("ours", "loss_pct"), med("coturn", "loss_pct")
    run.figure("cpu_per_gb", ours, "CPU-s", "server CPU per relayed GB of payload, median")
    run.reference_figure("coturn_cpu_per_gb", coturn, "CPU-s", "median of rounds")
    run.ratio("cpu_vs_coturn", ours / coturn if coturn else float("nan"),
              "server CPU per relayed GB ours/coturn, medians of rounds", target="<= 1.0",
              headline=True)
    run.figure("loss", loss, "%", "median of rounds", headline=True)
    run.reference_figure("coturn_loss", coturn_loss, "%", "median of rounds")
    run.figure("loss_over_coturn", loss - coturn_loss, "points", "median loss minus coturn's",
               target="<= 0.5")
    run.figure("offered_mbps", med("ours", "offered_mbps"), "Mbit/s",
               f"all {args.allocations} allocations together, median of rounds")
    run.write()
    return 0
