"""Instance socket ``/relay/tunnel/websocket``: a self-hosted mydia server."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import Receive, Scope, Send

from metadata_relay.http.edge import client_ip
from metadata_relay.observability import get_logger
from metadata_relay.pairing import claims, protocol
from metadata_relay.pairing.protocol import dumps
from metadata_relay.pairing.service import AUTH_FAILURES, WS_FRAMES, Conflict
from metadata_relay.pairing.store import iso
from metadata_relay.pairing.wsbase import RelaySocket, service_of

log = get_logger("metadata_relay.pairing.instance_socket")


_RELAYED = WS_FRAMES.labels("instance", "relayed")


class InstanceSocket(RelaySocket):
    kind = "instance"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.idle_timeout = self.svc.limits.instance_heartbeat
        self.instance_id: str | None = None
        self.was_replaced = False

    # --- hub callbacks --------------------------------------------------------------------

    def deliver(self, text: str) -> bool:
        return self.outbox.push(text)

    def replaced(self) -> None:
        """A newer socket registered this instance: close without marking it offline."""
        self.was_replaced = True
        self.outbox.close(1000, "replaced", final=protocol.REPLACED)

    # --- frames ---------------------------------------------------------------------------

    async def on_text(self, text: str) -> None:
        msg = protocol.parse(text)
        if msg is None:
            WS_FRAMES.labels(self.kind, "malformed").inc()
            return
        kind = msg["type"]
        if kind in ("relay_message",) or protocol.is_webrtc(kind):
            await self._forward(kind, msg)
        elif kind == "ping":
            self.touch()
            self.send_text(protocol.PONG)
            if self.instance_id is not None:
                await self.svc.directory.seen(self.instance_id, time.time())
        elif kind == "pong":
            self.touch()
        elif kind == "register":
            await self._register(msg)
        elif kind == "update_urls":
            await self._update_urls(msg)
        elif kind == "create_claim":
            await self._create_claim(msg)
        elif kind == "consume_claim":
            await self._consume_claim(msg)
        else:
            WS_FRAMES.labels(self.kind, "unknown_type").inc()

    async def _register(self, msg: dict[str, Any]) -> None:
        iid = protocol.instance_id(msg.get("instance_id"))
        key = protocol.public_key(msg.get("public_key"))
        urls = protocol.direct_urls(msg.get("direct_urls"), missing=[])
        if iid is None or key is None or urls is None:
            self.send_text(protocol.error("Registration failed", "validation_error"))
            return
        if self.instance_id is not None and iid != self.instance_id:
            self.send_text(protocol.error("Already registered as another instance",
                                          "bad_request"))
            return
        versions = msg.get("protocol_versions")
        if protocol.negotiate(versions) is None:
            self.send_text(protocol.VERSION_INCOMPATIBLE)
            return
        ip = client_ip(self.scope, self.svc.settings.TRUSTED_PROXIES)
        try:
            await self.svc.register(
                iid, key, urls, ip, msg.get("token"), online=True,
                versions=versions if isinstance(versions, dict) else {"relay_protocol": ["1.0"]})
        except Conflict:
            self.send_text(protocol.UNAUTHORIZED)
            return
        if self.outbox.closing:
            return
        self.instance_id = iid
        await self.svc.hub.attach_instance(iid, self)
        self.touch()
        self.send_text(protocol.REGISTERED)

    async def _update_urls(self, msg: dict[str, Any]) -> None:
        urls = protocol.direct_urls(msg.get("direct_urls"))
        if self.instance_id is None or urls is None:
            WS_FRAMES.labels(self.kind, "rejected").inc()
            return
        await self.svc.directory.seen(self.instance_id, time.time(), direct_urls=urls)

    async def _create_claim(self, msg: dict[str, Any]) -> None:
        request_id = msg.get("request_id")
        extra = {"request_id": request_id} if request_id is not None else {}
        if self.instance_id is None:
            self.send_text(protocol.error("Not registered", **extra))
            return
        user = protocol.user_id(msg.get("user_id"))
        ttl = claims.clamp_ttl(msg.get("ttl_seconds"))
        if user is None or ttl is None:
            self.send_text(protocol.error("Invalid user_id or ttl_seconds", "validation_error",
                                          **extra))
            return
        claim = await self.svc.create_claim(self.instance_id, user, ttl)
        if claim is None:
            self.send_text(protocol.error("Failed to create claim", **extra))
            return
        reply: dict[str, Any] = {"type": "claim_created", "code": claim.code,
                                 "expires_at": iso(claim.expires_at)}
        if request_id is not None:
            reply["request_id"] = request_id
        self.send_text(dumps(reply))

    async def _consume_claim(self, msg: dict[str, Any]) -> None:
        if self.instance_id is None:
            self.send_text(protocol.NOT_REGISTERED)
            return
        if not await self.svc.consume_code(self.instance_id, msg.get("claim_code")):
            WS_FRAMES.labels(self.kind, "consume_rejected").inc()

    def _relay_frame(self, kind: str, msg: dict[str, Any]) -> tuple[str, str, str] | None:
        """(instance id, session id, frame to relay), or None after answering/counting why not."""
        iid = self.instance_id
        if iid is None:
            AUTH_FAILURES.labels("unregistered_forward").inc()
            self.send_text(protocol.NOT_REGISTERED)
            return None
        sid = msg.get("session_id")
        payload = msg.get("payload")
        if not isinstance(sid, str) or not protocol.is_session_id(sid):
            WS_FRAMES.labels(self.kind, "rejected").inc()
            return None
        if kind == "relay_message":
            if not protocol.b64_payload(payload):
                WS_FRAMES.labels(self.kind, "rejected").inc()
                return None
            out = protocol.message_frame(payload)
        else:
            out = dumps({"type": kind, "payload": payload})
        return iid, sid, out

    def _relayed(self, delivered: bool, sid: str) -> None:
        if delivered:
            _RELAYED.inc()
        else:
            WS_FRAMES.labels(self.kind, "undeliverable").inc()
            self.send_text(protocol.error("Unknown session", "session_not_found",
                                          session_id=sid))

    async def _forward(self, kind: str, msg: dict[str, Any]) -> None:
        route = self._relay_frame(kind, msg)
        if route is not None:
            iid, sid, out = route
            self._relayed(await self.svc.hub.to_session(sid, iid, out), sid)

    def on_text_now(self, text: str) -> bool:
        """Relay frames and pongs without awaiting; False for anything that must await."""
        msg = protocol.parse(text)
        if msg is None:
            WS_FRAMES.labels(self.kind, "malformed").inc()
            return True
        kind = msg["type"]
        if kind == "pong":
            self.touch()
            return True
        if kind != "relay_message" and not protocol.is_webrtc(kind):
            return False
        hub = self.svc.hub
        sid = msg.get("session_id")
        if hub.remote and isinstance(sid, str) and sid not in hub.sessions:
            return False  # the session may live on another replica
        route = self._relay_frame(kind, msg)
        if route is not None:
            iid, sid, out = route
            self._relayed(hub.to_session_now(sid, iid, out), sid)
        return True

    async def on_closed(self) -> None:
        iid = self.instance_id
        if iid is None:
            return
        current = await self.svc.hub.detach_instance(iid, self)
        if current and not self.was_replaced:
            await self.svc.directory.set_offline(iid)
            log.info("instance_offline", instance_id=iid)


class InstanceSocketApp:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await InstanceSocket(service_of(scope), scope, send).run(receive)


instance_socket = InstanceSocketApp()
