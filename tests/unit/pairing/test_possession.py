"""Relay protocol 1.1's proof of possession: only the holder of the static private key can
answer a challenge, and each answer fits one challenge, one id, one key."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from metadata_relay.pairing.possession import Challenge, answer, raw_public


def _challenge_msg(c: Challenge) -> dict[str, object]:
    msg = json.loads(c.frame())
    assert msg["type"] == "challenge" and msg["relay_protocol"] == "1.1"
    return dict(msg)


def test_the_key_holder_proves_possession() -> None:
    static = X25519PrivateKey.generate()
    c = Challenge()
    mac = answer(static, "inst", _challenge_msg(c))
    assert mac is not None and c.verify("inst", raw_public(static), mac)


def test_anyone_else_fails() -> None:
    static, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    c = Challenge()
    msg = _challenge_msg(c)
    # another key answering for the instance's public key
    assert not c.verify("inst", raw_public(static), answer(other, "inst", msg))
    good = answer(static, "inst", msg)
    # bound to the id and to the challenge
    assert not c.verify("other-id", raw_public(static), good)
    assert not Challenge().verify("inst", raw_public(static), good)
    for bad in (None, 5, "", "!!", base64.b64encode(b"\0" * 31).decode(),
                base64.b64encode(b"\0" * 32).decode()):
        assert not c.verify("inst", raw_public(static), bad)


def test_low_order_keys_prove_nothing() -> None:
    c = Challenge()
    zero_mac = base64.b64encode(b"\0" * 32).decode()
    assert not c.verify("inst", bytes(32), zero_mac)
    assert not c.verify("inst", b"\x01" + bytes(31), zero_mac)


def test_malformed_challenges_get_no_answer() -> None:
    static = X25519PrivateKey.generate()
    assert answer(static, "i", {"key": "short", "nonce": "x"}) is None
    assert answer(static, "i", {}) is None


@settings(max_examples=20)
@given(st.binary(min_size=32, max_size=32))
def test_random_macs_never_verify(mac: bytes) -> None:
    static = X25519PrivateKey.generate()
    assert not Challenge().verify("inst", raw_public(static), base64.b64encode(mac).decode())
