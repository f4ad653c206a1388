"""Reference instance for relay protocol 1.1 (README, "Proof of possession"): registers and
proves it holds the private X25519 key of its ``public_key``. Written from the README's
description with ``cryptography`` and ``websockets`` only; the relay's own code is used
nowhere here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from websockets.asyncio.client import ClientConnection

from tests.integration.pairing.helpers import Relay, recv, send

INFO = b"metadata-relay register proof v1"


class ProvenInstance:
    """A mydia-like instance with a Noise static key pair."""

    def __init__(self, instance_id: str, private: X25519PrivateKey | None = None) -> None:
        self.instance_id = instance_id
        self.private = private or X25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key(self) -> str:
        return base64.b64encode(self.public).decode()

    def register_frame(self, **extra: Any) -> dict[str, Any]:
        return {"type": "register", "instance_id": self.instance_id, "public_key": self.key,
                "direct_urls": ["https://192.168.1.20:4000"],
                "protocol_versions": {"relay_protocol": ["1.1", "1.0"]}, **extra}

    def mac(self, challenge: dict[str, Any]) -> str:
        ephemeral = base64.b64decode(challenge["key"])
        nonce = base64.b64decode(challenge["nonce"])
        shared = self.private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=nonce, info=INFO).derive(shared)
        parts = (b"register", self.instance_id.encode(), self.public, ephemeral, nonce)
        transcript = b"".join(struct.pack("!I", len(p)) + p for p in parts)
        return base64.b64encode(hmac.new(key, transcript, hashlib.sha256).digest()).decode()

    async def challenge(self, ws: ClientConnection) -> dict[str, Any]:
        """Send ``register`` offering 1.1; the relay's challenge."""
        await send(ws, self.register_frame())
        challenge = await recv(ws)
        assert challenge["type"] == "challenge" and challenge["relay_protocol"] == "1.1", \
            challenge
        return challenge

    async def register(self, ws: ClientConnection) -> dict[str, Any]:
        """register → challenge → proof; the relay's answer to the proof."""
        challenge = await self.challenge(ws)
        await ws.send(json.dumps({"type": "proof", "mac": self.mac(challenge)}))
        return await recv(ws)

    async def connect(self, relay: Relay, ip: str | None = None) -> ClientConnection:
        ws = await relay.instance(ip=ip)
        answer = await self.register(ws)
        assert answer == {"type": "registered", "relay_protocol": "1.1"}, answer
        return ws
