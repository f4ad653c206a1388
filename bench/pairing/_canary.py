"""A CPU canary for the latency benchmarks: ``python -m bench.pairing._canary SECONDS``.

Every millisecond it times one fixed unit of pure-Python work (~0.15 ms) and at the end prints
one JSON line: the median unit and every unit that took more than :data:`STALL` times it, as
``[perf_counter at start, slowdown]``. It needs about a tenth of a core.

Why: on this machine the kernel cannot see every loss of CPU (no steal time is reported and
perf has no hardware counters), yet the whole VM sometimes runs many times slower for tens of
milliseconds. A unit that suddenly takes 10-40x its median, in a process that was runnable and
on a CPU, is that. W1 starts one beside each latency row (``--canary``) so a tail can be told
apart from the relay's own stalls.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

STALL = 8.0


def unit() -> int:
    x = 0
    for i in range(2000):
        x += i * i
    return x


def main(seconds: float) -> None:
    perf = time.perf_counter
    starts: list[float] = []
    took: list[float] = []
    end = perf() + seconds
    while perf() < end:
        a = perf()
        unit()
        starts.append(a)
        took.append(perf() - a)
        time.sleep(0.001)
    median = statistics.median(took) if took else 0.0
    stalls = [[round(s, 6), round(d / median, 1)] for s, d in zip(starts, took, strict=True)
              if median and d > STALL * median]
    print(json.dumps({"units": len(took), "median_us": round(median * 1e6, 1),
                      "stalls": stalls}), flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]))
