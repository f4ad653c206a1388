"""Bare UDP forwarders shaped like the TURN relay path, to compare I/O designs by CPU/packet.

Topology (all loopback): ``--clients`` client sockets send ChannelData-sized datagrams (4-byte
header + payload) to one *listener*; the forwarder keeps one *relay* socket per client and
sends the payload on to ``turnutils_peer`` (an echo server); the echo comes back to the relay
socket and goes out of the listener to the client with the 4-byte header again. Like
``turnutils_uclient -m 20 -z 1``: every client sends one packet per millisecond.

Designs (``--modes``):
  a  uvloop ``create_datagram_endpoint`` for the listener and every relay socket (today)
  b  one epoll set on the loop (``add_reader``), ``recvmmsg`` drains, ``sendmmsg`` towards the
     clients, addresses kept as raw sockaddr bytes (``metadata_relay.turn.mmsg``)
  c  the same epoll set, drained with ``recvfrom_into``, sent with ``sendto`` (no ctypes)

Figure: forwarder CPU (utime+stime from /proc) per forwarded datagram (2 per round trip).
``uv run python -m bench turn_forwarders --modes a,b,c --seconds 4``"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any

from bench.turn_harness import CLK_TCK, cpu_seconds, echo_peer, free_port

HEADER = 4


def forwarder(mode: str, listen: int, peer: int, clients: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        lsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        lsock.bind(("127.0.0.1", listen))
        lsock.setblocking(False)
        peer_addr = ("127.0.0.1", peer)
        if mode == "a":
            await run_a(loop, lsock, peer_addr)
        else:
            await run_epoll(loop, lsock, peer_addr, mode)
        print("ready", flush=True)
        await asyncio.sleep(3600)

    async def run_a(loop: Any, lsock: socket.socket, peer_addr: Any) -> None:
        relays: dict[Any, Any] = {}

        class Relay(asyncio.DatagramProtocol):
            def __init__(self, client: Any) -> None:
                self.client = client

            def datagram_received(self, data: bytes, addr: Any) -> None:
                listener.sendto(b"\x40\x00" + len(data).to_bytes(2, "big") + data, self.client)

        class Listener(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                r = relays.get(addr)
                if r is None:
                    return
                n = data[2] << 8 | data[3]
                r.sendto(data[4:4 + n], peer_addr)

        listener, _ = await loop.create_datagram_endpoint(Listener, sock=lsock)

        # a client's relay socket is created on its first datagram (b"hello")
        def register(addr: Any) -> None:
            async def make() -> None:
                t, _ = await loop.create_datagram_endpoint(lambda: Relay(addr),
                                                           local_addr=("127.0.0.1", 0))
                relays[addr] = t
            loop.create_task(make())

        orig = Listener.datagram_received

        def first(self: Any, data: bytes, addr: Any) -> None:
            if addr not in relays and data == b"hello":
                register(addr)
                return
            orig(self, data, addr)

        Listener.datagram_received = first  # type: ignore[method-assign]

    async def run_epoll(loop: Any, lsock: socket.socket, peer_addr: Any, mode: str) -> None:
        from metadata_relay.turn import mmsg
        ep = select.epoll()
        lfd = lsock.fileno()
        ep.register(lfd, select.EPOLLIN)
        by_key: dict[Any, Any] = {}  # client key -> relay socket
        by_fd: dict[int, Any] = {}  # relay fd -> (relay socket, client sockaddr/addr)
        inb = mmsg.Batch(64, 2048)
        out = mmsg.Batch(64, 2048, pad=HEADER)
        buf = bytearray(65536)
        bview = memoryview(buf)
        HU, LU, NS = mmsg.HDR_U32, mmsg.LEN_U32, mmsg.NAME_STRIDE
        rxu, orxu, otx = inb.rx_u32, out.rx_u32, out.tx_len
        names, oview, onames = inb.rx_names, out.view, out.tx_names
        iview = inb.view
        recvfrom_into, lsendto = lsock.recvfrom_into, lsock.sendto

        def new_relay(key: Any) -> None:
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            r.bind(("127.0.0.1", 0))
            r.setblocking(False)
            by_key[key] = r
            by_fd[r.fileno()] = (r, key)
            ep.register(r.fileno(), select.EPOLLIN)

        def wake_b() -> None:
            pending = 0
            for fd, _ev in ep.poll(0, 128):
                if fd == lfd:
                    n = inb.recv(lfd, 0, 64)
                    for i in range(n):
                        ln = rxu[i * HU + LU]
                        key = bytes(names[i * NS:i * NS + 16])
                        r = by_key.get(key)
                        if r is None:
                            new_relay(key)
                            continue
                        off = i * 2048
                        cl = iview[off + 2] << 8 | iview[off + 3]
                        if cl + 4 > ln:
                            continue
                        r.sendto(iview[off + 4:off + 4 + cl], peer_addr)
                    continue
                r, key = by_fd[fd]
                if pending == 64:
                    out.send(lfd, pending)
                    pending = 0
                n = out.recv(fd, pending, 64 - pending)
                for j in range(pending, pending + n):
                    ln = orxu[j * HU + LU]
                    off = j * 2048
                    oview[off:off + 4] = b"\x40\x00" + ln.to_bytes(2, "big")
                    onames[j * NS:j * NS + 16] = key
                    otx[2 * j + 1] = ln + 4
                pending += n
            if pending:
                out.send(lfd, pending)

        def wake_c() -> None:
            for fd, _ev in ep.poll(0, 128):
                if fd == lfd:
                    for _ in range(64):
                        try:
                            ln, addr = recvfrom_into(buf)
                        except BlockingIOError:
                            break
                        r = by_key.get(addr)
                        if r is None:
                            new_relay(addr)
                            continue
                        cl = buf[2] << 8 | buf[3]
                        r.sendto(bview[4:4 + cl], peer_addr)
                    continue
                r, addr = by_fd[fd]
                for _ in range(64):
                    try:
                        ln, _a = r.recvfrom_into(bview[4:])
                    except BlockingIOError:
                        break
                    bview[0:4] = b"\x40\x00" + ln.to_bytes(2, "big")
                    lsendto(bview[:4 + ln], addr)

        loop.add_reader(ep.fileno(), wake_b if mode == "b" else wake_c)

    uvloop.run(main())


def drain(socks: list[socket.socket]) -> int:
    """Read every datagram waiting on the non-blocking ``socks``; how many there were."""
    n = 0
    for s in socks:
        while True:
            try:
                s.recv(2048)
            except BlockingIOError:
                break
            n += 1
    return n


def load(listen: int, clients: int, seconds: float) -> tuple[int, int]:
    socks = []
    for _ in range(clients):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.connect(("127.0.0.1", listen))
        s.setblocking(False)
        s.send(b"hello")
        socks.append(s)
    time.sleep(0.5)
    pkt = b"\x40\x00\x00\xac" + os.urandom(172)
    sent = received = 0
    t0 = time.monotonic()
    tick = t0
    while time.monotonic() - t0 < seconds:
        for s in socks:
            s.send(pkt)
        sent += clients
        received += drain(socks)
        tick += 0.001
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    time.sleep(0.3)
    return sent, received + drain(socks)


def user_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK


def measure(mode: str, peer: int, clients: int, seconds: float) -> dict[str, Any]:
    listen = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.turn_forwarders", "--serve", mode,
                             "--listen", str(listen), "--peer", str(peer),
                             "--clients", str(clients)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        cpu0, u0 = cpu_seconds(proc.pid), user_seconds(proc.pid)
        sent, received = load(listen, clients, seconds)
        cpu = cpu_seconds(proc.pid) - cpu0
        user = user_seconds(proc.pid) - u0
    finally:
        proc.terminate()
        proc.wait(10)
    forwarded = sent + received
    return {"mode": mode, "sent": sent, "received": received,
            "loss_pct": round(100 * (sent - received) / sent, 2) if sent else None,
            "cpu_s": round(cpu, 3), "user_share": round(user / cpu, 2) if cpu else None,
            "us_per_packet": round(cpu / forwarded * 1e6, 2) if forwarded else None}


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench turn_forwarders")
    ap.add_argument("--modes", default="a,b,c")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--serve")
    ap.add_argument("--listen", type=int)
    ap.add_argument("--peer", type=int)
    args = ap.parse_args()
    if args.serve:
        forwarder(args.serve, args.listen, args.peer, args.clients)
        return 0
    with echo_peer() as peer:
        for r in range(args.rounds):
            for mode in args.modes.split(","):
                res = measure(mode, peer, args.clients, args.seconds)
                print(f"# round {r + 1} {json.dumps(res)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
