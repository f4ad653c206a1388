"""The ``metadata-relay`` command: no arguments serves; subcommands for operators."""

from __future__ import annotations

import sys

import typer

from metadata_relay.config import ConfigError, Settings, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="metadata-relay: TMDB/TVDB caching proxy, device pairing relay and STUN/TURN server.",
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
    host = settings.turn_public_ip
    host = f"[{host}]" if ":" in host else host
    uris = [settings.TURN_URI] if settings.TURN_URI else [
        f"turn:{host}:{settings.TURN_PORT}?transport=udp",
        f"turn:{host}:{settings.TURN_PORT}?transport=tcp",
    ]
    typer.echo(json.dumps({"username": username, "password": password, "ttl": lifetime,
                           "realm": settings.TURN_REALM, "uris": uris}))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
