"""A socket's bounded send queue: a consumer that falls behind is closed, never buffered
without bound. The writer task exists only while there is something to write.

With a ``write_now`` callable (the synchronous lane, :mod:`metadata_relay.http.websocket`)
a frame is written at once when nothing is queued and the transport is not applying
back-pressure; otherwise it is queued exactly as without it, so order and the byte limit hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.types import Send

CLOSE_POLICY = 1008

# Fire-and-forget tasks (closing handshakes, session teardown) are kept referenced here
# until they finish, so the garbage collector cannot drop them mid-flight.
_background: set[asyncio.Task[None]] = set()


def spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


class Outbox:
    __slots__ = ("_on_close", "_queue", "_send", "_write_now", "_writer", "closing", "limit",
                 "pending")

    def __init__(self, send: Send, limit: int, on_close: Callable[[int], None],
                 write_now: Callable[[str], bool] | None = None) -> None:
        self._send = send
        self._write_now = write_now
        self._queue: deque[str] | None = None  # exists only while frames wait (idle: none)
        self._writer: asyncio.Task[None] | None = None
        self._on_close = on_close
        self.limit = limit
        self.pending = 0
        self.closing = False

    def push(self, text: str) -> bool:
        """Queue one text frame; False (and the socket closing with 1008) on overflow."""
        if self.closing:
            return False
        if self._writer is None and self._write_now is not None and self._write_now(text):
            return True  # nothing was queued (no writer task): order is kept
        self.pending += len(text)
        if self.pending > self.limit:
            self.close(CLOSE_POLICY, "send queue full")
            return False
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(text)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return True

    async def _drain(self) -> None:
        queue, send = self._queue, self._send
        assert queue is not None
        try:
            while queue:
                text = queue[0]
                await send({"type": "websocket.send", "text": text})
                queue.popleft()
                self.pending -= len(text)
        except OSError:
            # The peer went away (an ASGI server raises an OSError subclass, uvicorn its
            # ClientDisconnected): the receive loop sees it too.
            self.closing = True
            self.pending = 0
        finally:
            self._writer = None
            self._queue = None

    def close(self, code: int = 1000, reason: str = "", final: str | None = None) -> None:
        """Stop queueing; send ``final`` (if any) after what is queued, then a close frame.

        For overflow (1008) the queue is dropped first: the consumer is not waited for.
        """
        if self.closing:
            return
        self.closing = True
        if code == CLOSE_POLICY:
            self._queue = None
            self.pending = 0
            if self._writer is not None:
                self._writer.cancel()
                self._writer = None
        self._on_close(code)
        spawn(self._close(code, reason, final))

    async def _close(self, code: int, reason: str, final: str | None) -> None:
        writer = self._writer
        if writer is not None:
            await writer  # it ends on the peer going away, never raising
        with contextlib.suppress(OSError):
            if final is not None:
                await self._send({"type": "websocket.send", "text": final})
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def send_now(self, message: dict[str, Any]) -> None:
        await self._send(message)
