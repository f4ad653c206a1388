"""Routing between sockets: which socket serves an instance, which serves a session.

:class:`LocalHub` routes inside one process; :class:`RedisHub` (scale-out) adds Redis pub/sub
and presence keys so an instance connected to replica A reaches a client connected to replica
B. Which one runs is decided by the backend factory (``component.py``).

Delivery to a socket in this process is a plain call (``bool``: delivered or not); delivery
through Redis returns an awaitable the caller awaits. Ownership is enforced at the receiving
session: a frame carries the sending instance's id and a session only accepts frames from the
instance it connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from metadata_relay.observability import get_logger

log = get_logger("metadata_relay.pairing.hub")

Delivery = bool | Awaitable[bool]
"""Delivered (True) or not (False) now, or an awaitable that tells (through Redis)."""


class InstancePeer(Protocol):
    ip: str

    def alive(self, now: float) -> bool: ...

    def deliver(self, text: str) -> bool: ...

    def replaced(self) -> None: ...


class SessionPeer(Protocol):
    session_id: str

    def deliver_from(self, instance_id: str, text: str) -> bool: ...


@dataclass(frozen=True)
class Incumbent:
    """The socket currently serving an instance, as a newcomer's register sees it."""

    ip: str
    alive: bool  # sent an app-level frame within the alive window


class LocalHub:
    """In-process registry of instance and session sockets."""

    remote = False  # a peer missing here may live in another process

    def __init__(self) -> None:
        self.instances: dict[str, InstancePeer] = {}
        self.sessions: dict[str, SessionPeer] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def health(self) -> str:
        return "ok"

    # --- instances ------------------------------------------------------------------------

    async def attach_instance(self, instance_id: str, peer: InstancePeer) -> None:
        """Make ``peer`` the instance's socket; an older one (here or elsewhere) is replaced."""
        old = self.instances.get(instance_id)
        self.instances[instance_id] = peer
        if old is not None and old is not peer:
            old.replaced()

    async def detach_instance(self, instance_id: str, peer: InstancePeer) -> bool:
        """Forget ``peer``; True when it was still the instance's current socket."""
        if self.instances.get(instance_id) is peer:
            del self.instances[instance_id]
            return True
        return False

    async def incumbent(self, instance_id: str, now: float) -> Incumbent | None:
        peer = self.instances.get(instance_id)
        if peer is None:
            return None
        return Incumbent(peer.ip, peer.alive(now))

    async def instance_alive(self, instance_id: str, now: float) -> None:
        """The instance's socket here sent an app-level frame (others replicas must know)."""
        return None

    async def instance_online(self, instance_id: str) -> bool:
        return instance_id in self.instances

    def to_instance(self, instance_id: str, text: str) -> Delivery:
        peer = self.instances.get(instance_id)
        return peer.deliver(text) if peer is not None else False

    def local_instance_ids(self) -> set[str]:
        return set(self.instances)

    # --- sessions -------------------------------------------------------------------------

    async def attach_session(self, peer: SessionPeer) -> None:
        self.sessions[peer.session_id] = peer

    async def detach_session(self, peer: SessionPeer) -> None:
        if self.sessions.get(peer.session_id) is peer:
            del self.sessions[peer.session_id]

    def to_session(self, session_id: str, instance_id: str, text: str) -> Delivery:
        peer = self.sessions.get(session_id)
        return peer.deliver_from(instance_id, text) if peer is not None else False


PRESENCE_TTL = 90
PRESENCE_REFRESH = 30.0
ALIVE_PUBLISH_EVERY = 5.0
_DEL_IF_MINE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
    "return 0"
)


