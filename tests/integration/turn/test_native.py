"""The C forwarder inside the real TURN component, for UDP and TCP clients, ChannelData and
Send/Data indications: its routes and permissions follow the state machine, so a stale one
never forwards (permission/channel expiry, Refresh to 0, allocation expiry, rebinding a
channel number to another peer, TCP close), TURN_MAX_RATE drops on the fast path, and what C
relayed is settled into the metrics.

Checks are deterministic without sleeping: what a test sends on loopback is queued in the
kernel at once, :func:`pump` runs one wake-up of the edge synchronously (everything queued is
processed, everything forwarded is queued at its receiver), then non-blocking reads show
exactly what was forwarded."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator

import pytest

from metadata_relay.config import load_settings
from metadata_relay.turn import codec as c
from metadata_relay.turn.component import TurnComponent
from metadata_relay.turn.native import NativeEngine
from tests.interop.turn.support import SECRET, StunClient, code, relay_range
from tests.tools import free_tcp_udp_port, queued_datagrams, require_native


def settings(max_rate: int = 0):  # type: ignore[no-untyped-def]
    low, high = relay_range(20)
    return load_settings({
        "TURN_LISTEN_IP": "127.0.0.1", "TURN_PUBLIC_IP": "127.0.0.1",
        "TURN_PORT": str(free_tcp_udp_port()), "TURN_MIN_PORT": str(low),
        "TURN_MAX_PORT": str(high), "TURN_ALLOWED_PEERS": "127.0.0.0/8",
        "TURN_MAX_RATE": str(max_rate)})


async def start(max_rate: int = 0) -> TurnComponent:
    require_native()
    comp = TurnComponent(settings(max_rate), (SECRET,))
    await comp.start()
    assert isinstance(comp.engine, NativeEngine)  # the default
    return comp


@pytest.fixture
async def comp() -> AsyncIterator[TurnComponent]:
    comp = await start()
    yield comp
    await comp.stop()


def pump(comp: TurnComponent) -> None:
    """Wake-ups of the UDP edge, now (the event loop is not running while we are), until
    what was queued is processed (a wake-up reads up to 64 datagrams per relay socket)."""
    assert isinstance(comp.engine, NativeEngine)
    for _ in range(4):
        comp.engine.wake()


def peer() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def client_frames(cl: StunClient) -> list[bytes]:
    """What is queued for the client now: datagrams, or the whole frames of its stream."""
    cl.sock.setblocking(False)
    try:
        if not cl.tcp:
            return queued_datagrams(cl.sock)
        while True:
            try:
                chunk = cl.sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            cl.buf += chunk
        frames = []
        while (n := c.stream_frame_length(cl.buf)) and n > 0 and len(cl.buf) >= n:
            frames.append(cl.buf[:n])
            cl.buf = cl.buf[n:]
        return frames
    finally:
        cl.sock.settimeout(3)


def payloads(cl: StunClient) -> list[bytes]:
    """The payloads of the ChannelData and Data indications queued for the client."""
    out = []
    for frame in client_frames(cl):
        if (parsed := c.parse_channel_data(frame)) is not None:
            out.append(parsed[1])
        elif (msg := c.parse(frame)) is not None and (msg.method, msg.cls) == (
                c.DATA, c.INDICATION):
            out.append(msg.attrs[c.DATA_ATTR])
    return out


def channel_payloads(cl: StunClient) -> list[bytes]:
    return [p[1] for f in client_frames(cl) if (p := c.parse_channel_data(f)) is not None]


async def client(comp: TurnComponent, user: str, lifetime: int = 0, tcp: bool = False
                 ) -> tuple[StunClient, tuple[str, int]]:
    cl = StunClient(comp.settings.TURN_PORT, user=user, tcp=tcp)
    relay = await asyncio.to_thread(cl.allocate)
    if lifetime:
        resp = await asyncio.to_thread(cl.request, c.REFRESH, [(c.LIFETIME, c.uint32(lifetime))])
        assert code(resp) == 200
    return cl, relay


async def bind(cl: StunClient, p: socket.socket, channel: int) -> None:
    resp = await asyncio.to_thread(cl.peer_request, c.CHANNEL_BIND, p.getsockname(), channel)
    assert code(resp) == 200


async def permit(cl: StunClient, p: socket.socket) -> None:
    resp = await asyncio.to_thread(cl.peer_request, c.CREATE_PERMISSION, p.getsockname())
    assert code(resp) == 200


def send_to(cl: StunClient, p: socket.socket, payload: bytes, channel: int | None) -> None:
    """``payload`` for peer ``p``: ChannelData on ``channel``, or a Send indication."""
    if channel is not None:
        cl.send(c.channel_data(channel, payload, pad=cl.tcp))
        return
    txid = os.urandom(12)
    cl.send(c.encode(c.SEND, c.INDICATION, txid, [
        (c.XOR_PEER_ADDRESS, c.xor_address(*p.getsockname(), txid)),
        (c.DATA_ATTR, payload)], fingerprint=True))


def fw_routes(comp: TurnComponent) -> int:
    assert isinstance(comp.engine, NativeEngine)
    return comp.engine.fw.routes


CLIENTS = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
PATHS = pytest.mark.parametrize("channel", [0x4000, None], ids=["channel", "indications"])


@CLIENTS
@PATHS
async def test_expired_permission_stops_forwarding_both_ways(
        comp: TurnComponent, tcp: bool, channel: int | None) -> None:
    cl, relay = await client(comp, "expiry", lifetime=3600, tcp=tcp)
    a = peer()
    try:
        await (bind(cl, a, channel) if channel else permit(cl, a))
        assert fw_routes(comp) == (1 if channel else 0)
        send_to(cl, a, b"live", channel)
        a.sendto(b"live down", relay)
        pump(comp)
        assert queued_datagrams(a) == [b"live"]
        assert payloads(cl) == [b"live down"]
        comp.tick(time.time() + 301)  # the permission is past its 300 s
        assert fw_routes(comp) == 0
        send_to(cl, a, b"stale up", channel)
        a.sendto(b"stale down", relay)
        pump(comp)
        assert queued_datagrams(a) == []
        assert payloads(cl) == []
        assert comp.stats()["relayed_packets"] == {"client_to_peer": 1, "peer_to_client": 1}
    finally:
        cl.close()
        a.close()


@CLIENTS
@PATHS
async def test_refresh_to_zero_removes_the_allocation_from_the_forwarder(
        comp: TurnComponent, tcp: bool, channel: int | None) -> None:
    cl, _relay = await client(comp, "zero", tcp=tcp)
    a = peer()
    try:
        await (bind(cl, a, channel) if channel else permit(cl, a))
        send_to(cl, a, b"before", channel)
        pump(comp)
        assert queued_datagrams(a) == [b"before"]
        resp = await asyncio.to_thread(cl.request, c.REFRESH, [(c.LIFETIME, c.uint32(0))])
        assert code(resp) == 200
        assert comp.engine.fw.slots == 0 and fw_routes(comp) == 0
        send_to(cl, a, b"after", channel)
        pump(comp)
        assert queued_datagrams(a) == []
        # counts made in C survive the allocation (settled before the totals are summed)
        assert comp.stats()["relayed_packets"]["client_to_peer"] == 1
        assert comp.stats()["relayed_bytes"]["client_to_peer"] == len(b"before")
    finally:
        cl.close()
        a.close()


@CLIENTS
async def test_expired_allocation_leaves_the_forwarder(comp: TurnComponent, tcp: bool) -> None:
    cl, _relay = await client(comp, "lapse", tcp=tcp)
    a = peer()
    try:
        await bind(cl, a, 0x4002)
        send_to(cl, a, b"x" * 10, 0x4002)
        pump(comp)
        comp.tick(time.time() + 601)  # default lifetime 600 s
        assert comp.stats()["allocations"] == 0
        assert comp.engine.fw.slots == 0 and fw_routes(comp) == 0
        send_to(cl, a, b"late", 0x4002)
        pump(comp)
        assert queued_datagrams(a) == [b"x" * 10]
        assert comp.stats()["relayed_bytes"]["client_to_peer"] == 10
    finally:
        cl.close()
        a.close()


@CLIENTS
async def test_channel_rebound_to_another_peer_forwards_only_to_the_new_one(
        comp: TurnComponent, tcp: bool) -> None:
    cl, relay = await client(comp, "rebind", lifetime=3600, tcp=tcp)
    a, b = peer(), peer()
    try:
        await bind(cl, a, 0x4003)
        comp.tick(time.time() + 601)  # channel (600 s) and permission (300 s) expire
        await bind(cl, b, 0x4003)  # the same number, now to b
        assert fw_routes(comp) == 1
        send_to(cl, b, b"for b", 0x4003)
        a.sendto(b"from a", relay)  # no permission any more: dropped
        b.sendto(b"from b", relay)
        pump(comp)
        assert queued_datagrams(a) == []
        assert queued_datagrams(b) == [b"for b"]
        assert channel_payloads(cl) == [b"from b"]
    finally:
        cl.close()
        a.close()
        b.close()


@CLIENTS
@PATHS
async def test_max_rate_drops_on_the_native_path(tcp: bool, channel: int | None) -> None:
    comp = await start(max_rate=100)  # burst = max(rate, 64 KiB): 65 datagrams of 1000 B
    cl, relay = await client(comp, "rate", tcp=tcp)
    a = peer()
    try:
        cl.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        await (bind(cl, a, channel) if channel else permit(cl, a))
        for _ in range(100):
            send_to(cl, a, bytes(1000), channel)
            a.sendto(bytes(1000), relay)
        pump(comp)  # synchronous: no tick (no refill) in between
        assert len(queued_datagrams(a)) == 65
        assert len(payloads(cl)) == 65
        snap = comp.stats()
        assert snap["relayed_packets"] == {"client_to_peer": 65, "peer_to_client": 65}
        # the Python buckets were charged for what C forwarded: the slow path is limited too
        al = next(iter(comp.server.allocations.values()))
        assert al.up is not None and al.up.tokens < 1000
    finally:
        cl.close()
        a.close()
        await comp.stop()


async def test_tcp_close_deletes_the_allocation_and_its_relay_in_c(comp: TurnComponent) -> None:
    cl, _relay = await client(comp, "bye", tcp=True)
    a = peer()
    await bind(cl, a, 0x4004)
    assert comp.engine.fw.streams == 1 and comp.engine.fw.slots == 1
    cl.close()
    for _ in range(50):
        pump(comp)
        if comp.stats()["allocations"] == 0:
            break
        await asyncio.sleep(0.01)
    snap = comp.stats()
    assert snap["allocations"] == 0 and snap["tcp_connections"] == 0
    assert comp.engine.fw.streams == 0 and comp.engine.fw.slots == 0 and fw_routes(comp) == 0
    a.close()


async def test_the_started_log_says_which_engine_runs() -> None:
    """TURN_NATIVE_FORWARDING picks the UDP engine; the start log names the one running (and
    would warn had the C forwarder been asked for but not built)."""
    from structlog.testing import capture_logs

    for wanted, engine in ((True, "native"), (False, "event-loop")):
        with capture_logs() as logs:
            comp = TurnComponent(settings(), (SECRET,), native_forwarding=wanted)
            await comp.start()
            try:
                assert isinstance(comp.engine, NativeEngine) is wanted
            finally:
                await comp.stop()
        started = [e for e in logs if e["event"] == "turn_started"]
        assert started and started[0]["udp_io"] == engine, logs
        assert not [e for e in logs if e["event"] == "turn_native_forwarding_unavailable"]


async def test_a_stopped_component_is_not_kept_alive_by_the_metrics() -> None:
    """The /metrics collector tracks servers weakly; the C forwarder's settle hook must not
    turn that into a strong reference (a stopped server reported, and leaked, for ever)."""
    import gc
    import weakref

    comp = await start()
    server = weakref.ref(comp.server)
    await comp.stop()
    del comp
    gc.collect()
    assert server() is None


def signed_request(cl: StunClient, method: int, attrs: list[tuple[int, bytes]]) -> bytes:
    """A request signed with ``cl``'s credential and current nonce, built without waiting
    for an answer (so several can be queued before the server reads any)."""
    txid = os.urandom(12)
    return c.encode(method, c.REQUEST, txid, [
        *(a(txid) if callable(a) else a for a in attrs),
        (c.USERNAME, cl.username.encode()), (c.REALM, b"metadata-relay"),
        (c.NONCE, cl.nonce.encode())], key=cl.key, fingerprint=True)


def data_indications(cl: StunClient) -> list[bytes]:
    out = []
    for f in client_frames(cl):
        msg = c.parse(f)
        if msg is not None and (msg.method, msg.cls) == (c.DATA, c.INDICATION):
            out.append(msg.attrs[c.DATA_ATTR])
    return out


async def test_datagrams_of_a_closed_allocation_never_reach_the_one_reusing_its_fd(
        comp: TurnComponent) -> None:
    """Issue 13 #3: in one wake-up, A's Refresh to 0 closes its relay socket, B's Allocate
    gets the same fd from the kernel, and A's peer datagrams read in that wake-up (handed
    back to Python as Data indications) must not go to B's client."""
    assert isinstance(comp.engine, NativeEngine)
    p = peer()
    port = comp.settings.TURN_PORT
    attempts, reused, leaked = 40, 0, []
    try:
        for attempt in range(attempts):
            a, relay_a = await client(comp, f"racea{attempt}")
            resp = await asyncio.to_thread(a.peer_request, c.CREATE_PERMISSION, p.getsockname())
            assert code(resp) == 200
            b = StunClient(port, user=f"raceb{attempt}")
            assert code(await asyncio.to_thread(b.request, c.REFRESH, [])) == 437  # a nonce
            a_fds = set(comp.engine.relays)
            # queued before the server reads any of it: the listener first, then A's relay
            a.send(signed_request(a, c.REFRESH, [(c.LIFETIME, c.uint32(0))]))
            b.send(signed_request(b, c.ALLOCATE, [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0")]))
            b.send(signed_request(b, c.CREATE_PERMISSION, [
                lambda txid: (c.XOR_PEER_ADDRESS, c.xor_address(*p.getsockname(), txid))]))
            for i in range(8):
                p.sendto(b"for A %d %d" % (attempt, i), relay_a)
            pump(comp)
            assert len(comp.server.allocations) == 1
            reused += bool(a_fds & set(comp.engine.relays))
            leaked += data_indications(b)
            a.close()
            assert code(await asyncio.to_thread(b.request, c.REFRESH,
                                                [(c.LIFETIME, c.uint32(0))])) == 200
            b.close()
        assert leaked == []
        assert reused >= attempts // 2, reused  # the race was really run
    finally:
        p.close()
