"""Routing between sockets: which socket serves an instance, which serves a session.

``LocalHub`` routes inside one process. ``RedisHub`` adds Redis pub/sub and presence keys so
an instance connected to replica A reaches a client connected to replica B.

Ownership is enforced at the receiving session: a frame carries the sending instance's id
and a session only accepts frames from the instance it connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any, Protocol

from metadata_relay.observability import get_logger

log = get_logger("metadata_relay.pairing.hub")


class InstancePeer(Protocol):
    instance_id: str | None

    def deliver(self, text: str) -> bool: ...

    def replaced(self) -> None: ...


class SessionPeer(Protocol):
    session_id: str

    def deliver_from(self, instance_id: str, text: str) -> bool: ...


class LocalHub:
    """In-process registry of instance and session sockets."""

    # True when a peer missing here may live in another process (then routing must await)
    remote = False

    def __init__(self) -> None:
        self.instances: dict[str, InstancePeer] = {}
        self.sessions: dict[str, SessionPeer] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def health(self) -> str:
        return "ok"

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

    async def instance_online(self, instance_id: str) -> bool:
        return instance_id in self.instances

    async def to_instance(self, instance_id: str, text: str) -> bool:
        return self.to_instance_now(instance_id, text)

    def to_instance_now(self, instance_id: str, text: str) -> bool:
        """Local delivery only, without awaiting (the synchronous lane)."""
        peer = self.instances.get(instance_id)
        return peer.deliver(text) if peer is not None else False

    async def attach_session(self, peer: SessionPeer) -> None:
        self.sessions[peer.session_id] = peer

    async def detach_session(self, peer: SessionPeer) -> None:
        if self.sessions.get(peer.session_id) is peer:
            del self.sessions[peer.session_id]

    async def to_session(self, session_id: str, instance_id: str, text: str) -> bool:
        return self.to_session_now(session_id, instance_id, text)

    def to_session_now(self, session_id: str, instance_id: str, text: str) -> bool:
        """Local delivery only, without awaiting (the synchronous lane)."""
        peer = self.sessions.get(session_id)
        return peer.deliver_from(instance_id, text) if peer is not None else False

    def local_instance_ids(self) -> set[str]:
        return set(self.instances)


PRESENCE_TTL = 90
PRESENCE_REFRESH = 30.0
_DEL_IF_MINE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
    "return 0"
)


class RedisHub(LocalHub):
    """LocalHub plus Redis: presence keys ``pairing:presence:<id>`` and channels
    ``pairing:i:<instance_id>`` (frames for an instance) / ``pairing:s:<session_id>``."""

    remote = True

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as aioredis

        self.url = url
        self.redis: Any = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                            health_check_interval=15)
        self.replica = secrets.token_hex(8)
        self.pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ok = False
        self._del_if_mine: Any = None

    def health(self) -> str:
        return "ok" if self._ok else "degraded"

    async def start(self) -> None:
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self._del_if_mine = self.redis.register_script(_DEL_IF_MINE)
        try:
            await self._resync()
            self._ok = True
        except Exception as exc:
            log.warning("redis_unavailable", error=type(exc).__name__)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._refresh())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            if self.instances:
                for iid in list(self.instances):
                    await self._del_if_mine(keys=[f"pairing:presence:{iid}"], args=[self.replica])
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

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
            except asyncio.CancelledError:
                raise
            except Exception as exc:
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
        if self.instances:
            async with self.redis.pipeline(transaction=False) as pipe:
                for iid in self.instances:
                    pipe.set(f"pairing:presence:{iid}", self.replica, ex=PRESENCE_TTL)
                await pipe.execute()
        log.info("redis_connected", instances=len(self.instances), sessions=len(self.sessions))

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
            if not self.instances:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for iid in self.instances:
                        pipe.set(f"pairing:presence:{iid}", self.replica, ex=PRESENCE_TTL)
                    await pipe.execute()
            except Exception as exc:
                log.warning("redis_presence_failed", error=type(exc).__name__)

    async def attach_instance(self, instance_id: str, peer: InstancePeer) -> None:
        await super().attach_instance(instance_id, peer)
        try:
            # Tell other replicas first: one holding an older socket closes it as replaced.
            await self.redis.publish(f"pairing:i:{instance_id}", "R" + self.replica)
            await self.redis.set(f"pairing:presence:{instance_id}", self.replica,
                                 ex=PRESENCE_TTL)
            await self.pubsub.subscribe(f"pairing:i:{instance_id}")
        except Exception as exc:
            log.warning("redis_attach_failed", error=type(exc).__name__)

    async def detach_instance(self, instance_id: str, peer: InstancePeer) -> bool:
        current = await super().detach_instance(instance_id, peer)
        if current:
            try:
                await self.pubsub.unsubscribe(f"pairing:i:{instance_id}")
                await self._del_if_mine(keys=[f"pairing:presence:{instance_id}"],
                                        args=[self.replica])
            except Exception as exc:
                log.warning("redis_detach_failed", error=type(exc).__name__)
        return current

    async def instance_online(self, instance_id: str) -> bool:
        if instance_id in self.instances:
            return True
        try:
            return bool(await self.redis.exists(f"pairing:presence:{instance_id}"))
        except Exception:
            return False

    async def to_instance(self, instance_id: str, text: str) -> bool:
        peer = self.instances.get(instance_id)
        if peer is not None:
            return peer.deliver(text)
        try:
            return int(await self.redis.publish(f"pairing:i:{instance_id}", "F" + text)) > 0
        except Exception:
            return False

    async def attach_session(self, peer: SessionPeer) -> None:
        await super().attach_session(peer)
        try:
            await self.pubsub.subscribe(f"pairing:s:{peer.session_id}")
        except Exception as exc:
            log.warning("redis_attach_failed", error=type(exc).__name__)

    async def detach_session(self, peer: SessionPeer) -> None:
        await super().detach_session(peer)
        with contextlib.suppress(Exception):
            await self.pubsub.unsubscribe(f"pairing:s:{peer.session_id}")

    async def to_session(self, session_id: str, instance_id: str, text: str) -> bool:
        peer = self.sessions.get(session_id)
        if peer is not None:
            return peer.deliver_from(instance_id, text)
        try:
            n = await self.redis.publish(f"pairing:s:{session_id}", f"{instance_id}\x00{text}")
            return int(n) > 0
        except Exception:
            return False
