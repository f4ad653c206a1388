"""``metadata-relay turn-credentials`` prints a credential the running server accepts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aioice.turn

from tests.interop.turn.support import turn_env
from tests.tools import start_service

EXE = str(Path(sys.executable).with_name("metadata-relay"))


def run_cli(env: dict[str, str], *args: str) -> dict[str, object]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TURN_")}
    full.update(env)
    out = subprocess.run([EXE, "turn-credentials", *args], env=full, capture_output=True,
                         text=True, timeout=30, check=True)
    return dict(json.loads(out.stdout))


def test_credential_from_configured_secret(tmp_path: Path) -> None:
    cred = run_cli({"TURN_SECRET": "cli-secret", "SQLITE_DB_PATH": str(tmp_path / "r.db"),
                    "TURN_PUBLIC_IP": "198.51.100.4", "TURN_PORT": "3478"},
                   "--user", "bob", "--ttl", "120")
    username = str(cred["username"])
    expiry, user = username.split(":")
    assert user == "bob" and abs(int(expiry) - (time.time() + 120)) < 10
    expected = base64.b64encode(hmac.new(b"cli-secret", username.encode(), hashlib.sha1)
                                .digest()).decode()
    assert cred["password"] == expected
    assert cred["uris"] == ["turn:198.51.100.4:3478", "turn:198.51.100.4:3478?transport=tcp"]
    assert "cli-secret" not in json.dumps(cred)


def test_uris_are_those_players_get(tmp_path: Path) -> None:
    """The URLs of the TURN entry in ice_servers, in their order: turns: with TURN_TLS_HOST,
    the external server with TURN_URI, none with TURN off."""
    base = {"TURN_SECRET": "cli-secret", "SQLITE_DB_PATH": str(tmp_path / "r.db"),
            "TURN_PUBLIC_IP": "198.51.100.4", "TURN_PORT": "3478"}
    tls = run_cli({**base, "TURN_TLS_HOST": "turn.example.com"})
    assert tls["uris"] == ["turn:198.51.100.4:3478", "turn:198.51.100.4:3478?transport=tcp",
                           "turns:turn.example.com:443?transport=tcp"]
    ext = run_cli({**base, "TURN_URI": "turn:coturn.example:3478"})
    assert ext["uris"] == ["turn:coturn.example:3478", "turn:coturn.example:3478?transport=tcp"]
    assert run_cli({**base, "TURN_ENABLED": "false"})["uris"] == []


def test_credential_from_stored_secret_is_accepted_by_the_server(tmp_path: Path) -> None:
    env = turn_env()
    del env["TURN_SECRET"]  # the service generates and stores one; the CLI must read it
    svc = start_service(tmp_path, env)
    try:
        cred = run_cli({"SQLITE_DB_PATH": svc.env["SQLITE_DB_PATH"]}, "--user", "op")

        async def allocate() -> tuple[str, int]:
            tr, _ = await aioice.turn.create_turn_endpoint(
                asyncio.DatagramProtocol, ("127.0.0.1", int(svc.env["TURN_PORT"])),
                str(cred["username"]), str(cred["password"]))
            try:
                return tuple(tr.get_extra_info("sockname"))  # type: ignore[return-value]
            finally:
                tr.close()

        relay = asyncio.run(asyncio.wait_for(allocate(), 10))
        assert relay[0] == "127.0.0.1"
    finally:
        svc.stop()
