"""Benchmarks: ``python -m bench`` lists them, ``python -m bench <id> [args]`` runs
``bench/<area>/<id>.py``, ``python -m bench report`` regenerates the status table of
BENCHMARKS.md. The kit and how to add a benchmark: bench/README.md."""
