"""Relay protocol 1.1: proof that a registering instance holds the private key of its
``public_key`` (the X25519 static key of its Noise handshake), sans I/O.

1. The instance sends ``register`` offering ``"1.1"`` in ``protocol_versions.relay_protocol``.
2. The relay answers ``{"type": "challenge", "relay_protocol": "1.1", "key": <base64 of an
   ephemeral X25519 public key E>, "nonce": <base64 of 32 random bytes N>}``.
3. The instance computes ``S = X25519(its static private key, E)``, derives
   ``K = HKDF-SHA256(S, salt=N, info="metadata-relay register proof v1", length=32)`` and
   sends ``{"type": "proof", "mac": base64(HMAC-SHA256(K, transcript))}`` where
   ``transcript`` is the length-prefixed (4-byte big-endian) concatenation of
   ``"register"``, the instance id (UTF-8), its static public key, ``E`` and ``N``.
4. The relay computes the same MAC with its ephemeral private key and the claimed static
   public key and compares in constant time. Only the holder of the static private key can
   produce it; a fresh ephemeral key per challenge makes every proof single use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from metadata_relay.pairing import protocol

INFO = b"metadata-relay register proof v1"
NONCE_BYTES = 32
MAC_BYTES = 32


def _transcript(instance_id: str, static_public: bytes, ephemeral_public: bytes,
                nonce: bytes) -> bytes:
    parts = (b"register", instance_id.encode(), static_public, ephemeral_public, nonce)
    return b"".join(struct.pack("!I", len(p)) + p for p in parts)


def proof_mac(shared: bytes, instance_id: str, static_public: bytes, ephemeral_public: bytes,
              nonce: bytes) -> bytes:
    """The MAC both sides compute from the X25519 shared secret."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=nonce, info=INFO).derive(shared)
    return hmac.new(key, _transcript(instance_id, static_public, ephemeral_public, nonce),
                    hashlib.sha256).digest()


def raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class Challenge:
    """One challenge: an ephemeral X25519 key pair and a nonce, used for one proof."""

    __slots__ = ("_private", "nonce", "public")

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public = raw_public(self._private)
        self.nonce = os.urandom(NONCE_BYTES)

    def frame(self) -> str:
        return protocol.dumps({
            "type": "challenge", "relay_protocol": protocol.PROVEN_PROTOCOL,
            "key": protocol.encode_key(self.public), "nonce": protocol.encode_key(self.nonce),
        })

    def verify(self, instance_id: str, static_public: bytes, mac: object) -> bool:
        """True when ``mac`` (the ``proof`` frame's base64 field) proves possession of the
        private key of ``static_public``."""
        raw = protocol.b64_bytes(mac, MAC_BYTES)
        if raw is None:
            return False
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(static_public))
        except ValueError:
            return False  # a low-order point: the shared secret would not depend on a key
        expected = proof_mac(shared, instance_id, static_public, self.public, self.nonce)
        return hmac.compare_digest(expected, raw)


def answer(static_private: X25519PrivateKey, instance_id: str, challenge: dict[str, object]
           ) -> str | None:
    """The instance's side (a reference for clients): the ``mac`` for a ``challenge``
    frame, or None when the frame is malformed."""
    ephemeral = protocol.b64_bytes(challenge.get("key"), 32)
    nonce = protocol.b64_bytes(challenge.get("nonce"), NONCE_BYTES)
    if ephemeral is None or nonce is None:
        return None
    shared = static_private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
    mac = proof_mac(shared, instance_id, raw_public(static_private), ephemeral, nonce)
    return protocol.encode_key(mac)
