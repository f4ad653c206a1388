"""Dispatcher: ``uv run python -m bench <name> [args...]`` imports ``bench.<name>`` and calls
its ``main()`` (which reads ``sys.argv[1:]``). Without a name, lists the benchmarks."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)])
                  if not m.name.startswith("_") and hasattr(
                      importlib.import_module(f"bench.{m.name}"), "main"))


def run() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m bench <name> [args...]\nbenchmarks: " + ", ".join(available()))
        return 0 if len(sys.argv) >= 2 else 2
    name = sys.argv[1]
    if not name.isidentifier():
        print(f"not a benchmark name: {name!r}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError:
        print(f"no benchmark {name!r}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    sys.argv = [f"bench {name}", *sys.argv[2:]]
    result = module.main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(run())
