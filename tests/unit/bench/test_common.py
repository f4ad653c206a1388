"""The bench kit (bench/_common.py): percentile, targets, /proc readers, ports, the results
writer. No benchmark runs here and no figure is timed."""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bench._common import (
    QUICK_DIR,
    Run,
    check,
    command_line,
    cpu_seconds,
    free_port,
    median,
    open_fds,
    parse,
    parser,
    percentile,
    rss_kb,
    runqueue_wait_seconds,
    shown,
    spec_order,
)
from hypothesis import given
from hypothesis import strategies as st


class TestPercentile:
    def test_nearest_rank(self) -> None:
        values = list(range(1, 1001))  # 1..1000
        assert percentile(values, 99) == 990
        assert percentile(values, 50) == 500
        assert percentile(values, 99.9) == 999
        assert percentile(values, 100) == 1000

    def test_small_samples(self) -> None:
        assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # input order does not matter
        assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # the lower middle, not 2.5
        assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0
        assert percentile([7.0], 99) == 7.0

    def test_p0_is_the_minimum(self) -> None:
        assert percentile([5.0, 2.0, 9.0], 0) == 2.0

    def test_no_values_is_nan(self) -> None:
        assert math.isnan(percentile([], 99))

    @pytest.mark.parametrize("p", [-1, 100.5, 1000])
    def test_outside_0_100_is_refused(self, p: float) -> None:
        with pytest.raises(ValueError, match="outside"):
            percentile([1.0, 2.0], p)

    @given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=200),
           st.floats(min_value=0, max_value=100))
    def test_is_a_measured_value_with_p_percent_at_or_below(self, values: list[float],
                                                           p: float) -> None:
        q = percentile(values, p)
        assert q in values
        at_or_below = sum(v <= q for v in values)
        assert at_or_below >= p / 100 * len(values) - 1e-9
        # and it is the smallest such value
        assert sum(v < q for v in values) < max(p / 100 * len(values), 1)


def test_median() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert math.isnan(median([]))


class TestCheck:
    @pytest.mark.parametrize(("value", "target", "ok"), [
        (0.73, ">= 0.6", True), (0.59, ">= 0.6", False), (9.99, "< 10", True),
        (10.0, "< 10", False), (1, "== 1", True), (2, "== 1", False), (40.0, "<= 40", True),
        (0, "> 0", False),
    ])
    def test_judges(self, value: float, target: str, ok: bool) -> None:
        assert check(value, target) is ok

    def test_nothing_to_judge(self) -> None:
        assert check(None, ">= 1") is None
        assert check(math.nan, ">= 1") is None

    @pytest.mark.parametrize("target", ["~ 1", ">=1", "", ">= x"])
    def test_bad_target_is_refused(self, target: str) -> None:
        with pytest.raises(ValueError):
            check(1.0, target)


def test_shown() -> None:
    assert shown(0.7349, "x") == "0.73\u00d7"
    assert shown(33550.0, "req/s") == "33,550 req/s"
    assert shown(8.714, "ms") == "8.71 ms"
    assert shown(14.84, "ms") == "14.8 ms"
    assert shown(1019.4, "ms") == "1,019 ms"
    assert shown(math.nan, "ms") == "-"
    assert shown("text") == "text"


def test_spec_order() -> None:
    ids = ["t3", "T1-t", "w1", "P2", "T1", "p10", "T1-s", "p1", "T2", "x1"]
    assert sorted(ids, key=spec_order) == ["p1", "P2", "p10", "w1", "T1", "T1-s", "T1-t",
                                           "T2", "t3", "x1"]


def test_command_line_names_the_variant() -> None:
    assert command_line("T1-t", ["-t", "--rounds", "2"]) == "python -m bench t1 -t --rounds 2"
    assert command_line("P1", []) == "python -m bench p1"


