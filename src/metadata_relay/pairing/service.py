"""Pairing operations shared by the REST routes and both sockets: instance identity
(registration), claims (create, redeem under guess limits, consume), node claims of current
mydia (create, look up and delete under the same guess limits), sessions (ICE servers,
relaying through the hub), and the direct-URL enrichment of redemptions.

Sockets and routes parse and answer; this module decides; the store keeps; the hub routes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import Counter
from starlette.types import Scope

from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.http.edge import client_ip
from metadata_relay.observability import REGISTRY, get_logger
from metadata_relay.pairing import protocol
from metadata_relay.pairing.hub import Delivery, InstancePeer, LocalHub
from metadata_relay.pairing.limits import PairingLimits
from metadata_relay.pairing.ratelimit import Counter as RateCounter
from metadata_relay.pairing.ratelimit import Rule, SocketCounts, network
from metadata_relay.pairing.store import Claim, Instance, NodeClaim, PairingStore
from metadata_relay.turn.credentials import rest_credential
from metadata_relay.turn.urls import advertised

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

SSLIP_DEFAULT_PORT = 4000  # mydia's default port, as the original relay used


class Secrets(Protocol):
    """Where the resolved secrets are read at start (``app.Runtime``)."""

    token_secret: str
    turn_secret: str


@dataclass(frozen=True)
class Limited:
    """Refused by a rate limit: retry after ``wait`` seconds."""

    wait: float


@dataclass(frozen=True)
class Busy:
    """Refused because a bound on live state is reached: retry after ``wait`` seconds."""

    wait: float


@dataclass
class Redemption:
    claim: Claim
    instance: Instance
    online: bool
    direct_urls: list[str]


@dataclass(frozen=True)
class Registration:
    """What a socket's ``register`` asks for (fields already validated and repaired)."""

    instance_id: str
    public_key: bytes
    direct_urls: list[str]
    versions: dict[str, Any]
    ip: str
    token: object
    proven: bool  # answered a 1.1 challenge for ``public_key``


def enrich(urls: list[str], public_ip: str | None) -> list[str]:
    """Stored URLs plus ``https://a-b-c-d.sslip.io:<port>`` for a public IPv4 address; the
    port of the first stored URL that names one, else 4000."""
    out = list(urls)
    if not public_ip:
        return out
    try:
        ip = ipaddress.ip_address(public_ip)
    except ValueError:
        return out
    if ip.version != 4 or not ip.is_global:
        return out
    port = SSLIP_DEFAULT_PORT
    for url in urls:
        try:
            given = urlsplit(url).port
        except ValueError:
            continue
        if given is not None:
            port = given
            break
    extra = f"https://{str(ip).replace('.', '-')}.sslip.io:{port}"
    if extra not in out:
        out.append(extra)
    return out


class IceServers:
    """``ice_servers`` lists from the TURN settings (resolved once, ``turn/urls.py``): one TURN
    REST credential per session for the TURN entry, then STUN."""

    def __init__(self, settings: Settings, turn_secret: str) -> None:
        self._secret = turn_secret
        self._ttl = settings.TURN_CREDENTIAL_TTL
        urls = advertised(settings)
        self._turn_urls = urls.turn
        self._stun: dict[str, Any] | None = {"urls": urls.stun} if urls.stun else None

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


