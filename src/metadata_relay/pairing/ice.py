"""ICE servers handed to both ends of a session: one TURN REST credential per session."""

from __future__ import annotations

from typing import Any

from metadata_relay.config import Settings
from metadata_relay.turn.credentials import rest_credential

FALLBACK_STUN = "stun:stun.l.google.com:19302"


class IceServers:
    """Builds ``ice_servers`` lists from the TURN settings (resolved once)."""

    def __init__(self, settings: Settings, turn_secret: str) -> None:
        self._secret = turn_secret
        self._ttl = settings.TURN_CREDENTIAL_TTL
        host = settings.turn_public_ip
        if ":" in host:
            host = f"[{host}]"
        local = f"{host}:{settings.TURN_PORT}"
        self._stun: dict[str, Any] | None = (
            {"urls": f"stun:{local}"} if settings.TURN_ENABLED else None
        )
        self._turn_urls: list[str] | None = None
        if settings.TURN_URI:
            uri = settings.TURN_URI
            tcp = uri if "transport=" in uri else f"{uri}?transport=tcp"
            self._turn_urls = [uri] if tcp == uri else [uri, tcp]
            if self._stun is None:
                scheme, _, rest = uri.partition(":")
                hostport = rest.split("?", 1)[0]
                self._stun = {"urls": f"stun:{hostport}"} if scheme == "turn" else None
        elif settings.TURN_ENABLED:
            self._turn_urls = [f"turn:{local}", f"turn:{local}?transport=tcp"]
        else:
            # No TURN anywhere: only a public STUN server (what mydia falls back to anyway).
            self._stun = {"urls": FALLBACK_STUN}

    def for_session(self, session_id: str, now: float) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = []
        if self._turn_urls:
            username, credential = rest_credential(self._secret, session_id, self._ttl, now)
            servers.append(
                {"urls": list(self._turn_urls), "username": username, "credential": credential}
            )
        if self._stun:
            servers.append(dict(self._stun))
        return servers
