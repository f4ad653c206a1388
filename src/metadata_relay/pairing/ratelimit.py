"""Rate limits. Per-key windows (per client IP, per network prefix, per instance) are counted
by a :class:`Counter`: :class:`LocalCounter` in one process, :class:`RedisCounter` shared by
every replica; which one runs is decided by the backend factory (``component.py``).
Per-socket buckets and open-socket counts are always local (a socket lives in one process).
Every check takes ``now``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Protocol

from metadata_relay.observability import get_logger
from metadata_relay.ratelimit import Window

log = get_logger("metadata_relay.pairing.ratelimit")


@dataclass(frozen=True)
class Rule:
    """At most ``limit`` events per ``window`` seconds per key; ``name`` labels metrics and
    keeps rules apart in a shared counter."""

    name: str
    limit: int
    window: float = 60.0


def network(ip: str) -> str:
    """The network prefix guesses are also counted by: /24 for IPv4, /48 for IPv6 (an
    IPv4-mapped IPv6 address counts as its IPv4 address)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


class Counter(Protocol):
    async def over(self, rule: Rule, key: str, now: float) -> float:
        """0.0 when ``key`` is under ``rule``'s limit, else seconds to wait."""
        ...

    async def add(self, rule: Rule, key: str, now: float) -> None: ...

    def prune(self, now: float) -> None: ...


class LocalCounter:
    """Counts in this process (one replica)."""

    def __init__(self) -> None:
        self._windows: dict[str, Window] = {}

    def _window(self, rule: Rule) -> Window:
        w = self._windows.get(rule.name)
        if w is None:
            w = self._windows[rule.name] = Window(rule.window)
        return w

    async def over(self, rule: Rule, key: str, now: float) -> float:
        return self._window(rule).over(key, rule.limit, now)

    async def add(self, rule: Rule, key: str, now: float) -> None:
        self._window(rule).add(key, now)

    def prune(self, now: float) -> None:
        for w in self._windows.values():
            w.prune(now)


class RedisCounter:
    """Counts shared by every replica: one Redis counter per key and fixed window
    (``pairing:rl:<rule>:<key>:<window number>``), read as the current window plus the
    previous one weighted by how much of it still overlaps the sliding window.

    ``now`` must be wall-clock time (shared by replicas). When Redis fails the replica's own
    :class:`LocalCounter`, which sees every event too, answers.
    """

    def __init__(self, redis: Any, errors: tuple[type[BaseException], ...]) -> None:
        self.redis = redis
        self.errors = errors
        self.local = LocalCounter()

    def _key(self, rule: Rule, key: str, slot: int) -> str:
        return f"pairing:rl:{rule.name}:{key}:{slot}"

    async def over(self, rule: Rule, key: str, now: float) -> float:
        local = await self.local.over(rule, key, now)
        if local:
            return local
        slot, into = divmod(now, rule.window)
        try:
            cur, prev = await self.redis.mget(self._key(rule, key, int(slot)),
                                              self._key(rule, key, int(slot) - 1))
        except self.errors:
            return 0.0
        weight = 1.0 - into / rule.window
        if int(cur or 0) + int(prev or 0) * weight < rule.limit:
            return 0.0
        return max(rule.window - into, 0.001)

    async def add(self, rule: Rule, key: str, now: float) -> None:
        await self.local.add(rule, key, now)
        name = self._key(rule, key, int(now // rule.window))
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(name)
                pipe.expire(name, int(rule.window * 2) + 1)
                await pipe.execute()
        except self.errors as exc:
            log.warning("redis_rate_count_failed", error=type(exc).__name__)

    def prune(self, now: float) -> None:
        self.local.prune(now)


class SocketCounts:
    """Open sockets per (kind, client IP) in this process, capped per kind."""

    def __init__(self, caps: dict[str, int]) -> None:
        self.caps = caps
        self._open: dict[tuple[str, str], int] = {}

    def open(self, kind: str, ip: str) -> bool:
        key = (kind, ip)
        n = self._open.get(key, 0)
        if n >= self.caps[kind]:
            return False
        self._open[key] = n + 1
        return True

    def close(self, kind: str, ip: str) -> None:
        key = (kind, ip)
        n = self._open.get(key, 0) - 1
        if n > 0:
            self._open[key] = n
        else:
            self._open.pop(key, None)
