"""Generic dispatcher: ``python -m bench`` lists the benchmarks, ``python -m bench <name> [args]``
imports ``bench/<name>.py`` and calls its ``main(argv)``."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# modules in bench/ that are helpers, not benchmarks (they have no main(argv))
NOT_BENCHMARKS = frozenset({"__init__", "__main__"})


def benchmark_names() -> list[str]:
    """Every bench/<name>.py whose module defines ``main``, sorted."""
    names = []
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.stem in NOT_BENCHMARKS or path.stem.startswith("_"):
            continue
        if "\ndef main(" in path.read_text(encoding="utf-8"):
            names.append(path.stem)
    return names


def summary(name: str) -> str:
    module = importlib.import_module(f"bench.{name}")
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = benchmark_names()
    if not argv or argv[0] in ("-h", "--help", "list"):
        print("usage: python -m bench <name> [args]   (python -m bench <name> --help)")
        for name in names:
            print(f"  {name:<20} {summary(name)}")
        return 0
    name = argv[0]
    if name not in names:
        print(f"unknown benchmark {name!r}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    if inspect.signature(module.main).parameters:
        return int(module.main(argv[1:]) or 0)
    sys.argv = [f"bench {name}", *argv[1:]]  # main() that parses sys.argv itself
    return int(module.main() or 0)


if __name__ == "__main__":
    sys.exit(main())
