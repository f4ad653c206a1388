"""Claim codes: 8 symbols of a 32-letter alphabet (40 bits), CSPRNG, uniform; normalisation."""

from __future__ import annotations

import secrets

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
DEFAULT_TTL = 300
MAX_TTL = 600
RETENTION = 24 * 3600  # expired and consumed claims are deleted this long after


def generate_code() -> str:
    # secrets.choice draws uniformly (rejection sampling); 32**8 = 2**40 codes.
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalise(raw: object) -> str | None:
    """Upper-case, ``-`` and whitespace removed; None unless a well-formed code results."""
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    code = "".join(raw.split()).replace("-", "").upper()
    if len(code) != CODE_LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


def redacted(code: str) -> str:
    """What logs may show of a code: its first two characters."""
    return code[:2] + "…"


def clamp_ttl(raw: object) -> int | None:
    """``ttl_seconds``: default 300, 1..600; None when not a usable integer."""
    if raw is None:
        return DEFAULT_TTL
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    ttl = int(raw)
    if ttl < 1:
        return None
    return min(ttl, MAX_TTL)
