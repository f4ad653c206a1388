"""Cache lifetimes by route (the original's policy), with ±10 % jitter."""

from __future__ import annotations

import random

from metadata_relay.metadata.routes import TtlClass

DAY = 86400
TTL_SECONDS: dict[TtlClass, int] = {
    TtlClass.IMAGES: 90 * DAY,
    TtlClass.TRENDING: 3600,
    TtlClass.SEARCH: 7 * DAY,
    TtlClass.DETAILS: 30 * DAY,
    TtlClass.SEASON: 14 * DAY,
    TtlClass.DEFAULT: 30 * DAY,
}
NOT_FOUND_TTL = 600  # upstream 404s are cached briefly (negative cache)
JITTER = 0.10


def ttl_for(ttl_class: TtlClass, status: int, rng: random.Random | None = None) -> float:
    """Seconds an answer with ``status`` lives, jittered so entries don't expire together."""
    base = NOT_FOUND_TTL if status == 404 else TTL_SECONDS[ttl_class]
    r = (rng or random).uniform(-JITTER, JITTER)
    return base * (1.0 + r)
