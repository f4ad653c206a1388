"""The ``metadata-relay`` command: no arguments serves; subcommands for operators."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from metadata_relay.config import ConfigError, Settings, load_settings
from metadata_relay.crashes.store import CrashStore

T = TypeVar("T")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="metadata-relay: caching proxy for the metadata APIs mydia calls, device pairing relay "
    "and STUN/TURN server.",
)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@app.callback(invoke_without_command=True)
def _default(ctx: typer.Context) -> None:
    """Without a subcommand: serve."""
    if ctx.invoked_subcommand is None:
        serve()


@app.command()
def serve() -> None:
    """Run the service: HTTP + WebSockets on HOST:PORT, STUN/TURN on TURN_PORT."""
    from metadata_relay.app import create_app
    from metadata_relay.http.server import serve as serve_http
    from metadata_relay.observability import configure_logging

    settings = settings_or_exit()
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    if not serve_http(settings, create_app(settings)):
        sys.exit(1)


@app.command("turn-credentials")
def turn_credentials(
    user: str = typer.Option("operator", "--user", help="User part of the REST username."),
    ttl: int | None = typer.Option(None, "--ttl", min=1,
                                   help="Lifetime in seconds (default TURN_CREDENTIAL_TTL)."),
) -> None:
    """Print a TURN REST credential (JSON) signed with the server's TURN secret."""
    import asyncio
    import json
    import time

    from metadata_relay.storage.sqlite import Database
    from metadata_relay.turn.credentials import rest_credential
    from metadata_relay.turn.urls import advertised

    settings = settings_or_exit()

    async def resolve() -> str:
        db = await Database.open(settings.SQLITE_DB_PATH)
        try:
            return await db.secret("TURN_SECRET", settings.TURN_SECRET)
        finally:
            await db.close()

    secret = asyncio.run(resolve())
    lifetime = ttl if ttl is not None else settings.TURN_CREDENTIAL_TTL
    username, password = rest_credential(secret, user, lifetime, time.time())
    # the URLs players get in ice_servers, in the same order
    uris = advertised(settings).turn
    typer.echo(json.dumps({"username": username, "password": password, "ttl": lifetime,
                           "realm": settings.TURN_REALM, "uris": uris}))


crashes_app = typer.Typer(
    no_args_is_help=True,
    help="Crash reports mydia sent (kept in the database, never served over HTTP).",
)
app.add_typer(crashes_app, name="crashes")


def _with_crash_store(use: Callable[[CrashStore], Awaitable[T]]) -> T:
    """Run ``use`` on the crash reports of the configured database (which must exist)."""
    import asyncio

    from metadata_relay.storage.sqlite import Database

    settings = settings_or_exit()
    if not settings.SQLITE_DB_PATH.exists():
        typer.echo(f"no database at {settings.SQLITE_DB_PATH} (SQLITE_DB_PATH)", err=True)
        raise typer.Exit(1)

    async def run() -> T:
        db = await Database.open(settings.SQLITE_DB_PATH)
        try:
            return await use(CrashStore(db, settings.CRASH_REPORTS_MAX,
                                        settings.CRASH_REPORTS_MAX_AGE_DAYS * 86400))
        finally:
            await db.close()

    return asyncio.run(run())


def _shown(value: object, width: int | None = None) -> Text:
    """Report text for the terminal: never markup, never a control character (a report is
    whatever an anonymous client sent; escape sequences must not reach the operator's
    terminal)."""
    text = "" if value is None else str(value)
    if width is not None:
        text = text.splitlines()[0] if text.splitlines() else ""
        text = text if len(text) <= width else text[:width - 1] + "…"
    return Text("".join(c if c.isprintable() or (c == "\n" and width is None)
                        else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                        for c in text))


def _when(timestamp: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _dumps(doc: object) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=True)  # ASCII: safe on any terminal


@crashes_app.command("list")
def crashes_list(
    limit: int = typer.Option(50, "--limit", min=1, max=100_000, help="Newest N reports."),
    error_type: str | None = typer.Option(None, "--type", help="Only reports of this type."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
) -> None:
    """The newest crash reports, newest first."""
    reports = _with_crash_store(lambda store: store.recent(limit, error_type))
    if as_json:
        typer.echo(_dumps([r.to_json() for r in reports]))
        return
    table = Table(Column("id", no_wrap=True), Column("received (UTC)", no_wrap=True), "type",
                  "message", "version", "bytes", title=f"{len(reports)} crash report(s)")
    for r in reports:
        table.add_row(str(r.id), _when(r.received_at), _shown(r.error_type, 40),
                      _shown(r.error_message, 60), _shown(r.version, 20), str(r.size))
    Console().print(table)


@crashes_app.command("show")
def crashes_show(
    report_id: int = typer.Argument(..., help="The report's id (see `crashes list`)."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text."),
) -> None:
    """One crash report in full."""
    report = _with_crash_store(lambda store: store.get(report_id))
    if report is None:
        typer.echo(f"no crash report {report_id}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(_dumps(report.to_json()))
        return
    console = Console()
    table = Table.grid(padding=(0, 2))
    for name, value in (("id", report.id), ("received", _when(report.received_at)),
                        ("type", report.error_type), ("version", report.version),
                        ("environment", report.environment),
                        ("occurred at", report.occurred_at), ("bytes", report.size)):
        table.add_row(Text(name, style="bold"), _shown(value))
    console.print(table)
    console.print(Text("message", style="bold"))
    console.print(_shown(report.error_message))
    console.print(Text("stacktrace", style="bold"))
    for frame in report.stacktrace:
        console.print(_shown(json.dumps(frame, ensure_ascii=False)))
    console.print(Text("metadata", style="bold"))
    console.print(_shown(json.dumps(report.metadata, ensure_ascii=False)))


@crashes_app.command("export")
def crashes_export(
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write to this file (mode 0600), not stdout.")] = None,
) -> None:
    """Every stored report as JSON lines, oldest first."""
    reports = _with_crash_store(lambda store: store.all())
    lines = "".join(json.dumps(r.to_json(), ensure_ascii=True) + "\n" for r in reports)
    if output is None:
        typer.echo(lines, nl=False)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(lines)
    typer.echo(f"{len(reports)} crash report(s) written to {output}", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
