"""Benchmarks (spec/benchmarks.md): ``python -m bench <name> [args]`` runs ``bench/<name>.py``.

Each benchmark module has a ``main(argv: list[str]) -> int`` and a one-line docstring summary;
it starts what it needs on loopback, stops everything it started, prints one line per figure
and writes JSON to ``bench/results/<name>.json``.
"""
