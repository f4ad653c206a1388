"""POST /crashes/report end to end: the original's answers, the per-address limit, the body
cap, storage within count and age, metrics by type, no payload in logs, no HTTP route that
reads reports back, and the operators' ``metadata-relay crashes`` commands."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from typer.testing import CliRunner

from metadata_relay.cli import app as cli
from tests.relay_server import DB_NAME, client, serve_relay, streamed_json
from tests.tools import running_service

URL = "/crashes/report"
MARKER = "crash-payload-marker-7f3a"


def report(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "error_type": "Elixir.RuntimeError", "error_message": f"boom {MARKER}",
        "stacktrace": [{"file": "lib/mydia/x.ex", "line": 12, "function": "run/2"}],
        "version": "1.2.3", "environment": "prod", "occurred_at": "2026-01-01T00:00:00Z",
        "metadata": {"module": "Mydia.X"},
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not None}


async def post(http: aiohttp.ClientSession, base: str, doc: object, **headers: str
               ) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    async with http.post(base + URL, data=json.dumps(doc).encode(),
                         headers={"content-type": "application/json", **headers}) as r:
        return r.status, await r.json(), r.headers


def stored(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        return conn.execute("SELECT error_type, error_message, stacktrace, version, metadata "
                            "FROM crash_reports ORDER BY id").fetchall()


def crashes_cli(db: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["crashes", *args], env={"SQLITE_DB_PATH": str(db)})
    return result


async def test_a_report_is_stored_and_answered_as_the_original(tmp_path):
    async with serve_relay(tmp_path) as base, client() as http:
        status, body, headers = await post(http, base, report())
        assert (status, body) == (201, {"status": "created", "message": "Crash report received"})
        assert headers["x-request-id"]
    (row,) = stored(tmp_path)
    assert row[0] == "Elixir.RuntimeError" and MARKER in row[1] and row[3] == "1.2.3"
    assert json.loads(row[2]) == [{"file": "lib/mydia/x.ex", "line": 12, "function": "run/2"}]
    assert json.loads(row[4]) == {"module": "Mydia.X"}


async def test_bad_reports_get_the_originals_400s(tmp_path):
    async with serve_relay(tmp_path, {"TRUSTED_PROXIES": "10.0.0.0/8"}) as base, \
            client() as http:
        async with http.post(base + URL, data=b"{nope") as r:
            assert r.status == 400
            assert await r.json() == {"error": "Invalid JSON",
                                      "message": "Request body must be valid JSON"}
        status, body, _ = await post(http, base, {"error_message": "x"})
        assert status == 400 and body == {"error": "Validation failed", "errors": [
            "Missing required field: error_type", "Missing required field: stacktrace",
            "stacktrace must be a list"]}
        for bad in ([1], report(error_type=""), report(error_type=7),
                    report(error_message=None), report(stacktrace=[{}] * 501),
                    report(version={"x": 1}), report(metadata=[1]), report(error_type="x" * 201)):
            status, body, _ = await post(http, base, bad)
            assert status == 400, bad
    assert stored(tmp_path) == []


async def test_ten_reports_a_minute_per_address(tmp_path):
    async with serve_relay(tmp_path) as base, client() as http:  # loopback: a trusted proxy
        for _ in range(10):
            assert (await post(http, base, report(), **{"x-forwarded-for": "203.0.113.5"}))[0] \
                == 201
        status, body, headers = await post(http, base, report(),
                                           **{"x-forwarded-for": "203.0.113.5"})
        assert status == 429 and body == {"error": "Too many requests",
                                          "message": "Rate limit exceeded. Please try again "
                                                     "later."}
        assert 1 <= int(headers["retry-after"]) <= 60
        # invalid reports count too: guessing the shape is not free
        status, _, _ = await post(http, base, {}, **{"x-forwarded-for": "203.0.113.5"})
        assert status == 429
        # another address has its own allowance
        assert (await post(http, base, report(), **{"x-forwarded-for": "198.51.100.7"}))[0] \
            == 201
    assert len(stored(tmp_path)) == 11


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path):
    async with serve_relay(tmp_path, {"TRUSTED_PROXIES": "10.0.0.0/8"}) as base, \
            client() as http:
        answers = [(await post(http, base, report(),
                               **{"x-forwarded-for": f"203.0.113.{i}"}))[0] for i in range(11)]
    assert answers == [201] * 10 + [429]  # all from 127.0.0.1, whatever they claim


async def test_the_body_is_capped_while_it_streams(tmp_path):
    async with serve_relay(tmp_path) as base, client() as http:
        head = b'{"error_type": "X", "stacktrace": [], "error_message": "'
        async with http.post(base + URL, data=streamed_json(head, 40)) as r:
            assert r.status == 413
            assert (await r.json())["error"] == "payload_too_large"
        async with http.post(base + URL, data=json.dumps(report(error_message="m" * 40000))
                             ) as r:
            assert r.status == 413
        status, _, _ = await post(http, base, report(error_message="m" * 30000))
        assert status == 201  # under the 32 KiB cap
    assert len(stored(tmp_path)) == 1


async def test_retention_by_count_and_age(tmp_path):
    env = {"CRASH_REPORTS_MAX": "3", "CRASH_REPORTS_MAX_AGE_DAYS": "1"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        for i in range(5):
            assert (await post(http, base, report(error_type=f"T{i}"),
                               **{"x-forwarded-for": f"203.0.113.{i}"}))[0] == 201
        assert [r[0] for r in stored(tmp_path)] == ["T2", "T3", "T4"]
        with sqlite3.connect(tmp_path / DB_NAME) as conn:  # two of them are two days old
            conn.execute("UPDATE crash_reports SET received_at = ? WHERE error_type != 'T4'",
                         (time.time() - 2 * 86400,))
        assert (await post(http, base, report(error_type="T5")))[0] == 201
    assert [r[0] for r in stored(tmp_path)] == ["T4", "T5"]


async def test_no_http_route_reads_reports_back(tmp_path):
    async with serve_relay(tmp_path) as base, client() as http:
        assert (await post(http, base, report()))[0] == 201
        for path in (URL, "/crashes", "/crashes/1", "/crashes/report/1", "/errors",
                     "/errors/1", "/crashes/export", "/crashes?id=1"):
            async with http.get(base + path) as r:
                assert r.status in (404, 405), path
                assert MARKER not in await r.text(), path
        for path in ("/stats", "/metrics", "/health"):
            async with http.get(base + path) as r:
                assert MARKER not in await r.text(), path
        async with http.put(base + URL, data=b"{}") as r:
            assert r.status == 405


async def test_metrics_count_reports_by_type_with_bounded_labels(tmp_path):
    async with serve_relay(tmp_path, {"CRASH_REPORTS_MAX": "100"}) as base, client() as http:
        for i in range(70):
            status, _, _ = await post(http, base, report(error_type=f"Type{i}\n{{x=\"1\"}}"),
                                      **{"x-forwarded-for": f"198.51.100.{i}"})
            assert status == 201
        async with http.get(base + "/metrics") as r:
            text = await r.text()
    labels = [line.split('type="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("relay_crash_reports_total{")]
    assert len(labels) <= 51 and "other" in labels
    assert all(all(c.isalnum() or c in "_.:-" for c in label) for label in labels)


def test_lifecycle_in_the_real_process_and_cli(tmp_path):
    """The service as users run it: the report is stored, nothing of it is logged, and the
    operator's commands (a subprocess, like an operator's shell) read it back."""
    with running_service(tmp_path, {"TURN_ENABLED": "false", "LOG_LEVEL": "debug"}) as svc:
        hostile = report(error_type="Evil[bold red]Type",
                         error_message="line1\x1b]0;pwned\x07\x1b[2J\nline2 " + MARKER)
        req = urllib.request.Request(svc.url + URL, data=json.dumps(hostile).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 201
        try:
            urllib.request.urlopen(svc.url + "/crashes/1", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        db = Path(svc.env["SQLITE_DB_PATH"])
        exe = Path(sys.executable).with_name("metadata-relay")
        env = {**svc.env, "SQLITE_DB_PATH": str(db)}
        listed = subprocess.run([str(exe), "crashes", "list", "--json"], env=env,
                                capture_output=True, text=True, timeout=30, check=True)
        (item,) = json.loads(listed.stdout)
        assert item["error_message"] == hostile["error_message"]
        assert "\x1b" not in listed.stdout  # JSON output is ASCII
        log = svc.log()
    assert MARKER not in log and "Evil" not in log
    assert '"crash_report_stored"' in log

    table = crashes_cli(db, "list")
    assert table.exit_code == 0, table.output
    assert "Evil[bold" in table.output  # shown literally, not as markup
    assert "\x1b" not in table.output and "\x07" not in table.output
    shown = crashes_cli(db, "show", str(item["id"]))
    assert shown.exit_code == 0 and "\\x1b" in shown.output and "\x1b" not in shown.output
    assert "\nline2 " + MARKER in shown.output and "lib/mydia/x.ex" in shown.output
    assert "Evil[bold red]Type" in shown.output
    as_json = crashes_cli(db, "show", str(item["id"]), "--json")
    assert json.loads(as_json.output)["stacktrace"] == hostile["stacktrace"]
    assert crashes_cli(db, "show", "999").exit_code == 1
    out = tmp_path / "export.jsonl"
    exported = crashes_cli(db, "export", "--output", str(out))
    assert exported.exit_code == 0
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["error_type"] == "Evil[bold red]Type"
    assert out.stat().st_mode & 0o777 == 0o600
    assert crashes_cli(tmp_path / "missing.db", "list").exit_code == 1
