"""The benchmark dispatcher lists every bench/<name>.py with a main(), and each imports.

No timing here: the benchmarks themselves run only via ``python -m bench <name>``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import benchmark_names
from bench.__main__ import main as dispatch

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {"p1_cache_hit", "p2_stampede", "p3_misses", "p4_outage", "hit_profile"}


def test_lists_the_proxy_benchmarks() -> None:
    assert EXPECTED <= set(benchmark_names())


def test_helpers_are_not_listed() -> None:
    assert not [n for n in benchmark_names() if n.startswith("_")]


def test_no_arguments_prints_the_list() -> None:
    out = subprocess.run([sys.executable, "-m", "bench"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for name in EXPECTED:
        assert name in out


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatch(["no_such_bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_benchmark_imports_and_has_main(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main)
    assert (module.__doc__ or "").strip(), f"{name} needs a docstring (its summary line)"
