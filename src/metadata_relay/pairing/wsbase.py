"""What both relay sockets share: raw-ASGI accept/receive loop, inactivity deadline (one
timer handle, re-armed lazily), bounded outbox, open-socket gauge, and the synchronous lane
(:mod:`metadata_relay.http.websocket`) that relay frames take when the server offers it."""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from metadata_relay.http.websocket import DIRECT, MAX_MESSAGE_BYTES, DirectChannel
from metadata_relay.observability import WEBSOCKETS_OPEN, get_logger
from metadata_relay.pairing.outbox import Outbox
from metadata_relay.pairing.service import WS_FRAMES, PairingService

log = get_logger("metadata_relay.pairing.wsbase")

YIELD_AFTER = 16 * 1024
CLOSE_TOO_BIG = 1009


def service_of(scope: Scope) -> PairingService:
    svc: PairingService = scope["app"].state.runtime.components["pairing"].service
    return svc


class RelaySocket:
    """One accepted WebSocket. Subclasses implement :meth:`on_text` and :meth:`on_closed`,
    and optionally :meth:`on_text_now` (the synchronous lane)."""

    kind = "socket"
    idle_timeout = 60.0

    def __init__(self, svc: PairingService, scope: Scope, send: Send) -> None:
        self.svc = svc
        self.scope = scope
        direct: DirectChannel | None = scope.get("extensions", {}).get(DIRECT)
        self.direct = direct
        self.outbox = Outbox(send, svc.limits.send_queue_bytes, self._closing,
                             direct.write_text if direct is not None else None)
        self.busy = False  # on_text is running (awaiting): new frames must queue behind it
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

    @property
    def on_direct_lane(self) -> bool:
        return self.direct is not None and self.direct.own_reader

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
            if self.direct is not None:
                self.direct.attach(self._offered)
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
                self.busy = True
                try:
                    await self.on_text(text)
                finally:
                    self.busy = False
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

    def _offered(self, text: str) -> bool:
        """A text frame from the synchronous lane: True when handled (or dropped) here,
        False to let it take the ASGI receive queue (``on_text`` is busy, or the frame
        needs to await)."""
        if self.busy:
            return False
        if self.outbox.closing:
            return True  # the receive loop ignores frames once closing, too
        if len(text) > MAX_MESSAGE_BYTES // 4:
            return False  # rare: let the receive loop apply the size check
        try:
            return self.on_text_now(text)
        except Exception:
            log.exception("relay_frame_failed", kind=self.kind)
            self.outbox.close(1011, "internal error")
            return True

    async def opened(self) -> None:
        return None

    def on_text_now(self, text: str) -> bool:
        """Handle a frame without awaiting, or return False (before any side effect)."""
        return False

    async def on_text(self, text: str) -> None:
        raise NotImplementedError

    async def on_closed(self) -> None:
        return None
