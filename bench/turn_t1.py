"""T1: TURN relay cost vs Debian coturn (spec/benchmarks.md).

``turnutils_uclient -c -n 3000 -l 172 -m 20 -z 1`` through each server (one up at a time,
interleaved, median of ``--rounds``); figure: server CPU-s per 100k relayed packets, ratio."""

from __future__ import annotations

import argparse

from bench.turn_harness import compare_uclient


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench turn_t1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default="ours,coturn",
                    help="comma list: ours,python,coturn "
                    "(python: ours with TURN_NATIVE_FORWARDING=false)")
    ap.add_argument("--extra", default="", help="extra uclient flags, e.g. '-t' or '-s'")
    args = ap.parse_args()
    flags = ["-c", "-n", "3000", "-l", "172", "-m", "20", "-z", "1", *args.extra.split()]
    name = "turn_t1" + args.extra.replace(" ", "").replace("-", "_")
    compare_uclient(name, flags, args.rounds,
                    tuple(args.servers.split(",")))
    return 0
