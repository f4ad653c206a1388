"""Crash reports from mydia: taken over HTTP (``routes.py``), checked (``report.py``), kept in
SQLite within their caps (``store.py``) and read by operators with ``metadata-relay crashes``
(``cli.py``); never served over HTTP."""
