from __future__ import annotations

import base64
import collections

from hypothesis import given
from hypothesis import strategies as st

from metadata_relay.pairing import claims, tokens


def test_token_roundtrip_and_rejections() -> None:
    t = tokens.sign("k", "inst-1", 1000.0)
    assert tokens.verify("k", t, 1000.0) == "inst-1"
    assert tokens.verify("k", t, 1000.0 + tokens.TOKEN_TTL - 1) == "inst-1"
    assert tokens.verify("k", t, 1000.0 + tokens.TOKEN_TTL) is None  # expired
    assert tokens.verify("other", t, 1000.0) is None  # other secret
    # tampering with the payload breaks the signature
    raw = base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
    evil = raw.replace(b"inst-1", b"inst-2")
    assert tokens.verify("k", base64.urlsafe_b64encode(evil).decode(), 1000.0) is None
    # ids containing dots are fine (split at the last dot)
    t2 = tokens.sign("k", "a.b.c", 5.0)
    assert tokens.verify("k", t2, 6.0) == "a.b.c"


@given(st.text(max_size=300))
def test_token_garbage_never_verifies(garbage: str) -> None:
    assert tokens.verify("k", garbage, 0.0) is None


def test_bearer_header() -> None:
    assert tokens.bearer("Bearer abc") == "abc"
    assert tokens.bearer("bearer  abc ") == "abc"
    assert tokens.bearer("Basic abc") is None
    assert tokens.bearer("Bearer ") is None
    assert tokens.bearer(None) is None


def test_codes_use_alphabet_and_are_uniform() -> None:
    assert len(claims.ALPHABET) == 32 and len(set(claims.ALPHABET)) == 32
    assert not set("IO01") & set(claims.ALPHABET)
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(4000):
        code = claims.generate_code()
        assert len(code) == 8 and set(code) <= set(claims.ALPHABET)
        counts.update(code)
    # 32,000 symbols over 32 letters: each ~1000; a biased generator would be far off
    assert all(800 < n < 1200 for n in counts.values()), counts
    assert len(counts) == 32


def test_normalise() -> None:
    assert claims.normalise("abcd-efgh") == "ABCDEFGH"
    assert claims.normalise(" ab cd\tef-gh ") == "ABCDEFGH"
    assert claims.normalise("ABCDEFG") is None
    assert claims.normalise("ABCDEFGHJ") is None
    assert claims.normalise("ABCDEFG0") is None  # 0 is not in the alphabet
    assert claims.normalise(12345678) is None
    assert claims.normalise("A" * 100) is None
    assert claims.redacted("ABCDEFGH") == "AB…"


@given(st.text(max_size=20))
def test_normalise_only_yields_valid_codes(raw: str) -> None:
    code = claims.normalise(raw)
    assert code is None or (len(code) == 8 and set(code) <= set(claims.ALPHABET))


def test_ttl_bounds() -> None:
    assert claims.clamp_ttl(None) == 300
    assert claims.clamp_ttl(10_000) == 600
    assert claims.clamp_ttl(60) == 60
    for bad in (0, -5, "300", True, [1]):
        assert claims.clamp_ttl(bad) is None
