"""Where clients reach TURN and STUN: the ``turn:``/``turns:`` and ``stun:`` URLs (RFC 7064,
7065) that the pairing layer hands out in ``ice_servers`` and ``metadata-relay
turn-credentials`` prints, decided once from the settings.

* The integrated server: ``turn:<TURN_PUBLIC_IP>:<TURN_PORT>`` (UDP, tried first), the same
  with ``?transport=tcp``, then, when ``TURN_TLS_HOST`` is set, ``turns:<TURN_TLS_HOST>:
  <TURN_TLS_PORT>?transport=tcp``: TURN over TLS through the TLS-terminating proxy in front of
  its TCP listener (Traefik on 443, infra/README.md), for networks that allow only HTTPS.
* ``TURN_URI``: that external server (plus its ``?transport=tcp`` form when the URI names no
  transport). ``TURN_TLS_HOST`` describes the integrated server's TLS route only, so the
  settings refuse it beside ``TURN_URI`` (``config.py``).
* Neither: no TURN, and a public STUN server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metadata_relay.config import Settings

FALLBACK_STUN = "stun:stun.l.google.com:19302"


@dataclass(frozen=True)
class Advertised:
    """``turn``: the URLs of the one TURN entry (given with a credential; empty: none);
    ``stun``: the STUN URL, if any."""

    turn: list[str] = field(default_factory=list)
    stun: str | None = None


def advertised(settings: Settings) -> Advertised:
    host = settings.turn_public_ip
    if ":" in host:
        host = f"[{host}]"
    local = f"{host}:{settings.TURN_PORT}"
    stun = f"stun:{local}" if settings.TURN_ENABLED else None
    uri = settings.TURN_URI
    if uri:
        tcp = uri if "transport=" in uri else f"{uri}?transport=tcp"
        if stun is None:
            scheme, _, rest = uri.partition(":")
            stun = f"stun:{rest.split('?', 1)[0]}" if scheme == "turn" else None
        return Advertised([uri] if tcp == uri else [uri, tcp], stun)
    if not settings.TURN_ENABLED:
        return Advertised([], FALLBACK_STUN)
    turn = [f"turn:{local}", f"turn:{local}?transport=tcp"]
    if settings.TURN_TLS_HOST:
        turn.append(f"turns:{settings.TURN_TLS_HOST}:{settings.TURN_TLS_PORT}?transport=tcp")
    return Advertised(turn, stun)
