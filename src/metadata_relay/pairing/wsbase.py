"""What both relay sockets share: raw-ASGI accept/receive loop, inactivity deadline (one
timer handle, re-armed lazily), bounded outbox, open-socket gauge."""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from metadata_relay.observability import WEBSOCKETS_OPEN
from metadata_relay.pairing.outbox import Outbox
from metadata_relay.pairing.service import WS_FRAMES, PairingService

YIELD_AFTER = 16 * 1024
# Spec limit on an incoming frame. uvicorn (ws_max_size) closes with 1009 before buffering;
# granian has no such option, so the app enforces it too (after granian buffered the frame).
MAX_MESSAGE_BYTES = 64 * 1024
CLOSE_TOO_BIG = 1009


def service_of(scope: Scope) -> PairingService:
    svc: PairingService = scope["app"].state.runtime.components["pairing"].service
    return svc


class RelaySocket:
    """One accepted WebSocket. Subclasses implement :meth:`on_text` and :meth:`on_closed`."""

    kind = "socket"
    idle_timeout = 60.0

    def __init__(self, svc: PairingService, scope: Scope, send: Send) -> None:
        self.svc = svc
        self.scope = scope
        self.outbox = Outbox(send, svc.limits.send_queue_bytes, self._closing)
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self.close_code: int | None = None

    # --- inactivity -----------------------------------------------------------------------

    def touch(self) -> None:
        self.last_activity = self.loop.time()

    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        left = self.last_activity + self.idle_timeout - self.loop.time()
        if left > 0:
            self._arm(left)
            return
        self._timer = None
        WS_FRAMES.labels(self.kind, "idle_timeout").inc()
        self.outbox.close(1000, "idle timeout")

    def _closing(self, code: int) -> None:
        self.close_code = code
        if code == 1008:
            WS_FRAMES.labels(self.kind, "closed_1008").inc()

    def send_text(self, text: str) -> bool:
        return self.outbox.push(text)

    # --- loop -----------------------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        await self.outbox.send_now({"type": "websocket.accept"})
        WEBSOCKETS_OPEN.labels(self.kind).inc()
        self._arm(self.idle_timeout)
        try:
            await self.opened()
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    break
                if kind != "websocket.receive" or self.outbox.closing:
                    continue
                text = message.get("text")
                if text is None:
                    if len(message.get("bytes") or b"") > MAX_MESSAGE_BYTES:
                        self.outbox.close(CLOSE_TOO_BIG, "message too big")
                        continue
                    WS_FRAMES.labels(self.kind, "binary_ignored").inc()
                    continue
                # a str of n code points is at most 4n UTF-8 bytes: encode only long ones
                if (len(text) > MAX_MESSAGE_BYTES // 4
                        and len(text.encode()) > MAX_MESSAGE_BYTES):
                    self.outbox.close(CLOSE_TOO_BIG, "message too big")
                    continue
                await self.on_text(text)
                if len(text) > YIELD_AFTER:
                    # Frames already buffered are returned without suspending: let writers
                    # run, so a burst of large frames is not mistaken for a slow consumer.
                    await asyncio.sleep(0)
        finally:
            WEBSOCKETS_OPEN.labels(self.kind).dec()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.outbox.closing = True
            await self.on_closed()

    async def opened(self) -> None:
        return None

    async def on_text(self, text: str) -> None:
        raise NotImplementedError

    async def on_closed(self) -> None:
        return None
