"""Pairing operations shared by the REST routes and both sockets: registration with key/token
check, claims (create, redeem with rate limits and failure budget, consume), enrichment."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter

from metadata_relay.config import Settings
from metadata_relay.observability import REGISTRY, get_logger
from metadata_relay.pairing import claims, tokens
from metadata_relay.pairing.directory import Directory
from metadata_relay.pairing.hub import LocalHub
from metadata_relay.pairing.ice import IceServers
from metadata_relay.pairing.limits import PairingLimits
from metadata_relay.pairing.ratelimit import FailureBudget, SharedFailureBudget, SlidingWindow
from metadata_relay.pairing.store import Claim, Instance

log = get_logger("metadata_relay.pairing")

PAIRING_EVENTS = Counter(
    "relay_pairing_events_total", "Pairing events (registrations, claims, redemptions, ...)",
    ["event"], registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "relay_auth_failures_total", "Rejected credentials by kind", ["kind"], registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "relay_rate_limited_total", "Requests refused by a rate limit", ["limit"], registry=REGISTRY,
)
WS_FRAMES = Counter(
    "relay_ws_frames_total", "WebSocket frames by socket kind and outcome",
    ["kind", "outcome"], registry=REGISTRY,
)


class Conflict(Exception):
    """The instance id is registered with another key and no valid token was presented."""


@dataclass
class Redemption:
    claim: Claim
    instance: Instance
    online: bool
    direct_urls: list[str]


def enrich(urls: list[str], public_ip: str | None) -> list[str]:
    """Stored URLs plus ``https://a-b-c-d.sslip.io:<port>`` for a public IPv4 address."""
    out = list(urls)
    if not public_ip:
        return out
    try:
        ip = ipaddress.ip_address(public_ip)
    except ValueError:
        return out
    if ip.version != 4 or not ip.is_global:
        return out
    port = 443
    for url in urls:
        try:
            parts = urlsplit(url)
            port = parts.port or (80 if parts.scheme in ("http", "ws") else 443)
            break
        except ValueError:
            continue
    extra = f"https://{str(ip).replace('.', '-')}.sslip.io:{port}"
    if extra not in out:
        out.append(extra)
    return out


