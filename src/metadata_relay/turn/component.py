"""The service's ``turn`` component: STUN/TURN on ``TURN_PORT`` (UDP and TCP, each address
family ``TURN_LISTEN_IP`` names), relays in the families the node has a public address in."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

from metadata_relay.config import WILDCARDS, Settings
from metadata_relay.observability import get_logger
from metadata_relay.turn import metrics, native
from metadata_relay.turn.codec import ip_family
from metadata_relay.turn.native import NativeEngine
from metadata_relay.turn.peers import PeerPolicy
from metadata_relay.turn.ports import PortPool
from metadata_relay.turn.server import TurnConfig, TurnServer
from metadata_relay.turn.transport import (
    LISTENER_BUFFER,
    RelayOpener,
    TcpConnection,
    UdpListener,
    family_of,
    tcp_listener,
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
        """The engine: the C forwarder (:mod:`metadata_relay.turn.native`) where it is
        built, else (and when false) the event-loop edge (:mod:`metadata_relay.turn.transport`)."""
        self.secrets = secrets
        self.server: TurnServer | None = None
        self.opener: RelayOpener | None = None
        self.engine: NativeEngine | None = None
        """The C forwarder's edge, when it serves."""
        self.udp: list[Any] = []
        """The UDP listeners' transports (event-loop edge)."""
        self.tcp: list[asyncio.Server] = []
        """The TCP listeners (event-loop edge)."""
        self.connections: set[Any] = set()
        """TCP client connections (either edge: ``idle_since``, ``close()``)."""
        self.task: asyncio.Task[None] | None = None
        self.tcp_idle = TCP_IDLE
        """A TCP connection holding no allocation for this long is closed."""

    def relay_addresses(self, binds: dict[int, str]) -> dict[int, str]:
        """Address family -> the advertised relay address, for the families offered: the
        public address of a family the listeners bind (TURN_PUBLIC_IP, TURN_PUBLIC_IPV6 or
        the host's own), IPv4 first."""
        s = self.settings
        public: dict[int, str] = {}
        ip4 = s.turn_public_ip
        public[ip_family(ip4)] = ip4
        if 6 in binds:
            ip6 = s.turn_public_ipv6
            if ip6 is not None:
                public[6] = ip6
        return {f: public[f] for f in (4, 6) if f in public and f in binds}

    def sockets(self) -> tuple[list[socket.socket], list[socket.socket]]:
        """The UDP and TCP listeners, one each per address TURN_LISTEN_IP names. Listening on
        every address (the default), a host without IPv6 gets IPv4 only (with a warning)."""
        s = self.settings
        udp: list[socket.socket] = []
        tcp: list[socket.socket] = []
        everywhere = s.turn_listen_ips == WILDCARDS
        try:
            for ip in s.turn_listen_ips:
                try:
                    u = udp_socket(family_of(ip), ip, s.TURN_PORT, LISTENER_BUFFER)
                    udp.append(u)
                    tcp.append(tcp_listener(ip, s.TURN_PORT))
                except OSError as exc:
                    if not (everywhere and ":" in ip):
                        raise
                    if udp and udp[-1].family == socket.AF_INET6:
                        udp.pop().close()
                    log.warning("turn_ipv6_unavailable", listen=ip, reason=str(exc))
        except BaseException:
            for sock in udp + tcp:
                sock.close()
            raise
        return udp, tcp

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        udp_socks, tcp_socks = self.sockets()
        binds = {ip_family(ip): ip for ip in (sock.getsockname()[0] for sock in udp_socks)}
        relay_ips = self.relay_addresses(binds)
        pools = {f: PortPool(s.TURN_MIN_PORT, s.TURN_MAX_PORT) for f in relay_ips}
        self.opener = RelayOpener({f: binds[f] for f in relay_ips}, pools)
        policy = PeerPolicy(s.TURN_DENIED_PEERS, s.TURN_ALLOWED_PEERS,
                            own_ips={*relay_ips.values(), *binds.values()} - set(WILDCARDS),
                            relay_ports=(s.TURN_MIN_PORT, s.TURN_MAX_PORT))
        if policy.own_allowed():
            log.warning("turn_own_address_allowed", addresses=policy.own_allowed(),
                        reason="TURN_ALLOWED_PEERS names the relay's own address: its ports "
                        "outside the relay range (the node's services) are reachable by peers")
        if not relay_ips:
            log.warning("turn_no_relay_address", listen=sorted(binds.values()),
                        reason="no public address in a family the listeners bind: Allocate "
                        "gets 508")
        config = TurnConfig(realm=s.TURN_REALM, secrets=self.secrets,
                            relay_ips=tuple(relay_ips.values()),
                            user_quota=s.TURN_USER_QUOTA, ip_quota=s.TURN_IP_QUOTA,
                            max_rate=s.TURN_MAX_RATE)
        server = TurnServer(config, policy, self.opener)
        self.server = server
        trusted = s.TRUSTED_PROXIES
        try:
            if self.native_forwarding and native.available():
                engine = self.engine = self.opener.native = NativeEngine(
                    server, self.clock, self.connections, trusted)
                for sock in udp_socks:
                    engine.add_udp(sock)
                for sock in tcp_socks:
                    engine.add_tcp(sock)
            else:
                for sock in udp_socks:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: UdpListener(server, self.clock), sock=sock)
                    self.udp.append(transport)
                    self.opener.listeners[4 if sock.family == socket.AF_INET else 6] = transport
                for sock in tcp_socks:
                    self.tcp.append(await loop.create_server(
                        lambda: TcpConnection(server, self.connections, self.clock, trusted),
                        sock=sock))
        except BaseException:
            await self.stop()
            for sock in udp_socks + tcp_socks:
                sock.close()
            raise
        metrics.track(server, self.engine.settle if self.engine is not None else None)
        self.task = loop.create_task(self._housekeeping())
        io = "native" if self.engine is not None else "event-loop"
        if self.native_forwarding and self.engine is None:
            log.warning("turn_native_forwarding_unavailable",
                        reason=native.IMPORT_ERROR or "needs Linux (epoll)")
        log.info("turn_started",
                 listen=[f"[{ip}]:{s.TURN_PORT}" if ":" in ip else f"{ip}:{s.TURN_PORT}"
                         for ip in binds.values()],
                 relay_ips=list(relay_ips.values()),
                 relay_ports=f"{s.TURN_MIN_PORT}-{s.TURN_MAX_PORT}", realm=s.TURN_REALM,
                 udp_io=io, tcp_io=io)

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
        engine = self.engine
        if engine is not None:
            engine.settle()  # C forwarder counts into the allocations and buckets
        self.server.tick(now)
        if engine is not None:
            engine.seed()  # refilled balances back into the C forwarder
        allocations = self.server.allocations
        for conn in list(self.connections):
            if conn in allocations:
                conn.idle_since = now
            elif now - conn.idle_since > self.tcp_idle:
                conn.close()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.server is not None:
            self.server.shutdown()
        for conn in list(self.connections):
            conn.close()
        for server in self.tcp:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self.tcp.clear()
        for transport in self.udp:
            transport.close()
        self.udp.clear()
        if self.engine is not None:
            self.engine.close()
        if self.opener is not None:
            for t in list(self.opener.tasks):
                t.cancel()
        await asyncio.sleep(0)

    def health(self) -> str:
        if self.engine is not None:
            return "degraded" if self.engine.is_closing() else "ok"
        return "ok" if self.udp and not any(t.is_closing() for t in self.udp) else "degraded"

    def stats(self) -> dict[str, Any]:
        if self.server is None:
            return {}
        snap = metrics.snapshot(self.server)
        snap["tcp_connections"] = len(self.connections)
        snap["relay_tasks_pending"] = len(self.opener.tasks) if self.opener else 0
        with contextlib.suppress(RuntimeError):
            snap["asyncio_tasks"] = len(asyncio.all_tasks())
        if self.opener is not None:
            pools = self.opener.pools.values()
            snap["relay_ports_free"] = sum(len(p) for p in pools)
            snap["relay_ports_total"] = sum(p.size for p in pools)
        return snap
