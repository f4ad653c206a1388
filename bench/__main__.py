"""``python -m bench`` lists the benchmarks with their one-line summaries;
``python -m bench <name> [args]`` runs ``bench/<area>/<name>.py``;
``python -m bench report`` regenerates the status table of BENCHMARKS.md."""

from __future__ import annotations

import ast
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from bench._common import spec_order, summary

BENCH_DIR = Path(__file__).resolve().parent
REPORT = "report"
REPORT_SUMMARY = "Regenerate the status table of BENCHMARKS.md from bench/results/*.json."


@dataclass(frozen=True)
class Benchmark:
    name: str  # the command, the file's name: the spec's id in lower case ("p1", "t1")
    module: str  # "bench.<area>.<name>"
    summary: str  # first line of the module's docstring


def benchmarks() -> dict[str, Benchmark]:
    """Every ``bench/<area>/<name>.py`` whose name does not start with ``_`` and that
    defines ``main``, by name, in the spec's order (P, W, T). Read without importing them, so
    the list shows even when one benchmark's imports are broken."""
    found: dict[str, Benchmark] = {}
    for path in BENCH_DIR.glob("*/*.py"):
        if path.name.startswith("_") or path.parent.name.startswith(("_", ".")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not any(isinstance(node, ast.FunctionDef) and node.name == "main"
                   for node in tree.body):
            continue
        if path.stem in found or path.stem == REPORT:
            raise RuntimeError(f"two benchmarks named {path.stem!r}: names must be unique")
        found[path.stem] = Benchmark(path.stem, f"bench.{path.parent.name}.{path.stem}",
                                     summary(ast.get_docstring(tree)))
    return {name: found[name] for name in sorted(found, key=spec_order)}


def usage() -> str:
    rows = [f"  {b.name:<8} {b.summary}" for b in benchmarks().values()]
    return "\n".join([
        "usage: python -m bench <name> [--quick] [options]   (options: python -m bench <name> -h)",
        "       python -m bench report [--check]",
        "",
        *rows,
        f"  {REPORT:<8} {REPORT_SUMMARY}",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == REPORT:
        from bench import _report

        return _report.main(rest)
    known = benchmarks()
    if name not in known:
        print(f"unknown benchmark {name!r}; known: {', '.join(known)}, {REPORT}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(known[name].module)
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
