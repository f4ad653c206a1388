"""Same-process A/B of the TURN C forwarder: the T1 load against one in-process TurnComponent,
``native_forwarding`` on and off interleaved; CPU per relayed packet from ``getrusage``.

Why in one process: the switch is the only difference (same interpreter, same loop, same
allocation code), so the ratio isolates what the C forwarder saves."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import statistics
from typing import Any

from bench.turn_harness import SECRET, echo_peer, free_port, machine, relay_range, tool, write
from metadata_relay.config import load_settings
from metadata_relay.turn.component import TurnComponent

FLAGS = ["-c", "-n", "3000", "-l", "172", "-m", "20", "-z", "1"]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one(native: bool, peer: int, user: str) -> dict[str, Any]:
    low, high = relay_range(1000)
    port = free_port()
    settings = load_settings({
        "TURN_LISTEN_IP": "127.0.0.1", "TURN_PUBLIC_IP": "127.0.0.1", "TURN_PORT": str(port),
        "TURN_MIN_PORT": str(low), "TURN_MAX_PORT": str(high),
        "TURN_ALLOWED_PEERS": "127.0.0.0/8", "TURN_USER_QUOTA": "100000", "TURN_MAX_RATE": "0"})
    comp = TurnComponent(settings, (SECRET,), native_forwarding=native)
    await comp.start()
    try:
        await asyncio.sleep(0.3)
        cmd = [tool("turnutils_uclient"), *FLAGS, "-W", SECRET, "-u", user, "-e", "127.0.0.1",
               "-r", str(peer), "-p", str(port), "127.0.0.1"]
        c0 = cpu()
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        used = cpu() - c0
    finally:
        await comp.stop()
    text = out.decode(errors="replace")
    totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", text)
    lost = re.findall(r"Total lost packets (\d+) \(([\d.]+)%\)", text)
    relayed = int(totals[-1][0]) + int(totals[-1][1]) if totals else 0
    return {"native": native, "exit": proc.returncode, "relayed": relayed,
            "loss_pct": float(lost[-1][1]) if lost else 100.0,
            "us_per_packet": round(used / relayed * 1e6, 2) if relayed else None}


async def run(rounds: int, peer: int) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {"native": [], "python": []}
    for i in range(rounds):
        for native in (True, False):
            for attempt in range(3):  # uclient 4.6.1 sometimes exits 255 (see turn_harness)
                r = await one(native, peer, f"ab{i}{int(native)}{attempt}")
                if r["exit"] == 0 and r["relayed"]:
                    break
            runs["native" if native else "python"].append(r)
            print(f"# round {i + 1}: {json.dumps(r)}", flush=True)
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench turn_native_ab")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    try:
        import uvloop  # the service's loop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with echo_peer() as peer:
        runs = runner(run(args.rounds, peer))
    med = {k: statistics.median(r["us_per_packet"] for r in rs if r["us_per_packet"])
           for k, rs in runs.items()}
    result = {"benchmark": "turn_native_ab", "flags": FLAGS, "rounds": args.rounds,
              "machine": machine(), "median_us_per_packet": med,
              "ratio_native_over_python": round(med["native"] / med["python"], 3), "runs": runs}
    path = write("turn_native_ab", result)
    for k, v in med.items():
        print(f"turn_native_ab {k} us_per_packet {v}")
    print(f"turn_native_ab ratio_native_over_python {result['ratio_native_over_python']}")
    print(f"# written {path}")
    return 0
