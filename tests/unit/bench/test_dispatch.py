"""``python -m bench``: every benchmark is listed with its summary, named by its id, imports,
parses ``--quick`` and is run by name; bench/ uses no private name of uvicorn, websockets or
prometheus_client. No benchmark runs here."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bench import __main__ as dispatcher

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "bench"
# the benchmarks of the contract
EXPECTED = ["p1", "p2", "p3", "p4", "p5", "w1", "w2", "w3", "t1", "t2", "t3", "t4"]
NO_PRIVATE_NAMES_OF = ("uvicorn", "websockets", "prometheus_client")


def test_every_benchmark_is_found_in_the_contract_order() -> None:
    assert list(dispatcher.benchmarks()) == EXPECTED


def test_names_are_ids_and_modules_live_in_an_area() -> None:
    for name, bench in dispatcher.benchmarks().items():
        assert re.fullmatch(r"[pwt]\d+", name)
        assert re.fullmatch(rf"bench\.(metadata|pairing|turn)\.{name}", bench.module)


@pytest.mark.parametrize("name", EXPECTED)
def test_each_benchmark_imports_and_parses_quick(name: str) -> None:
    bench = dispatcher.benchmarks()[name]
    module = importlib.import_module(bench.module)
    assert list(inspect.signature(module.main).parameters) == ["argv"]
    assert bench.summary.startswith(f"{name.upper()}: ")
    args = module.parse_args(["--quick"])
    assert args.quick is True
    assert module.parse_args([]).quick is False


def test_t1_variants_record_under_their_ids() -> None:
    t1 = importlib.import_module("bench.turn.t1")
    assert t1.parse_args(["-t"]).tcp and t1.parse_args(["-s"]).send
    with pytest.raises(SystemExit):
        t1.parse_args(["-t", "-s"])  # one variant at a time


def test_no_arguments_lists_every_benchmark_with_its_summary() -> None:
    out = subprocess.run([sys.executable, "-m", "bench"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for name, bench in dispatcher.benchmarks().items():
        assert re.search(rf"^  {name} +{re.escape(bench.summary)}$", out, re.M)
    assert re.search(r"^  report +Regenerate the status table", out, re.M)


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatcher.main(["p99"]) == 2
    assert "unknown benchmark 'p99'" in capsys.readouterr().err


def test_runs_a_benchmark_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        dispatcher.main(["w3", "--help"])  # argparse's help: the benchmark's own parser ran
    assert exit_info.value.code == 0
    assert "python -m bench w3" in capsys.readouterr().out


def test_report_is_a_command(tmp_path: Path) -> None:
    page = tmp_path / "BENCHMARKS.md"
    page.write_text("no markers\n")
    assert dispatcher.main(["report", "--check", "--file", str(page)]) == 2


def private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
            names = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] in NO_PRIVATE_NAMES_OF and (
                    any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names)):
                found.append(f"{path}:{node.lineno} {module} {names}")
    return found


def test_bench_imports_no_private_name_of_the_libraries_it_drives() -> None:
    assert [hit for path in sorted(BENCH.rglob("*.py")) for hit in private_imports(path)] == []


def test_the_private_import_check_sees_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from uvicorn.protocols.http import _x\nimport websockets._y\n"
                   "from prometheus_client.metrics import _b as b\nimport uvicorn\n"
                   "from websockets.asyncio.server import serve\n")
    assert len(private_imports(bad)) == 3