class PairingService:
    def __init__(self, settings: Settings, token_secret: str, turn_secret: str,
                 directory: Directory, hub: LocalHub, limits: PairingLimits) -> None:
        self.settings = settings
        self.token_secret = token_secret
        self.directory = directory
        self.hub = hub
        self.limits = limits
        self.ice = IceServers(settings, turn_secret)
        self.register_limit = SlidingWindow(limits.register_per_min, 60.0)
        self.redeem_limit = SlidingWindow(limits.redeem_per_min, 60.0)
        self.connect_limit = SlidingWindow(limits.connect_per_min, 60.0)
        self.budget = FailureBudget(limits.failure_budget, limits.failure_window,
                                    limits.failure_cooldown)
        self.shared_budget: SharedFailureBudget | None = None
        self.counters: dict[str, int] = {}

    def count(self, event: str) -> None:
        self.counters[event] = self.counters.get(event, 0) + 1
        PAIRING_EVENTS.labels(event).inc()

    # --- tokens ---------------------------------------------------------------------------

    def issue_token(self, instance_id: str) -> str:
        return tokens.sign(self.token_secret, instance_id, time.time())

    def token_instance(self, token: object) -> str | None:
        if not isinstance(token, str):
            return None
        iid = tokens.verify(self.token_secret, token, time.time())
        if iid is None:
            AUTH_FAILURES.labels("instance_token").inc()
        return iid

    # --- registration ---------------------------------------------------------------------

    async def register(self, instance_id: str, public_key: bytes, direct_urls: list[str],
                       public_ip: str | None, token: object, online: bool,
                       versions: dict[str, Any] | None = None) -> Instance:
        existing = await self.directory.get_instance(instance_id)
        if existing is not None and existing.public_key != public_key:
            if token is None or self.token_instance(token) != instance_id:
                AUTH_FAILURES.labels("register_key_mismatch").inc()
                raise Conflict(instance_id)
        inst = Instance(instance_id, public_key, direct_urls, public_ip, None, online,
                        versions if versions is not None else
                        (existing.versions if existing else {}))
        await self.directory.save_instance(inst, time.time())
        self.count("register")
        return inst

    # --- claims ---------------------------------------------------------------------------

    async def create_claim(self, instance_id: str, user_id: str, ttl: int) -> Claim | None:
        expires = time.time() + ttl
        for _ in range(8):
            claim = await self.directory.create_claim(
                instance_id, claims.generate_code(), user_id, expires)
            if claim is not None:
                self.count("claim_created")
                log.info("claim_created", instance_id=instance_id,
                         code=claims.redacted(claim.code), ttl=ttl)
                return claim
            if await self.directory.get_instance(instance_id) is None:
                return None
        return None

    async def redeem_gate(self, ip: str) -> float:
        """Seconds to wait before this IP may attempt a redemption (0.0 = go ahead)."""
        wait = self.redeem_limit.check(ip, time.monotonic())
        if wait:
            RATE_LIMITED.labels("redeem_ip").inc()
            return wait
        if self.shared_budget is not None:
            wait = await self.shared_budget.blocked(time.time())
        else:
            wait = self.budget.blocked(time.time())
        if wait:
            RATE_LIMITED.labels("redeem_budget").inc()
        return wait

    async def redeem(self, raw_code: object) -> Redemption | None:
        """Look a code up (does not consume); None for unknown, expired and consumed alike."""
        code = claims.normalise(raw_code)
        claim = await self.directory.claim_by_code(code) if code else None
        inst = None
        if claim is not None and claim.redeemable(time.time()):
            inst = await self.directory.get_instance(claim.instance_id)
        if claim is None or inst is None:
            if self.shared_budget is not None:
                await self.shared_budget.failure(time.time())
            else:
                self.budget.failure(time.time())
            AUTH_FAILURES.labels("claim_code").inc()
            self.count("redeem_failed")
            return None
        self.count("redeemed")
        online = await self.hub.instance_online(inst.instance_id)
        return Redemption(claim, inst, online, enrich(inst.direct_urls, inst.public_ip))

    async def consume_code(self, instance_id: str, raw_code: object) -> bool:
        code = claims.normalise(raw_code)
        claim = await self.directory.claim_by_code(code) if code else None
        if claim is None or claim.instance_id != instance_id:
            return False
        return await self._consume(claim, None)

    async def consume_id(self, instance_id: str, claim_id: str,
                         device_id: str | None) -> bool | None:
        """True consumed; False not this instance's claim; None unknown or already used."""
        claim = await self.directory.claim_by_id(claim_id)
        if claim is None or claim.consumed_at is not None:
            return None
        if claim.instance_id != instance_id:
            AUTH_FAILURES.labels("consume_foreign_claim").inc()
            return False
        return True if await self._consume(claim, device_id) else None

    async def _consume(self, claim: Claim, device_id: str | None) -> bool:
        ok = await self.directory.consume(claim, device_id, time.time())
        if ok:
            self.count("claim_consumed")
        return ok

    def connect_gate(self, ip: str) -> float:
        wait = self.connect_limit.check(ip, time.monotonic())
        if wait:
            RATE_LIMITED.labels("connect_ip").inc()
        return wait

    def register_gate(self, ip: str) -> float:
        wait = self.register_limit.check(ip, time.monotonic())
        if wait:
            RATE_LIMITED.labels("register_ip").inc()
        return wait

    def prune(self) -> None:
        now = time.monotonic()
        for limiter in (self.register_limit, self.redeem_limit, self.connect_limit):
            limiter.prune(now)
