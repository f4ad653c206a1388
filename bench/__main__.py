"""``python -m bench <name> [args...]``: run ``bench.<name>.main()`` (generic dispatcher)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)])
                  if not m.name.startswith("_"))


def run() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in available():
        print(f"usage: python -m bench <name> [args...]; names: {', '.join(available())}")
        sys.exit(2)
    name = sys.argv[1]
    sys.argv = [f"bench {name}", *sys.argv[2:]]
    module = importlib.import_module(f"bench.{name}")
    module.main()


if __name__ == "__main__":
    run()
