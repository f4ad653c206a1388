"""The service as users run it: start, /health, bad config, graceful shutdown, kill -9."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.tools import start_service


def get_json(url: str) -> tuple[int, dict[str, object], dict[str, str]]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, json.loads(r.read()), dict(r.headers)


def test_health_contract_and_graceful_sigterm(service) -> None:
    status, body, headers = get_json(f"{service.url}/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["service"] == "metadata-relay"
    assert isinstance(body["version"], str) and body["version"]
    assert headers["cache-control"] == "no-store"
    assert headers["x-request-id"]
    # uvicorn shuts down cleanly, then re-raises the signal it caught (exit -SIGTERM).
    assert service.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    log = service.log()
    assert '"event": "stopped"' in log


def test_generated_secrets_survive_restart(tmp_path: Path) -> None:
    svc = start_service(tmp_path)
    svc.stop()
    db = tmp_path / "data" / "relay.db"
    rows = dict(sqlite3.connect(db).execute("SELECT key, value FROM settings").fetchall())
    assert set(rows) >= {"RELAY_TOKEN_SECRET", "TURN_SECRET"}
    svc = start_service(tmp_path)
    svc.stop()
    again = dict(sqlite3.connect(db).execute("SELECT key, value FROM settings").fetchall())
    assert again == rows
    # secrets never reach the logs
    for value in rows.values():
        assert value not in svc.log()


def test_kill_9_then_reopen_cleanly(tmp_path: Path) -> None:
    svc = start_service(tmp_path)
    svc.stop(signal.SIGKILL)
    svc = start_service(tmp_path)
    status, body, _ = get_json(f"{svc.url}/health")
    assert status == 200 and body["database"] == "ok"
    svc.stop()


def test_bad_config_stops_startup_with_one_line(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("metadata-relay")
    # every variable's validation is covered in tests/unit/test_config.py; here: the CLI path
    cases = {"PORT": "not-a-port", "TURN_ALLOWED_PEERS": "10.0.0.0/33"}
    for var, value in cases.items():
        env = {"PATH": "/usr/bin:/bin", "SQLITE_DB_PATH": str(tmp_path / "x.db"), var: value}
        r = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (var, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, (var, r.stderr)
        assert var in lines[0]
    assert not (tmp_path / "x.db").exists()


def test_help_lists_subcommands() -> None:
    exe = Path(sys.executable).with_name("metadata-relay")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    assert "serve" in r.stdout


def test_health_is_503_degraded_when_the_database_is_unusable(tmp_path: Path) -> None:
    svc = start_service(tmp_path)
    try:
        # Overwrite the database, its WAL and WAL index in place (the same inodes the service
        # holds open and mapped): what it reads next is not a database.
        for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
            with contextlib.suppress(FileNotFoundError), open(tmp_path / "data" / name,
                                                              "r+b") as f:
                f.write(b"\xffgarbage" * 512)
        try:
            urllib.request.urlopen(f"{svc.url}/health", timeout=5)
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as err:
            assert err.code == 503
            body = json.loads(err.read())
            assert body["status"] == "degraded" and body["database"] == "unavailable"
    finally:
        svc.stop(signal.SIGKILL)
