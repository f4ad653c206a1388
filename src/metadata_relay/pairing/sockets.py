"""The two relay sockets: ``/relay/tunnel/websocket`` (an instance: a self-hosted mydia) and
``/relay/client/websocket`` (a session: a player device).

Each socket type has one dispatch table, ``HANDLERS`` (frame type → ``handle_<type>``). A
handler either finishes at once (returns None) or returns an awaitable for the part that
waits on the database or Redis. Frames reach :meth:`RelaySocket.dispatch` from two doors in
arrival order: the synchronous lane of :mod:`metadata_relay.http.websocket` (``DIRECT``),
which offers each frame as it is read, and the ASGI receive loop. While an awaitable is
running, the lane is declined and later frames queue behind it in the ASGI receive queue, so
frames are handled one at a time, in order, each exactly once.

A frame from an instance to a player: ``InstanceSocket.handle_relay_message`` →
``PairingService.to_session`` → ``LocalHub.to_session`` (or Redis) →
``ClientSocket.deliver_from`` → its :class:`Outbox`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from starlette.types import Receive, Scope, Send

from metadata_relay.clock import Timer
from metadata_relay.http.websocket import DIRECT, MAX_MESSAGE_BYTES, DirectChannel
from metadata_relay.observability import WEBSOCKETS_OPEN, get_logger
from metadata_relay.pairing import protocol
from metadata_relay.pairing.hub import Delivery
from metadata_relay.pairing.outbox import Outbox, spawn
from metadata_relay.pairing.possession import Challenge
from metadata_relay.pairing.service import (
    AUTH_FAILURES,
    RATE_LIMITED,
    WS_FRAMES,
    Limited,
    PairingService,
    Redemption,
    Registration,
)
from metadata_relay.pairing.store import Instance, iso
from metadata_relay.ratelimit import TokenBucket, retry_after_header

log = get_logger("metadata_relay.pairing.sockets")

Work = Awaitable[None] | None
Handler = Callable[[Any, dict[str, Any]], Work]

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013
YIELD_AFTER = 16 * 1024


async def settled(delivery: Delivery) -> bool:
    return delivery if isinstance(delivery, bool) else await delivery


class RelaySocket:
    """One accepted WebSocket: the per-IP socket cap, the receive loop and the lane, the
    deadline timer, the bounded outbox and the dispatch of frames to ``HANDLERS``."""

    kind: ClassVar[str] = "socket"
    HANDLERS: ClassVar[dict[str, Handler]] = {}
    WEBRTC = "webrtc_"  # the table's entry for every ``webrtc_<x>`` type

    __slots__ = ("_timer", "clock", "close_code", "direct", "holding", "ip", "last_activity",
                 "opened_at", "outbox", "pending", "svc")

    def __init__(self, svc: PairingService, scope: Scope, send: Send) -> None:
        self.svc = svc
        self.clock = svc.clock
        self.ip = svc.client_ip(scope)
        direct: DirectChannel | None = scope.get("extensions", {}).get(DIRECT)
        self.direct = direct
        self.outbox = Outbox(send, svc.limits.send_queue_bytes, self._closing,
                             direct.write_text if direct is not None else None)
        self.opened_at = self.last_activity = self.clock.monotonic()
        self._timer: Timer | None = None
        self.close_code: int | None = None
        self.pending: asyncio.Task[None] | None = None  # an awaitable handler (lane) runs
        self.holding = False  # the receive loop holds a frame: the lane must not overtake it

    # --- deadline -------------------------------------------------------------------------

    def deadline(self) -> float:
        """Monotonic time at which the socket is closed for silence."""
        raise NotImplementedError

    def _arm(self) -> None:
        delay = self.deadline() - self.clock.monotonic()
        self._timer = self.clock.call_later(max(delay, 0.0), self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        if self.outbox.closing:
            return
        if self.deadline() > self.clock.monotonic():
            self._arm()
            return
        WS_FRAMES.labels(self.kind, "idle_timeout").inc()
        self.outbox.close(CLOSE_NORMAL, "idle timeout")

    def _closing(self, code: int) -> None:
        self.close_code = code
        if code == CLOSE_POLICY:
            WS_FRAMES.labels(self.kind, "closed_1008").inc()

    @property
    def on_direct_lane(self) -> bool:
        return self.direct is not None and self.direct.own_reader

    def send_text(self, text: str) -> bool:
        return self.outbox.push(text)

    def refuse(self, frame: str, code: int = CLOSE_POLICY) -> None:
        """Answer ``frame`` and close: mydia retries only when its socket closes."""
        self.outbox.close(code, "refused", final=frame)

    # --- frames ---------------------------------------------------------------------------

    def admit(self, now: float) -> bool:
        """Every frame passes here first; False drops it (the socket may be closing)."""
        self.last_activity = now
        return True

    def dispatch(self, text: str) -> Work:
        """One text frame to its handler; what remains to await, if anything."""
        if not self.admit(self.clock.monotonic()):
            return None
        msg = protocol.parse(text)
        if msg is None:
            WS_FRAMES.labels(self.kind, "malformed").inc()
            return None
        kind = msg["type"]
        handler = self.HANDLERS.get(kind)
        if handler is None:
            if not protocol.is_webrtc(kind):
                WS_FRAMES.labels(self.kind, "unknown_type").inc()
                return None
            handler = self.HANDLERS[self.WEBRTC]
        return handler(self, msg)

    def _fault(self, exc: Exception) -> None:
        """The one fault barrier: a bug in a handler closes this socket (1011), never the
        server; the log names the exception type and place, never the frame."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        at = f"{tb.tb_frame.f_code.co_name}:{tb.tb_lineno}" if tb is not None else "?"
        log.error("relay_frame_failed", kind=self.kind, error=type(exc).__name__, at=at)
        self.outbox.close(CLOSE_INTERNAL, "internal error")

    def _dispatch_guarded(self, text: str) -> Work:
        try:
            return self.dispatch(text)
        except Exception as exc:
            self._fault(exc)
            return None

    async def _finish(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:
            self._fault(exc)

    async def _finish_pending(self, work: Awaitable[None]) -> None:
        try:
            await self._finish(work)
        finally:
            self.pending = None

    def _offered(self, text: str) -> bool:
        """A frame from the synchronous lane: True when handled (or dropped) here, False to
        let it take the ASGI receive queue (a frame is being handled, or it is large)."""
        if self.holding or self.pending is not None:
            return False
        if self.outbox.closing:
            return True  # the receive loop ignores frames once closing, too
        if len(text) > MAX_MESSAGE_BYTES // 4:
            return False  # rare: let the receive loop apply the size check
        work = self._dispatch_guarded(text)
        if work is not None:
            self.pending = asyncio.get_running_loop().create_task(self._finish_pending(work))
        return True

    def _too_big(self, message: Mapping[str, Any]) -> bool:
        text = message.get("text")
        if text is None:
            return len(message.get("bytes") or b"") > MAX_MESSAGE_BYTES
        # a str of n code points is at most 4n UTF-8 bytes: encode only long ones
        return len(text) > MAX_MESSAGE_BYTES // 4 and len(text.encode()) > MAX_MESSAGE_BYTES

    # --- life cycle -----------------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        sockets = self.svc.sockets
        if not sockets.open(self.kind, self.ip):
            RATE_LIMITED.labels(f"{self.kind}_sockets_ip").inc()
            await self.outbox.send_now({"type": "websocket.close", "code": CLOSE_TRY_LATER})
            return  # refused before the handshake completes: HTTP 403
        try:
            await self.outbox.send_now({"type": "websocket.accept"})
            WEBSOCKETS_OPEN.labels(self.kind).inc()
            try:
                await self._serve(receive)
            finally:
                WEBSOCKETS_OPEN.labels(self.kind).dec()
        finally:
            sockets.close(self.kind, self.ip)

    async def _serve(self, receive: Receive) -> None:
        self._arm()
        try:
            if self.direct is not None:
                self.direct.attach(self._offered)
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message["type"] != "websocket.receive":
                    continue
                text: str | None = message.get("text")
                self.holding = True
                try:
                    if self.pending is not None:
                        await self.pending
                    if self.outbox.closing:
                        continue
                    if self._too_big(message):
                        self.outbox.close(CLOSE_TOO_BIG, "message too big")
                        continue
                    if text is None:
                        WS_FRAMES.labels(self.kind, "binary_ignored").inc()
                        continue
                    work = self._dispatch_guarded(text)
                    if work is not None:
                        await self._finish(work)
                finally:
                    self.holding = False
                if len(text or "") > YIELD_AFTER:
                    # Frames already buffered are returned without suspending: let writers
                    # run, so a burst of large frames is not mistaken for a slow consumer.
                    await asyncio.sleep(0)
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.outbox.closing = True
            if self.pending is not None:
                await self.pending
            await self.closed()

    async def closed(self) -> None:
        return None


# --- instance socket ----------------------------------------------------------------------

_INSTANCE_RELAYED = WS_FRAMES.labels("instance", "relayed")
_REFUSALS = {
    "unauthorized": (protocol.UNAUTHORIZED, CLOSE_POLICY),
    "proof_required": (protocol.PROOF_REQUIRED, CLOSE_POLICY),
    "in_use": (protocol.IN_USE, CLOSE_TRY_LATER),
}


class InstanceSocket(RelaySocket):
    """A self-hosted server. Registers (relay protocol 1.0, or 1.1 with proof of possession),
    creates and consumes claims, and relays frames to its own sessions."""

    kind = "instance"
    __slots__ = ("challenge", "instance_id", "ping_bucket", "proven", "public_key",
                 "urls_bucket", "wanted", "was_replaced")

    def __init__(self, svc: PairingService, scope: Scope, send: Send) -> None:
        super().__init__(svc, scope, send)
        self.instance_id: str | None = None
        self.public_key: bytes | None = None
        self.proven = False
        self.was_replaced = False
        self.challenge: Challenge | None = None
        self.wanted: Registration | None = None  # the register a challenge is out for
        limits = svc.limits
        now = self.opened_at
        self.ping_bucket = TokenBucket(limits.ping_rate, limits.ping_burst, now)
        self.urls_bucket = TokenBucket(limits.update_urls_rate, limits.update_urls_burst, now)

    def deadline(self) -> float:
        limits = self.svc.limits
        end = self.last_activity + limits.instance_heartbeat
        if self.instance_id is None:
            end = min(end, self.opened_at + limits.identify_timeout)
        return end

    # --- hub callbacks (InstancePeer) -----------------------------------------------------

    def alive(self, now: float) -> bool:
        return now - self.last_activity < self.svc.limits.alive_window

    def deliver(self, text: str) -> bool:
        return self.outbox.push(text)

    def replaced(self) -> None:
        """A newer socket registered this instance: close without marking it offline."""
        self.was_replaced = True
        self.outbox.close(CLOSE_NORMAL, "replaced", final=protocol.REPLACED)

    # --- registration ---------------------------------------------------------------------

    def handle_register(self, msg: dict[str, Any]) -> Work:
        iid = protocol.instance_id(msg.get("instance_id"))
        key = protocol.public_key(msg.get("public_key"))
        if iid is None or key is None:
            self.send_text(protocol.REGISTRATION_FAILED)
            return None
        if self.instance_id is not None and iid != self.instance_id:
            self.send_text(protocol.OTHER_INSTANCE)
            return None
        versions = msg.get("protocol_versions")
        version = protocol.negotiate(versions)
        if version is None:
            self.send_text(protocol.VERSION_INCOMPATIBLE)
            return None
        reg = Registration(
            iid, key, self._direct_urls(msg),
            versions if isinstance(versions, dict) else {"relay_protocol": ["1.0"]},
            self.ip, msg.get("token"),
            proven=self.proven and iid == self.instance_id and key == self.public_key)
        if version == protocol.PROVEN_PROTOCOL and not reg.proven:
            self.challenge = Challenge()
            self.wanted = reg
            self.send_text(self.challenge.frame())
            return None
        return self._register(reg, version)

    def handle_proof(self, msg: dict[str, Any]) -> Work:
        challenge, reg = self.challenge, self.wanted
        self.challenge = self.wanted = None
        if challenge is None or reg is None:
            self.send_text(protocol.error("No challenge is open", "bad_request"))
            return None
        if not challenge.verify(reg.instance_id, reg.public_key, msg.get("mac")):
            AUTH_FAILURES.labels("proof_failed").inc()
            self.refuse(protocol.PROOF_FAILED)
            return None
        return self._register(Registration(reg.instance_id, reg.public_key, reg.direct_urls,
                                           reg.versions, reg.ip, reg.token, proven=True),
                              protocol.PROVEN_PROTOCOL)

    async def _register(self, reg: Registration, version: str) -> None:
        refusal = await self.svc.register_socket(reg, self)
        if refusal is not None:
            frame, code = _REFUSALS[refusal]
            self.refuse(frame, code)
            return
        self.instance_id = reg.instance_id
        self.public_key = reg.public_key
        self.proven = reg.proven
        self.send_text(protocol.registered(version))

    def _direct_urls(self, msg: dict[str, Any]) -> list[str]:
        urls, dropped = protocol.direct_urls(msg.get("direct_urls"))
        if dropped:
            WS_FRAMES.labels(self.kind, "direct_urls_dropped").inc(dropped)
            log.info("direct_urls_dropped", dropped=dropped, kept=len(urls))
        return urls

    def _limited(self, bucket: TokenBucket, name: str, **extra: Any) -> bool:
        """True (after answering ``rate_limited``) when ``bucket`` is empty."""
        if bucket.spend(self.clock.monotonic()):
            return False
        RATE_LIMITED.labels(name).inc()
        self.send_text(protocol.rate_limited(retry_after_header(bucket.wait()), **extra))
        return True

    # --- heartbeat and URLs ---------------------------------------------------------------

    def handle_ping(self, msg: dict[str, Any]) -> Work:
        """Always answered; recorded (database, Redis) at most at the ping rate, so a ping
        flood costs no writes."""
        self.send_text(protocol.PONG)
        if self.instance_id is None:
            return None
        if not self.ping_bucket.spend(self.clock.monotonic()):
            RATE_LIMITED.labels("instance_ping").inc()
            return None
        return self.svc.heard(self.instance_id)

    def handle_pong(self, msg: dict[str, Any]) -> Work:
        return None  # admit() already counted it as a sign of life

    def handle_update_urls(self, msg: dict[str, Any]) -> Work:
        if self.instance_id is None:
            self.send_text(protocol.NOT_REGISTERED)
            return None
        if self._limited(self.urls_bucket, "instance_update_urls"):
            return None
        return self._update_urls(self.instance_id, self._direct_urls(msg))

    async def _update_urls(self, instance_id: str, urls: list[str]) -> None:
        await self.svc.update_urls(instance_id, urls)

    # --- claims ---------------------------------------------------------------------------

    async def handle_create_claim(self, msg: dict[str, Any]) -> None:
        request_id = msg.get("request_id")
        extra = {"request_id": request_id} if request_id is not None else {}
        if self.instance_id is None:
            self.send_text(protocol.error("Not registered", **extra))
            return
        user = protocol.user_id(msg.get("user_id"))
        ttl = protocol.claim_ttl(msg.get("ttl_seconds"))
        if user is None or ttl is None:
            self.send_text(protocol.error("Invalid user_id or ttl_seconds", "validation_error",
                                          **extra))
            return
        claim = await self.svc.create_claim(self.instance_id, user, ttl)
        if isinstance(claim, Limited):
            self.send_text(protocol.rate_limited(retry_after_header(claim.wait), **extra))
            return
        if claim is None:
            self.send_text(protocol.error(protocol.CLAIM_FAILED, **extra))
            return
        self.send_text(protocol.dumps({"type": "claim_created", "code": claim.code,
                                       "expires_at": iso(claim.expires_at), **extra}))

    async def handle_consume_claim(self, msg: dict[str, Any]) -> None:
        if self.instance_id is None:
            self.send_text(protocol.NOT_REGISTERED)
            return
        if not await self.svc.consume_code(self.instance_id, msg.get("claim_code")):
            WS_FRAMES.labels(self.kind, "consume_rejected").inc()

    # --- relaying to sessions -------------------------------------------------------------

    def handle_relay_message(self, msg: dict[str, Any]) -> Work:
        iid = self.instance_id
        if iid is None:
            AUTH_FAILURES.labels("unregistered_forward").inc()
            self.send_text(protocol.NOT_REGISTERED)
            return None
        sid = msg.get("session_id")
        payload = msg.get("payload")
        if not protocol.is_session_id(sid):
            WS_FRAMES.labels(self.kind, "rejected").inc()
            return None
        if msg["type"] == "relay_message":
            if not protocol.b64_payload(payload):
                WS_FRAMES.labels(self.kind, "rejected").inc()
                return None
            frame = protocol.message_frame(payload)
        else:
            frame = protocol.signalling_frame(msg["type"], payload)
        delivery = self.svc.to_session(iid, sid, frame)
        if isinstance(delivery, bool):
            self._relayed(delivery, sid)
            return None
        return self._relayed_later(delivery, sid)

    def _relayed(self, delivered: bool, sid: str) -> None:
        if delivered:
            _INSTANCE_RELAYED.inc()
        else:
            WS_FRAMES.labels(self.kind, "undeliverable").inc()
            self.send_text(protocol.error("Unknown session", "session_not_found",
                                          session_id=sid))

    async def _relayed_later(self, delivery: Awaitable[bool], sid: str) -> None:
        self._relayed(await delivery, sid)

    HANDLERS: ClassVar[dict[str, Handler]] = {
        "register": handle_register,
        "proof": handle_proof,
        "ping": handle_ping,
        "pong": handle_pong,
        "update_urls": handle_update_urls,
        "create_claim": handle_create_claim,
        "consume_claim": handle_consume_claim,
        "relay_message": handle_relay_message,
        RelaySocket.WEBRTC: handle_relay_message,
    }

    async def closed(self) -> None:
        if self.instance_id is not None:
            await self.svc.instance_closed(self.instance_id, self, self.was_replaced)


# --- client socket ------------------------------------------------------------------------

_CLIENT_RELAYED = WS_FRAMES.labels("client", "relayed")


class ClientSocket(RelaySocket):
    """A player device: connects to an instance (by id or claim code) and relays frames to
    it. Idle sockets stay small: two token buckets and the outbox."""

    kind = "client"
    __slots__ = ("attached", "inbound", "instance_id", "left", "outbound", "session_id")

    def __init__(self, svc: PairingService, scope: Scope, send: Send) -> None:
        super().__init__(svc, scope, send)
        limits = svc.limits
        self.session_id = protocol.new_session_id()
        self.instance_id: str | None = None
        self.attached = False
        self.left = False
        now = self.opened_at
        self.inbound = TokenBucket(limits.session_msg_rate, limits.session_msg_burst, now)
        self.outbound = TokenBucket(limits.session_msg_rate, limits.session_msg_burst, now)

    def deadline(self) -> float:
        limits = self.svc.limits
        end = self.last_activity + limits.client_idle
        if self.instance_id is None:
            end = min(end, self.opened_at + limits.identify_timeout)
        return end

    def admit(self, now: float) -> bool:
        """Every frame takes a token; a flood closes the socket with 1008."""
        if not self.inbound.spend(now):
            WS_FRAMES.labels(self.kind, "inbound_rate_limited").inc()
            self.outbox.close(CLOSE_POLICY, "message rate exceeded")
            return False
        self.last_activity = now
        return True

    # --- hub callback (SessionPeer) -------------------------------------------------------

    def deliver_from(self, instance_id: str, text: str) -> bool:
        """A frame from an instance: only the instance this session connected to may send."""
        if instance_id != self.instance_id:
            WS_FRAMES.labels(self.kind, "foreign_instance_rejected").inc()
            return False
        now = self.clock.monotonic()
        if not self.outbound.spend(now):
            WS_FRAMES.labels(self.kind, "outbound_rate_limited").inc()
            return False
        self.last_activity = now
        return self.outbox.push(text)

    # --- frames ---------------------------------------------------------------------------

    def handle_ping(self, msg: dict[str, Any]) -> Work:
        self.send_text(protocol.PONG)
        return None

    def handle_close(self, msg: dict[str, Any]) -> Work:
        self.outbox.close(CLOSE_NORMAL, "client closed")
        return None

    def handle_message(self, msg: dict[str, Any]) -> Work:
        iid = self.instance_id
        if iid is None:
            self.send_text(protocol.NOT_CONNECTED)
            return None
        payload = msg.get("payload")
        if msg["type"] == "message":
            if not protocol.b64_payload(payload):
                WS_FRAMES.labels(self.kind, "rejected").inc()
                return None
            frame = protocol.relay_message_frame(self.session_id, payload)
        else:
            frame = protocol.signalling_frame(msg["type"], payload, self.session_id)
        delivery = self.svc.to_instance(iid, frame)
        if isinstance(delivery, bool):
            self._relayed(delivery)
            return None
        return self._relayed_later(delivery)

    def _relayed(self, delivered: bool) -> None:
        if delivered:
            _CLIENT_RELAYED.inc()
        else:
            WS_FRAMES.labels(self.kind, "undeliverable").inc()
            self.send_text(protocol.INSTANCE_OFFLINE)

    async def _relayed_later(self, delivery: Awaitable[bool]) -> None:
        self._relayed(await delivery)

    async def handle_connect(self, msg: dict[str, Any]) -> None:
        svc = self.svc
        redemption: Redemption | None = None
        inst: Instance | None
        if "claim_code" in msg:
            found = await svc.redeem(self.ip, msg.get("claim_code"))
            if isinstance(found, Limited):
                self.send_text(protocol.rate_limited(retry_after_header(found.wait)))
                return
            if found is None:
                self.send_text(protocol.INVALID_CLAIM)
                return
            redemption = found
            inst = found.instance
        else:
            iid = protocol.instance_id(msg.get("instance_id"))
            if iid is None:
                self.send_text(protocol.BAD_REQUEST)
                return
            wait = await svc.gate(svc.connect_rule, self.ip)
            if wait:
                self.send_text(protocol.rate_limited(retry_after_header(wait)))
                return
            inst = await svc.store.get_instance(iid)
            if inst is None:
                self.send_text(protocol.INSTANCE_NOT_FOUND)
                return
        if self.outbox.closing:
            return
        await self._connect(inst, redemption)

    async def _connect(self, inst: Instance, redemption: Redemption | None) -> None:
        svc = self.svc
        iid = inst.instance_id
        if not await svc.hub.instance_online(iid):
            self.send_text(protocol.INSTANCE_OFFLINE)
            return
        previous = self.instance_id
        if previous is not None and previous != iid:
            await settled(svc.to_instance(previous, self._session_closed()))
        self.instance_id = iid
        if not self.attached:
            await svc.hub.attach_session(self)
            self.attached = True
        # TURN credentials: only now, for a session of an online instance
        ice = svc.ice_servers(self.session_id)
        connection = protocol.dumps({"type": "connection", "session_id": self.session_id,
                                     "ice_servers": ice})
        if not await settled(svc.to_instance(iid, connection)):
            self.instance_id = None
            self.send_text(protocol.INSTANCE_OFFLINE)
            return
        reply: dict[str, Any] = {
            "type": "connected",
            "session_id": self.session_id,
            "instance_id": iid,
            # the player reads it as a String (relay_tunnel_service.dart); a paired device
            # has it already, and a public key authorises nothing here (README, Threat model)
            "public_key": protocol.encode_key(inst.public_key),
            "direct_urls": redemption.direct_urls if redemption else inst.direct_urls,
            "relay_protocol": protocol.RELAY_PROTOCOL,
            "instance_versions": inst.versions or {"relay_protocol": ["1.0"]},
            "ice_servers": ice,
        }
        if redemption is not None:
            reply["claim_id"] = redemption.claim.claim_id
            reply["user_id"] = redemption.claim.user_id
        svc.count("session_connected")
        self.send_text(protocol.dumps(reply))

    HANDLERS: ClassVar[dict[str, Handler]] = {
        "connect": handle_connect,
        "message": handle_message,
        RelaySocket.WEBRTC: handle_message,
        "ping": handle_ping,
        "close": handle_close,
    }

    def _session_closed(self) -> str:
        return protocol.session_frame("session_closed", self.session_id)

    def _closing(self, code: int) -> None:
        super()._closing(code)
        if code == CLOSE_POLICY:
            # Closed for policy (slow consumer, flood): the session ends now, not when the
            # peer finally completes the closing handshake.
            spawn(self._leave())

    async def _leave(self) -> None:
        if self.left:
            return
        self.left = True
        if self.attached:
            await self.svc.hub.detach_session(self)
        if self.instance_id is not None:
            await settled(self.svc.to_instance(self.instance_id, self._session_closed()))

    async def closed(self) -> None:
        await self._leave()


class SocketEndpoint:
    """The ASGI app of one socket type, given the service at construction."""

    def __init__(self, socket: type[RelaySocket], svc: PairingService) -> None:
        self.socket = socket
        self.svc = svc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.socket(self.svc, scope, send).run(receive)