class PairingService:
    def __init__(self, settings: Settings, secrets: Secrets, store: PairingStore,
                 hub: LocalHub, counter: RateCounter, limits: PairingLimits,
                 clock: Clock) -> None:
        self.settings = settings
        self.secrets = secrets
        self.store = store
        self.hub = hub
        self.counter = counter
        self.limits = limits
        self.clock = clock
        self.token_secret = ""
        self.ice: IceServers | None = None
        self.sockets = SocketCounts({"instance": limits.instance_sockets_per_ip,
                                     "client": limits.client_sockets_per_ip})
        self.register_rule = Rule("register_ip", limits.register_per_min)
        self.connect_rule = Rule("connect_ip", limits.connect_per_min)
        self.claim_rule = Rule("claims_instance", limits.claims_per_min)
        self.guess_ip = Rule("guess_ip", limits.guesses_per_ip)
        self.guess_net = Rule("guess_net", limits.guesses_per_prefix)
        self.redeem_rule = Rule("redeem_ip", limits.redemptions_per_ip)
        self.node_claim_ip = Rule("node_claims_ip", limits.node_claims_per_ip)
        self.node_claim_net = Rule("node_claims_net", limits.node_claims_per_prefix)
        self.counters: dict[str, int] = {}

    def start(self) -> None:
        """Read the secrets resolved at start-up (before the first request)."""
        self.token_secret = self.secrets.token_secret
        self.ice = IceServers(self.settings, self.secrets.turn_secret)

    def count(self, event: str) -> None:
        self.counters[event] = self.counters.get(event, 0) + 1
        PAIRING_EVENTS.labels(event).inc()

    def client_ip(self, scope: Scope) -> str:
        return client_ip(scope, self.settings.TRUSTED_PROXIES)

    async def gate(self, rule: Rule, key: str, *more: tuple[Rule, str]) -> float:
        """Count one event for ``key`` under ``rule`` (and each further ``(rule, key)``) when
        every one is under its limit; else count nothing and return seconds to wait."""
        now = self.clock.time()
        pairs = ((rule, key), *more)
        wait = await self._over(pairs, now)
        if wait:
            return wait
        for r, k in pairs:
            await self.counter.add(r, k, now)
        return 0.0

    async def _over(self, pairs: tuple[tuple[Rule, str], ...], now: float) -> float:
        for rule, key in pairs:
            wait = await self.counter.over(rule, key, now)
            if wait:
                RATE_LIMITED.labels(rule.name).inc()
                return wait
        return 0.0

    # --- guessing: claim codes and node claims share these budgets ------------------------

    async def guess_allowed(self, ip: str) -> Limited | None:
        """Refused (429) while this address or its network prefix has used its failed
        guesses, or the address its valid redemptions."""
        wait = await self._over(((self.guess_ip, ip), (self.guess_net, network(ip)),
                                 (self.redeem_rule, ip)), self.clock.time())
        return Limited(wait) if wait else None

    async def guessed(self, ip: str, found: bool) -> None:
        """A failed guess counts against both guess limits; a valid code only against the
        separate, generous redemption limit."""
        now = self.clock.time()
        if found:
            await self.counter.add(self.redeem_rule, ip, now)
            return
        await self.counter.add(self.guess_ip, ip, now)
        await self.counter.add(self.guess_net, network(ip), now)

    # --- tokens ---------------------------------------------------------------------------

    def issue_token(self, instance_id: str) -> str:
        return protocol.sign_token(self.token_secret, instance_id, self.clock.time())

    def token_instance(self, token: object) -> str | None:
        if token is None:
            return None
        iid = protocol.verify_token(self.token_secret, token, self.clock.time())
        if iid is None:
            AUTH_FAILURES.labels("instance_token").inc()
        return iid

    # --- instance identity ----------------------------------------------------------------

    async def register_rest(self, instance_id: str, public_key: bytes, direct_urls: list[str],
                            ip: str, token: object) -> str | None:
        """``POST /relay/instances``: a new id, or an existing id with that id's token (a
        public key is public: knowing it never yields a token). The token, or None."""
        existing = await self.store.get_instance(instance_id)
        if existing is None:
            inst = Instance(instance_id, public_key, direct_urls, ip, None, False)
        elif self.token_instance(token) == instance_id:
            inst = Instance(instance_id, public_key, direct_urls, ip, None, existing.online,
                            existing.versions, existing.proven)
        else:
            AUTH_FAILURES.labels("register_without_token").inc()
            return None
        await self.store.save_instance(inst, self.clock.time())
        self.count("register")
        return self.issue_token(instance_id)

    async def register_socket(self, reg: Registration, peer: InstancePeer) -> str | None:
        """A socket's ``register``: None when ``peer`` now serves the instance, else why not
        (``unauthorized``, ``proof_required``, ``in_use``).

        * a known id keeps its key unless its token is presented;
        * an id that once proved possession of its key must prove it again (1.1);
        * without proof or token, a socket that is alive at the application level (it
          keeps sending frames: mydia pings every 30 s) is never displaced from another
          address; from the same address, or once it is silent for the alive window, it is.
        """
        iid = reg.instance_id
        existing = await self.store.get_instance(iid)
        token_ok = reg.token is not None and self.token_instance(reg.token) == iid
        if existing is not None:
            if existing.public_key != reg.public_key and not token_ok:
                AUTH_FAILURES.labels("register_key_mismatch").inc()
                return "unauthorized"
            if existing.proven and not reg.proven:
                AUTH_FAILURES.labels("register_unproven").inc()
                return "proof_required"
        if not (reg.proven or token_ok):
            incumbent = await self.hub.incumbent(iid, self.clock.monotonic())
            if incumbent is not None and incumbent.alive and incumbent.ip != reg.ip:
                AUTH_FAILURES.labels("register_in_use").inc()
                return "in_use"
        proven = reg.proven or (existing is not None and existing.proven)
        inst = Instance(iid, reg.public_key, reg.direct_urls, reg.ip, None, True, reg.versions,
                        proven)
        await self.store.save_instance(inst, self.clock.time())
        await self.hub.attach_instance(iid, peer)
        self.count("register_proven" if reg.proven else "register")
        return None

    async def instance_closed(self, instance_id: str, peer: InstancePeer,
                              replaced: bool) -> None:
        """A registered socket closed: the instance is offline unless a newer socket took
        over."""
        current = await self.hub.detach_instance(instance_id, peer)
        if current and not replaced:
            await self.store.set_offline(instance_id)
            log.info("instance_offline", instance_id=instance_id)

    async def heard(self, instance_id: str) -> None:
        """An app-level ``ping`` from the instance's socket."""
        self.count("heartbeat_recorded")
        await self.hub.instance_alive(instance_id, self.clock.monotonic())
        await self.store.seen(instance_id, self.clock.time())

    async def update_urls(self, instance_id: str, urls: list[str] | None,
                          public_ip: str | None = None) -> str:
        """New direct URLs (None keeps them) from the instance's socket or REST heartbeat."""
        return await self.store.seen(instance_id, self.clock.time(), direct_urls=urls,
                                     public_ip=public_ip)

    # --- claims ---------------------------------------------------------------------------

    async def create_claim(self, instance_id: str, user_id: str,
                           ttl: int) -> Claim | Limited | None:
        wait = await self.gate(self.claim_rule, instance_id)
        if wait:
            return Limited(wait)
        now = self.clock.time()
        for _ in range(8):
            claim = await self.store.create_claim(instance_id, protocol.new_code(), user_id,
                                                  now + ttl, now)
            if claim is not None:
                self.count("claim_created")
                log.info("claim_created", instance_id=instance_id,
                         code=protocol.redacted(claim.code), ttl=ttl)
                return claim
            if await self.store.get_instance(instance_id) is None:
                return None
        return None

    async def redeem(self, ip: str, raw_code: object) -> Redemption | Limited | None:
        """Look a code up without consuming it; None for unknown, expired and consumed alike,
        under the guess limits (:meth:`guess_allowed`, :meth:`guessed`)."""
        limited = await self.guess_allowed(ip)
        if limited:
            return limited
        now = self.clock.time()
        code = protocol.normalise_code(raw_code)
        claim = await self.store.claim_by_code(code) if code else None
        inst = None
        if claim is not None and claim.redeemable(now):
            inst = await self.store.get_instance(claim.instance_id)
        await self.guessed(ip, claim is not None and inst is not None)
        if claim is None or inst is None:
            AUTH_FAILURES.labels("claim_code").inc()
            self.count("redeem_failed")
            return None
        self.count("redeemed")
        online = await self.hub.instance_online(inst.instance_id)
        return Redemption(claim, inst, online, enrich(inst.direct_urls, inst.public_ip))

    async def consume_code(self, instance_id: str, raw_code: object) -> bool:
        code = protocol.normalise_code(raw_code)
        claim = await self.store.claim_by_code(code) if code else None
        if claim is None or claim.instance_id != instance_id:
            return False
        return await self._consume(claim, None)

    async def consume_id(self, instance_id: str, claim_id: str,
                         device_id: str | None) -> bool | None:
        """True consumed; False not this instance's claim; None unknown or already used."""
        claim = await self.store.claim_by_id(claim_id)
        if claim is None or claim.consumed_at is not None:
            return None
        if claim.instance_id != instance_id:
            AUTH_FAILURES.labels("consume_foreign_claim").inc()
            return False
        return True if await self._consume(claim, device_id) else None

    async def _consume(self, claim: Claim, device_id: str | None) -> bool:
        ok = await self.store.consume(claim, device_id, self.clock.time())
        if ok:
            self.count("claim_consumed")
        return ok

    # --- node claims (current mydia: POST/GET/DELETE /pairing/claim) ----------------------

    async def node_claim_allowed(self, ip: str) -> Limited | None:
        """Count one creation for the address and its network prefix; 429 over either."""
        wait = await self.gate(self.node_claim_ip, ip, (self.node_claim_net, network(ip)))
        return Limited(wait) if wait else None

    async def create_node_claim(self, node_addr: str) -> NodeClaim | Busy | None:
        """A fresh code for ``node_addr`` (validated by :func:`protocol.node_addr`), live
        :data:`protocol.NODE_CLAIM_TTL` seconds; Busy while this replica holds its maximum
        of live node claims; None when no free code was drawn (never in practice)."""
        now = self.clock.time()
        if await self.store.live_node_claims(now) >= self.limits.node_claims_live:
            RATE_LIMITED.labels("node_claims_live").inc()
            return Busy(60.0)
        for _ in range(8):
            claim = NodeClaim(protocol.new_code(), node_addr, now + protocol.NODE_CLAIM_TTL)
            if await self.store.create_node_claim(claim, now):
                self.count("node_claim_created")
                log.info("node_claim_created", code=protocol.redacted(claim.code),
                         ttl=protocol.NODE_CLAIM_TTL)
                return claim
        return None

    async def resolve_node_claim(self, ip: str, raw_code: object) -> NodeClaim | Limited | None:
        """The live node claim of a typed code, under the guess limits; None for unknown,
        malformed and expired codes alike."""
        limited = await self.guess_allowed(ip)
        if limited:
            return limited
        claim = await self._live_node_claim(raw_code)
        await self.guessed(ip, claim is not None)
        if claim is None:
            AUTH_FAILURES.labels("node_claim_code").inc()
            self.count("node_claim_lookup_failed")
            return None
        self.count("node_claim_resolved")
        return claim

    async def delete_node_claim(self, ip: str, raw_code: object) -> Limited | None:
        """Delete a node claim (anyone holding the code may, as in the original); counted
        like a lookup, so it is never a cheaper way to guess or to destroy others' codes."""
        limited = await self.guess_allowed(ip)
        if limited:
            return limited
        claim = await self._live_node_claim(raw_code)
        await self.guessed(ip, claim is not None)
        if claim is not None:
            await self.store.delete_node_claim(claim.code)
            self.count("node_claim_deleted")
            log.info("node_claim_deleted", code=protocol.redacted(claim.code))
        return None

    async def _live_node_claim(self, raw_code: object) -> NodeClaim | None:
        code = protocol.normalise_code(raw_code)
        claim = await self.store.node_claim(code) if code else None
        return claim if claim is not None and claim.live(self.clock.time()) else None

    # --- sessions -------------------------------------------------------------------------

    def ice_servers(self, session_id: str) -> list[dict[str, Any]]:
        """TURN credentials for a session that has just connected to an online instance."""
        assert self.ice is not None, "PairingService.start() not called"
        return self.ice.for_session(session_id, self.clock.time())

    def to_session(self, instance_id: str, session_id: str, frame: str) -> Delivery:
        return self.hub.to_session(session_id, instance_id, frame)

    def to_instance(self, instance_id: str, frame: str) -> Delivery:
        return self.hub.to_instance(instance_id, frame)

    def prune(self) -> None:
        self.counter.prune(self.clock.time())
