"""T1: TURN relay CPU per relayed packet against coturn, turnutils_uclient -c -n 3000 -m 20.

``turnutils_uclient -c -n 3000 -l 172 -m 20 -z 1`` with ``turnutils_peer`` through each server
(one up at a time, interleaved, median of ``--rounds``). Figures: server CPU-seconds per 100k
relayed packets (utime + stime from /proc/PID/stat) as a ratio ours/coturn, loss %, average
RTT. Variants, recorded under their own ids: ``-t`` (T1-t: TCP client leg) and ``-s``
(T1-s: Send indications instead of channels).
"""

from __future__ import annotations

import argparse

from bench._common import Run, parse, summary
from bench.turn._servers import QUICK, REFERENCE, compare_uclient, uclient_parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = uclient_parser("t1", __doc__, messages=3000)
    variant = p.add_mutually_exclusive_group()
    variant.add_argument("-t", dest="tcp", action="store_true",
                         help="T1-t: TCP between client and server (uclient -t)")
    variant.add_argument("-s", dest="send", action="store_true",
                         help="T1-s: Send/Data indications instead of channels (uclient -s)")
    return parse(p, argv, QUICK)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    suffix = "-t" if args.tcp else "-s" if args.send else ""
    flags = ["-c", "-n", str(args.messages), "-l", "172", "-m", "20", "-z", "1",
             *([suffix] if suffix else [])]
    run = Run(f"T1{suffix}", argv, title=summary(__doc__), reference=REFERENCE,
              quick=args.quick, tools=("coturn",), rounds=args.rounds, uclient_flags=flags)
    result = compare_uclient(run, flags, args.rounds)
    run.ratio("cpu_vs_coturn", result["cpu_ratio"],
              "server CPU per relayed packet ours/coturn, medians of rounds", target="<= 1.0",
              headline=True)
    run.figure("loss", result["ours"]["loss_pct"], "%", "median of rounds", target="== 0",
               headline=True)
    run.write()
    return 0
