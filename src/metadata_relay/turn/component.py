"""The service's ``turn`` component: STUN/TURN on ``TURN_PORT`` (UDP and TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

from metadata_relay.config import Settings
from metadata_relay.observability import get_logger
from metadata_relay.turn import metrics, native
from metadata_relay.turn.native import NativeUdp
from metadata_relay.turn.peers import PeerPolicy
from metadata_relay.turn.ports import PortPool
from metadata_relay.turn.server import TurnConfig, TurnServer
from metadata_relay.turn.transport import (
    LISTENER_BUFFER,
    RelayOpener,
    TcpConnection,
    UdpListener,
    udp_socket,
)

log = get_logger("metadata_relay.turn")
TICK = 0.25
TCP_IDLE = 30.0


class TurnComponent:
    name = "turn"

    def __init__(self, settings: Settings, secrets: tuple[str, ...],
                 native_forwarding: bool | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        """Wall-clock seconds for the state machine (credential expiry, nonces, lifetimes)."""
        self.native_forwarding = (settings.TURN_NATIVE_FORWARDING if native_forwarding is None
                                  else native_forwarding)
        """The UDP engine: the C forwarder (:mod:`metadata_relay.turn.native`) where it is
        built, else (and when false) the event-loop edge (:mod:`metadata_relay.turn.transport`)."""
        self.secrets = secrets
        self.server: TurnServer | None = None
        self.opener: RelayOpener | None = None
        self.udp: Any = None
        self.tcp: asyncio.Server | None = None
        self.connections: set[TcpConnection] = set()
        self.task: asyncio.Task[None] | None = None
        self.tcp_idle = TCP_IDLE
        """A TCP connection holding no allocation for this long is closed."""

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        public_ip = s.turn_public_ip
        listen_ip = s.TURN_LISTEN_IP
        relay_bind = listen_ip if listen_ip not in ("0.0.0.0", "::", "localhost") else (
            "::" if ":" in public_ip else "0.0.0.0")
        if listen_ip == "localhost":
            listen_ip = "127.0.0.1"
        pool = PortPool(s.TURN_MIN_PORT, s.TURN_MAX_PORT)
        self.opener = RelayOpener(relay_bind, pool)
        policy = PeerPolicy(s.TURN_DENIED_PEERS, s.TURN_ALLOWED_PEERS,
                            own_ips={public_ip, relay_bind} - {"0.0.0.0", "::"},
                            relay_ports=(s.TURN_MIN_PORT, s.TURN_MAX_PORT))
        if policy.own_allowed():
            log.warning("turn_own_address_allowed", addresses=policy.own_allowed(),
                        reason="TURN_ALLOWED_PEERS names the relay's own address: its ports "
                        "outside the relay range (the node's services) are reachable by peers")
        config = TurnConfig(realm=s.TURN_REALM, secrets=self.secrets, relay_ip=public_ip,
                            user_quota=s.TURN_USER_QUOTA, ip_quota=s.TURN_IP_QUOTA,
                            max_rate=s.TURN_MAX_RATE)
        server = TurnServer(config, policy, self.opener)
        self.server = server
        family = socket.AF_INET6 if ":" in listen_ip else socket.AF_INET
        sock = udp_socket(family, listen_ip, s.TURN_PORT, LISTENER_BUFFER)
        if self.native_forwarding and native.available():
            self.udp = self.opener.native = NativeUdp(server, sock, self.clock)
        else:
            self.udp, _ = await loop.create_datagram_endpoint(
                lambda: UdpListener(server, self.clock), sock=sock)
        self.opener.listener = self.udp
        try:
            self.tcp = await loop.create_server(
                lambda: TcpConnection(server, self.connections, self.clock), listen_ip, s.TURN_PORT,
                reuse_address=True)
        except BaseException:
            self.udp.close()
            raise
        is_native = isinstance(self.udp, NativeUdp)
        metrics.track(server, self.udp.settle if is_native else None)
        self.task = loop.create_task(self._housekeeping())
        udp_io = "native" if is_native else "event-loop"
        if self.native_forwarding and not is_native:
            log.warning("turn_native_forwarding_unavailable",
                        reason=native.IMPORT_ERROR or "needs Linux (epoll)")
        log.info("turn_started", listen=f"{listen_ip}:{s.TURN_PORT}", relay_ip=public_ip,
                 relay_ports=f"{s.TURN_MIN_PORT}-{s.TURN_MAX_PORT}", realm=s.TURN_REALM,
                 udp_io=udp_io)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick(self.clock())
            except Exception:
                log.exception("turn_tick_failed")

    def tick(self, now: float) -> None:
        """Expire what is due at ``now``, refill the buckets, close idle TCP connections
        (every :data:`TICK` seconds; tests call it with the time they want)."""
        assert self.server is not None
        udp = self.udp if isinstance(self.udp, NativeUdp) else None
        if udp is not None:
            udp.settle()  # C forwarder counts into the allocations and buckets
        self.server.tick(now)
        if udp is not None:
            udp.seed()  # refilled balances back into the C forwarder
        allocations = self.server.allocations
        for conn in list(self.connections):
            if conn in allocations:
                conn.idle_since = now
            elif now - conn.idle_since > self.tcp_idle:
                conn.transport.close()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.server is not None:
            self.server.shutdown()
        for conn in list(self.connections):
            conn.transport.close()
        if self.tcp is not None:
            self.tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.tcp.wait_closed(), 2)
        if self.udp is not None:
            self.udp.close()
        if self.opener is not None:
            for t in list(self.opener.tasks):
                t.cancel()
        await asyncio.sleep(0)

    def health(self) -> str:
        return "ok" if self.udp is not None and not self.udp.is_closing() else "degraded"

    def stats(self) -> dict[str, Any]:
        if self.server is None:
            return {}
        snap = metrics.snapshot(self.server)
        snap["tcp_connections"] = len(self.connections)
        snap["relay_tasks_pending"] = len(self.opener.tasks) if self.opener else 0
        with contextlib.suppress(RuntimeError):
            snap["asyncio_tasks"] = len(asyncio.all_tasks())
        if self.opener is not None:
            snap["relay_ports_free"] = len(self.opener.pool)
            snap["relay_ports_total"] = self.opener.pool.size
        return snap