class RedisHub(LocalHub):
    """LocalHub plus Redis: presence ``pairing:presence:<id>`` (which replica serves the
    instance, from which address), liveness ``pairing:alive:<id>`` (exists
    while the instance's socket sends app-level frames), and channels ``pairing:i:<id>``
    (frames for an instance) / ``pairing:s:<session id>`` (frames for a session)."""

    remote = True

    def __init__(self, redis: Any, errors: tuple[type[BaseException], ...],
                 alive_window: float) -> None:
        super().__init__()
        self.redis = redis
        self.errors = errors
        self.alive_ms = int(alive_window * 1000)
        self.replica = secrets.token_hex(8)
        self.pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ok = False
        self._del_if_mine: Any = None
        self._alive_sent: dict[str, float] = {}

    def health(self) -> str:
        return "ok" if self._ok else "degraded"

    async def start(self) -> None:
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self._del_if_mine = self.redis.register_script(_DEL_IF_MINE)
        try:
            await self._resync()
            self._ok = True
        except self.errors as exc:
            log.warning("redis_unavailable", error=type(exc).__name__)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._refresh())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        with contextlib.suppress(*self.errors):
            for iid, peer in list(self.instances.items()):
                await self._del_if_mine(keys=[f"pairing:presence:{iid}"],
                                        args=[self._presence(peer)])
        with contextlib.suppress(*self.errors):
            await self.pubsub.aclose()

    def _presence(self, peer: InstancePeer) -> str:
        return json.dumps({"replica": self.replica, "ip": peer.ip})

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                if not self._ok:
                    await self._resync()
                self._ok = True
                backoff = 0.1
                while True:
                    msg = await self.pubsub.get_message(timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._dispatch(msg["channel"], msg["data"])
            except self.errors as exc:
                if self._ok:
                    log.warning("redis_lost", error=type(exc).__name__)
                self._ok = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _resync(self) -> None:
        """After Redis was unreachable: re-subscribe every local socket, re-announce presence."""
        channels = [f"pairing:replica:{self.replica}"]
        channels += [f"pairing:i:{iid}" for iid in self.instances]
        channels += [f"pairing:s:{sid}" for sid in self.sessions]
        await self.pubsub.subscribe(*channels)
        await self._announce()
        log.info("redis_connected", instances=len(self.instances), sessions=len(self.sessions))

    async def _announce(self) -> None:
        if not self.instances:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for iid, peer in self.instances.items():
                pipe.set(f"pairing:presence:{iid}", self._presence(peer), ex=PRESENCE_TTL)
            await pipe.execute()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        ch = channel.decode()
        text = data.decode()
        if ch.startswith("pairing:i:"):
            peer = self.instances.get(ch[10:])
            if peer is None:
                return
            if text[:1] == "F":
                peer.deliver(text[1:])
            elif text[:1] == "R" and text[1:] != self.replica:
                del self.instances[ch[10:]]
                peer.replaced()
        elif ch.startswith("pairing:s:"):
            session = self.sessions.get(ch[10:])
            iid, sep, frame = text.partition("\x00")
            if session is not None and sep:
                session.deliver_from(iid, frame)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_REFRESH)
            try:
                await self._announce()
            except self.errors as exc:
                log.warning("redis_presence_failed", error=type(exc).__name__)

    async def attach_instance(self, instance_id: str, peer: InstancePeer) -> None:
        await super().attach_instance(instance_id, peer)
        try:
            # Tell other replicas first: one holding an older socket closes it as replaced.
            await self.redis.publish(f"pairing:i:{instance_id}", "R" + self.replica)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(f"pairing:presence:{instance_id}", self._presence(peer),
                         ex=PRESENCE_TTL)
                pipe.set(f"pairing:alive:{instance_id}", "1", px=self.alive_ms)
                await pipe.execute()
            await self.pubsub.subscribe(f"pairing:i:{instance_id}")
        except self.errors as exc:
            log.warning("redis_attach_failed", error=type(exc).__name__)

    async def detach_instance(self, instance_id: str, peer: InstancePeer) -> bool:
        current = await super().detach_instance(instance_id, peer)
        if current:
            self._alive_sent.pop(instance_id, None)
            try:
                await self.pubsub.unsubscribe(f"pairing:i:{instance_id}")
                await self._del_if_mine(keys=[f"pairing:presence:{instance_id}"],
                                        args=[self._presence(peer)])
            except self.errors as exc:
                log.warning("redis_detach_failed", error=type(exc).__name__)
        return current

    async def incumbent(self, instance_id: str, now: float) -> Incumbent | None:
        if instance_id in self.instances:
            return await super().incumbent(instance_id, now)
        try:
            raw, alive = await self.redis.mget(f"pairing:presence:{instance_id}",
                                               f"pairing:alive:{instance_id}")
        except self.errors as exc:
            log.warning("redis_read_failed", error=type(exc).__name__)
            return None
        if raw is None:
            return None
        info = json.loads(raw)
        return Incumbent(str(info.get("ip")), alive is not None)

    async def instance_alive(self, instance_id: str, now: float) -> None:
        if now - self._alive_sent.get(instance_id, -ALIVE_PUBLISH_EVERY) < ALIVE_PUBLISH_EVERY:
            return
        self._alive_sent[instance_id] = now
        try:
            await self.redis.set(f"pairing:alive:{instance_id}", "1", px=self.alive_ms)
        except self.errors as exc:
            log.warning("redis_write_failed", error=type(exc).__name__)

    async def instance_online(self, instance_id: str) -> bool:
        if instance_id in self.instances:
            return True
        try:
            return bool(await self.redis.exists(f"pairing:presence:{instance_id}"))
        except self.errors:
            return False

    def to_instance(self, instance_id: str, text: str) -> Delivery:
        peer = self.instances.get(instance_id)
        if peer is not None:
            return peer.deliver(text)
        return self._publish(f"pairing:i:{instance_id}", "F" + text)

    async def _publish(self, channel: str, data: str) -> bool:
        try:
            return int(await self.redis.publish(channel, data)) > 0
        except self.errors:
            return False

    async def attach_session(self, peer: SessionPeer) -> None:
        await super().attach_session(peer)
        try:
            await self.pubsub.subscribe(f"pairing:s:{peer.session_id}")
        except self.errors as exc:
            log.warning("redis_attach_failed", error=type(exc).__name__)

    async def detach_session(self, peer: SessionPeer) -> None:
        await super().detach_session(peer)
        with contextlib.suppress(*self.errors):
            await self.pubsub.unsubscribe(f"pairing:s:{peer.session_id}")

    def to_session(self, session_id: str, instance_id: str, text: str) -> Delivery:
        peer = self.sessions.get(session_id)
        if peer is not None:
            return peer.deliver_from(instance_id, text)
        return self._publish(f"pairing:s:{session_id}", f"{instance_id}\x00{text}")