class TestProcReaders:
    def test_cpu_seconds_of_a_process_and_its_children(self) -> None:
        child = subprocess.Popen([sys.executable, "-c", "import time\n"
                                  "while True: sum(range(10000))"])
        try:
            own = cpu_seconds(os.getpid())
            with_children = cpu_seconds(os.getpid(), children=True)
            assert own > 0
            assert with_children >= own
            assert cpu_seconds(child.pid) >= 0
        finally:
            child.kill()
            child.wait()

    def test_missing_process_raises(self) -> None:
        with pytest.raises(OSError):
            cpu_seconds(2**22 + 7)  # above pid_max

    def test_memory_fds_and_waits(self) -> None:
        assert rss_kb(os.getpid()) > 1000
        assert open_fds(os.getpid()) >= 3
        assert runqueue_wait_seconds(os.getpid()) >= 0


def test_free_port_is_free_for_tcp_and_udp_with_its_neighbour() -> None:
    port = free_port(count=2)
    for p in (port, port + 1):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", p))


class TestParse:
    def make(self) -> tuple[argparse.ArgumentParser, dict[str, object]]:
        p = parser("x1", "X1: a test benchmark.")
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--seconds", type=float, default=10.0)
        return p, {"rounds": 1, "seconds": 0.5}

    def test_quick_replaces_defaults_but_not_given_options(self) -> None:
        p, quick = self.make()
        assert vars(parse(p, [], quick)) == {"quick": False, "rounds": 3, "seconds": 10.0}
        assert vars(parse(p, ["--quick"], quick)) == {"quick": True, "rounds": 1, "seconds": 0.5}
        assert parse(p, ["--quick", "--rounds", "5"], quick).rounds == 5

    def test_quick_naming_an_unknown_option_is_refused(self) -> None:
        p, _ = self.make()
        with pytest.raises(ValueError, match="roundz"):
            parse(p, [], {"roundz": 1})


class TestRun:
    def test_record(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        run = Run("X1", ["--rounds", "1"], title="X1: a test benchmark.",
                  reference="a reference", results_dir=tmp_path, tools=(), rounds=1)
        run.figure("p99", 8.7, "ms", "median of rounds", target="< 10", headline=True)
        run.figure("errors", 2, target="== 0")
        run.figure("empty", math.nan, "ms")
        run.reference_figure("ref_rps", 1000.0, "req/s")
        run.ratio("vs_ref", 0.73, "median of per-round ratios", target=">= 0.6", headline=True)
        run.detail("rounds", [{"rps": 1.0}])
        path = run.write()

        assert path == tmp_path / "X1.json"
        record = json.loads(path.read_text())  # valid JSON: NaN became null
        assert record["id"] == "X1"
        assert record["title"] == "X1: a test benchmark."
        assert record["reference"] == "a reference"
        assert record["command"] == "python -m bench x1 --rounds 1"
        assert record["quick"] is False
        assert record["date"].endswith("Z")
        assert record["commit"]  # this checkout's
        assert isinstance(record["dirty"], bool)
        assert record["machine"]["nproc"] == os.cpu_count()
        assert record["machine"]["versions"]["python"]
        assert record["config"] == {"rounds": 1}
        assert record["figures"]["p99"] == {"value": 8.7, "unit": "ms", "note": "median of rounds"}
        assert record["figures"]["empty"]["value"] is None
        assert record["reference_figures"]["ref_rps"]["value"] == 1000.0
        assert record["ratios"]["vs_ref"]["unit"] == "x"
        assert record["targets"] == {
            "p99": {"target": "< 10", "value": 8.7, "pass": True},
            "errors": {"target": "== 0", "value": 2, "pass": False},
            "vs_ref": {"target": ">= 0.6", "value": 0.73, "pass": True},
        }
        assert record["headline"] == ["p99", "vs_ref"]
        assert record["details"] == {"rounds": [{"rps": 1.0}]}

        out = capsys.readouterr().out.splitlines()  # one line per figure
        assert "X1 p99: 8.70 ms  [target < 10: pass]  (median of rounds)" in out
        assert "X1 errors: 2  [target == 0: FAIL]" in out
        assert "X1 ratio vs_ref: 0.73\u00d7  [target >= 0.6: pass]  (median of per-round " \
               "ratios)" in out
        assert len(out) == 5

    def test_quick_runs_are_kept_apart(self) -> None:
        assert Run("X1", [], title="", reference="", quick=True).results_dir == QUICK_DIR
