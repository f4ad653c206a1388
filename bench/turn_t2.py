"""T2: TURN stress vs Debian coturn: ``turnutils_uclient -c -n 2000 -l 172 -m 100 -z 1``;
figures: loss % (target: coturn's + 0.5 points) and CPU ratio."""

from __future__ import annotations

import argparse

from bench.turn_harness import compare_uclient


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench turn_t2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default="ours,coturn",
                    help="comma list: ours,python,coturn "
                    "(python: ours with TURN_NATIVE_FORWARDING=false)")
    args = ap.parse_args()
    compare_uclient("turn_t2", ["-c", "-n", "2000", "-l", "172", "-m", "100", "-z", "1"],
                    args.rounds,
                    tuple(args.servers.split(",")))
    return 0
