"""W3 stays inside the relay's limits it does not measure: no instance is asked for more
claims in a run than the contract allows it in a minute (10), whatever the run's size. No
benchmark runs here."""

from __future__ import annotations

from collections import Counter

import pytest
from bench.pairing import w3

from metadata_relay.pairing.limits import PairingLimits


def test_the_benchmarks_claim_limit_is_the_relays() -> None:
    assert PairingLimits().claims_per_min == w3.CLAIMS_PER_INSTANCE


@pytest.mark.parametrize("pairings", [1, 20, 50, 999, 1000])
def test_no_instance_claims_more_than_its_limit(pairings: int) -> None:
    insts = [object() for _ in range(w3.instances_for(pairings))]
    pool = w3.Pool(insts)  # type: ignore[arg-type]
    claims = Counter(id(pool.take()) for _ in range(min(pairings, 50) + 2 * pairings))
    assert max(claims.values()) <= w3.CLAIMS_PER_INSTANCE
    assert len(claims) == len(insts)  # and no instance is registered for nothing
