"""Client socket ``/relay/client/websocket``: a player device."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import Receive, Scope, Send

from metadata_relay.http.edge import client_ip
from metadata_relay.pairing import protocol
from metadata_relay.pairing.outbox import spawn
from metadata_relay.pairing.protocol import dumps
from metadata_relay.pairing.ratelimit import TokenBucket, retry_after_header
from metadata_relay.pairing.service import WS_FRAMES, Redemption
from metadata_relay.pairing.store import Instance
from metadata_relay.pairing.wsbase import RelaySocket, service_of

_RELAYED = WS_FRAMES.labels("client", "relayed")


class ClientSocket(RelaySocket):
    kind = "client"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        limits = self.svc.limits
        self.idle_timeout = limits.client_idle
        self.session_id = protocol.new_session_id()
        self.instance_id: str | None = None
        self.attached = False
        self.left = False
        now = self.loop.time()
        self.inbound = TokenBucket(limits.session_msg_rate, limits.session_msg_burst, now)
        self.outbound = TokenBucket(limits.session_msg_rate, limits.session_msg_burst, now)

    # --- hub callback ---------------------------------------------------------------------

    def deliver_from(self, instance_id: str, text: str) -> bool:
        """A frame from an instance: only the instance this session connected to may send."""
        if instance_id != self.instance_id:
            WS_FRAMES.labels(self.kind, "foreign_instance_rejected").inc()
            return False
        if not self.outbound.take(self.loop.time()):
            WS_FRAMES.labels(self.kind, "outbound_rate_limited").inc()
            return False
        self.last_activity = self.loop.time()
        return self.outbox.push(text)

    # --- frames ---------------------------------------------------------------------------

    def _admit(self) -> bool:
        """Every frame takes a token; a flood closes the socket with 1008."""
        now = self.loop.time()
        if not self.inbound.take(now):
            WS_FRAMES.labels(self.kind, "inbound_rate_limited").inc()
            self.outbox.close(1008, "message rate exceeded")
            return False
        self.last_activity = now
        return True

    def on_text_now(self, text: str) -> bool:
        """Relay frames, pings and malformed frames without awaiting; False (before any side
        effect) for frames that must await (``connect``, ``close``, unknown types)."""
        msg = protocol.parse(text)
        kind = msg["type"] if msg is not None else ""
        if kind == "message" or protocol.is_webrtc(kind):
            iid = self.instance_id
            hub = self.svc.hub
            if iid is not None and hub.remote and iid not in hub.instances:
                return False  # the instance may live on another replica
        elif kind != "ping" and msg is not None:
            return False
        if not self._admit():
            return True
        if msg is None:
            WS_FRAMES.labels(self.kind, "malformed").inc()
        elif kind == "ping":
            self.send_text(protocol.PONG)
        else:
            route = self._relay_frame(kind, msg)
            if route is not None:
                self._relayed(self.svc.hub.to_instance_now(route[0], route[1]))
        return True

    async def on_text(self, text: str) -> None:
        if not self._admit():
            return
        msg = protocol.parse(text)
        if msg is None:
            WS_FRAMES.labels(self.kind, "malformed").inc()
            return
        kind = msg["type"]
        if kind == "message" or protocol.is_webrtc(kind):
            await self._forward(kind, msg)
        elif kind == "ping":
            self.send_text(protocol.PONG)
        elif kind == "connect":
            await self._connect(msg)
        elif kind == "close":
            self.outbox.close(1000, "client closed")
        else:
            WS_FRAMES.labels(self.kind, "unknown_type").inc()

    def _relay_frame(self, kind: str, msg: dict[str, Any]) -> tuple[str, str] | None:
        """(instance id, frame to relay), or None after answering/counting why not."""
        iid = self.instance_id
        if iid is None:
            self.send_text(protocol.NOT_CONNECTED)
            return None
        payload = msg.get("payload")
        if kind == "message":
            if not protocol.b64_payload(payload):
                WS_FRAMES.labels(self.kind, "rejected").inc()
                return None
            out = protocol.relay_message_frame(self.session_id, payload)
        else:
            out = dumps({"type": kind, "session_id": self.session_id, "payload": payload})
        return iid, out

    def _relayed(self, delivered: bool) -> None:
        if delivered:
            _RELAYED.inc()
        else:
            WS_FRAMES.labels(self.kind, "undeliverable").inc()
            self.send_text(protocol.INSTANCE_OFFLINE)

    async def _forward(self, kind: str, msg: dict[str, Any]) -> None:
        route = self._relay_frame(kind, msg)
        if route is not None:
            self._relayed(await self.svc.hub.to_instance(*route))

    async def _connect(self, msg: dict[str, Any]) -> None:
        svc = self.svc
        ip = client_ip(self.scope, svc.settings.TRUSTED_PROXIES)
        redemption: Redemption | None = None
        if "claim_code" in msg:
            wait = await svc.redeem_gate(ip)
            if wait:
                self.send_text(protocol.rate_limited(retry_after_header(wait)))
                return
            redemption = await svc.redeem(msg.get("claim_code"))
            if redemption is None:
                self.send_text(protocol.INVALID_CLAIM)
                return
            inst: Instance | None = redemption.instance
        else:
            iid = protocol.instance_id(msg.get("instance_id"))
            if iid is None:
                self.send_text(protocol.BAD_REQUEST)
                return
            wait = svc.connect_gate(ip)
            if wait:
                self.send_text(protocol.rate_limited(retry_after_header(wait)))
                return
            inst = await svc.directory.get_instance(iid)
            if inst is None:
                self.send_text(protocol.INSTANCE_NOT_FOUND)
                return
        assert inst is not None
        if self.outbox.closing:
            return
        if not await svc.hub.instance_online(inst.instance_id):
            self.send_text(protocol.INSTANCE_OFFLINE)
            return
        previous = self.instance_id
        if previous is not None and previous != inst.instance_id:
            await svc.hub.to_instance(previous, self._session_closed())
        self.instance_id = inst.instance_id
        if not self.attached:
            await svc.hub.attach_session(self)
            self.attached = True
        ice = svc.ice.for_session(self.session_id, time.time())
        connection = dumps({"type": "connection", "session_id": self.session_id,
                            "ice_servers": ice})
        if not await svc.hub.to_instance(inst.instance_id, connection):
            self.instance_id = None
            self.send_text(protocol.INSTANCE_OFFLINE)
            return
        reply: dict[str, Any] = {
            "type": "connected",
            "session_id": self.session_id,
            "instance_id": inst.instance_id,
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
        self.send_text(dumps(reply))

    def _session_closed(self) -> str:
        return dumps({"type": "session_closed", "session_id": self.session_id})

    def _closing(self, code: int) -> None:
        super()._closing(code)
        if code == 1008:
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
            await self.svc.hub.to_instance(self.instance_id, self._session_closed())

    async def on_closed(self) -> None:
        await self._leave()


class ClientSocketApp:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await ClientSocket(service_of(scope), scope, send).run(receive)


client_socket = ClientSocketApp()
