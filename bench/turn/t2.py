"""T2: TURN stress against coturn, turnutils_uclient -c -n 2000 -m 100: loss and CPU ratio.

``turnutils_uclient -c -n 2000 -l 172 -m 100 -z 1`` through each server, as T1 (one up at a
time, interleaved, median of ``--rounds``). Figures: loss % (no worse than coturn's + 0.5
points) and the CPU ratio ours/coturn.
"""

from __future__ import annotations

import argparse

from bench._common import Run, parse, summary
from bench.turn._servers import QUICK, REFERENCE, compare_uclient, uclient_parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    return parse(uclient_parser("t2", __doc__, messages=2000), argv, QUICK)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    flags = ["-c", "-n", str(args.messages), "-l", "172", "-m", "100", "-z", "1"]
    run = Run("T2", argv, title=summary(__doc__), reference=REFERENCE, quick=args.quick,
              tools=("coturn",), rounds=args.rounds, uclient_flags=flags)
    result = compare_uclient(run, flags, args.rounds)
    loss, coturn_loss = result["ours"]["loss_pct"], result["coturn"]["loss_pct"]
    run.figure("loss", loss, "%", "median of rounds", headline=True)
    run.figure("loss_over_coturn", loss - coturn_loss, "points", "median loss minus coturn's",
               target="<= 0.5", headline=True)
    run.ratio("cpu_vs_coturn", result["cpu_ratio"],
              "server CPU per relayed packet ours/coturn, medians of rounds", headline=True)
    run.write()
    return 0
