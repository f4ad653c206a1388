"""The C forwarder (``metadata_relay.turn._forward``) through its Python API, on real loopback
UDP sockets: forwarding both ways, what goes back to Python, route replacement, buckets,
counters, argument validation, IPv6, and hypothesis garbage into the listener drain."""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from metadata_relay.turn import codec as c
from metadata_relay.turn import native
from tests.tools import queued_datagrams, require_native


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native()


def udp(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


def sa(family: int, addr: Any) -> bytes:
    return native.sockaddr(family, addr[0], addr[1])


class Rig:
    """listener + relay sockets on one epoll set (as the edge has them), a client and a
    peer, and a Forwarder with the client's allocation open on the relay socket."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener, self.relay = udp(host), udp(host)
        self.client, self.peer = udp(host), udp(host)
        self.client.connect(self.listener.getsockname())
        self.ep = select.epoll()
        self.ep.register(self.listener.fileno(), select.EPOLLIN)
        self.ep.register(self.relay.fileno(), select.EPOLLIN)
        assert native.Forwarder is not None
        self.fw = native.Forwarder(self.ep.fileno())
        self.fw.listen(self.listener.fileno())
        self.handle = self.fw.open(self.relay.fileno(), self.listener.fileno(),
                                   sa(self.family, self.client.getsockname()))

    def bind(self, channel: int = 0x4000, peer: socket.socket | None = None,
             perms: list[tuple[bytes, int, int]] | None = None) -> None:
        p = peer or self.peer
        self.fw.set_routes(self.handle, [(channel, sa(self.family, p.getsockname()))],
                           perms or [])

    def permit(self, *peers: socket.socket, lo: int = 0, hi: int = 65535) -> None:
        """Permissions (no channel) for the peers' IPs."""
        self.fw.set_routes(self.handle, [], [
            (socket.inet_pton(self.family, p.getsockname()[0]), lo, hi) for p in peers])

    def poll(self) -> list[Any]:
        self.ep.poll(1)  # what is sent on loopback is queued by now; this just waits for it
        return self.fw.poll() or []

    def close(self) -> None:
        self.ep.close()
        for s in (self.listener, self.relay, self.client, self.peer):
            s.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_bound_channel_is_forwarded_both_ways_and_counted(rig: Rig) -> None:
    rig.bind(0x4001)
    assert rig.fw.routes == 1 and rig.fw.slots == 1
    rig.client.send(c.channel_data(0x4001, b"hello peer"))
    assert rig.poll() == []
    assert queued_datagrams(rig.peer) == [b"hello peer"]
    rig.peer.sendto(b"hello client", rig.relay.getsockname())
    assert rig.poll() == []
    assert queued_datagrams(rig.client) == [c.channel_data(0x4001, b"hello client")]
    assert rig.fw.pull(rig.handle) == (1, 10, 1, 12)
    assert rig.fw.pull(rig.handle) == (0, 0, 0, 0)  # pulled counts are gone from C


def test_padding_after_the_payload_is_not_forwarded(rig: Rig) -> None:
    rig.bind()
    rig.client.send(c.channel_data(0x4000, b"abc") + b"\0" * 5)
    rig.poll()
    assert queued_datagrams(rig.peer) == [b"abc"]


def test_misses_stun_and_unrouted_peers_go_back_to_python(rig: Rig) -> None:
    rig.bind(0x4000)
    stun = c.encode(c.BINDING, c.REQUEST, b"t" * 12, [])
    rig.client.send(stun)
    rig.client.send(c.channel_data(0x4002, b"other channel"))
    other = udp("127.0.0.1")
    other.sendto(b"not bound", rig.relay.getsockname())
    back = rig.poll()
    raw_client = rig.client.getsockname()
    by_fd = {(fd, handle, data) for fd, handle, data, _k, _r in back}
    assert by_fd == {(rig.listener.fileno(), 0, stun),
                     (rig.listener.fileno(), 0, c.channel_data(0x4002, b"other channel")),
                     (rig.relay.fileno(), rig.handle, b"not bound")}
    for fd, _h, _data, key, raw in back:
        assert isinstance(raw, bytes)
        expected = raw_client if fd == rig.listener.fileno() else other.getsockname()
        assert native.address(raw) == expected
        assert key == int.from_bytes(raw[:8], sys.byteorder)  # the IPv4 key
    assert queued_datagrams(rig.peer) == [] and queued_datagrams(rig.client) == []
    assert rig.fw.pull(rig.handle) == (0, 0, 0, 0)
    other.close()


def test_replaced_and_cleared_routes_stop_forwarding_at_once(rig: Rig) -> None:
    second = udp("127.0.0.1")
    rig.bind(0x4000)
    rig.bind(0x4000, second)  # rebound to another peer: the old route is gone
    rig.client.send(c.channel_data(0x4000, b"to second"))
    rig.peer.sendto(b"from old peer", rig.relay.getsockname())
    back = rig.poll()
    assert queued_datagrams(second) == [b"to second"] and queued_datagrams(rig.peer) == []
    assert [d for _f, _h, d, _k, _r in back] == [b"from old peer"]  # Python decides
    rig.fw.set_routes(rig.handle, [], [])
    assert rig.fw.routes == 0
    rig.client.send(c.channel_data(0x4000, b"stale"))
    assert [d for _f, _h, d, _k, _r in rig.poll()] == [c.channel_data(0x4000, b"stale")]
    assert queued_datagrams(second) == []
    second.close()


def test_closed_slot_forgets_routes_and_fd(rig: Rig) -> None:
    rig.bind()
    rig.client.send(c.channel_data(0x4000, b"x"))
    rig.poll()
    assert queued_datagrams(rig.peer) == [b"x"]
    assert rig.fw.close(rig.handle) == (1, 1, 0, 0)  # the last counts, settled on close
    assert rig.fw.routes == 0 and rig.fw.slots == 0
    rig.client.send(c.channel_data(0x4000, b"after close"))
    rig.peer.sendto(b"to a closed relay", rig.relay.getsockname())
    back = rig.poll()
    assert (rig.listener.fileno(), 0, c.channel_data(0x4000, b"after close")) in {
        (f, h, d) for f, h, d, _k, _r in back}
    assert (rig.relay.fileno(), 0, None, None, None) in back  # an fd it does not know
    assert queued_datagrams(rig.peer) == []
    with pytest.raises(KeyError):
        rig.fw.pull(rig.handle)


def test_a_reopened_slot_and_fd_get_a_new_handle(rig: Rig) -> None:
    """Slots and fds are reused; handles are not: a handle from before a close (and a
    datagram handed back with it) never matches the allocation opened after it."""
    client = sa(rig.family, rig.client.getsockname())
    rig.peer.sendto(b"read for the first", rig.relay.getsockname())
    [(fd, first, data, _k, _r)] = rig.poll()
    assert (fd, first, data) == (rig.relay.fileno(), rig.handle, b"read for the first")
    rig.fw.close(rig.handle)
    second = rig.fw.open(rig.relay.fileno(), rig.listener.fileno(), client)  # same fd, slot
    assert second != first and rig.fw.slots == 1
    for call in (rig.fw.pull, rig.fw.close):
        with pytest.raises(KeyError):
            call(first)
    with pytest.raises(KeyError):
        rig.fw.set_routes(first, [], [])
    rig.peer.sendto(b"read for the second", rig.relay.getsockname())
    assert [h for _f, h, _d, _k, _r in rig.poll()] == [second]
    rig.fw.close(second)


def test_buckets_drop_on_the_fast_path_both_ways(rig: Rig) -> None:
    rig.bind()
    rig.fw.set_tokens(rig.handle, 250.0, 250.0)
    for _ in range(3):
        rig.client.send(c.channel_data(0x4000, b"u" * 100))
        rig.peer.sendto(b"d" * 100, rig.relay.getsockname())
    assert rig.poll() == []  # dropped, not handed to Python
    assert queued_datagrams(rig.peer) == [b"u" * 100] * 2
    assert len(queued_datagrams(rig.client)) == 2
    assert rig.fw.pull(rig.handle) == (2, 200, 2, 200)
    rig.fw.set_tokens(rig.handle, None, None)  # unlimited again
    for _ in range(3):
        rig.client.send(c.channel_data(0x4000, b"u" * 100))
    rig.poll()
    assert len(queued_datagrams(rig.peer)) == 3


def test_datagrams_too_big_for_a_frame_go_back_to_python(rig: Rig) -> None:
    rig.bind()
    rig.relay.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rig.peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    big = bytes(native_max_udp() - 3)
    rig.peer.sendto(big, rig.relay.getsockname())
    rig.peer.sendto(b"small", rig.relay.getsockname())
    back = rig.poll()
    assert [len(d) for _f, _h, d, _k, _r in back] == [len(big)]
    assert queued_datagrams(rig.client) == [c.channel_data(0x4000, b"small")]


def native_max_udp() -> int:
    from metadata_relay.turn import _forward

    return _forward.MAX_UDP


def test_ipv6_both_ways() -> None:
    rig = Rig("::1")
    try:
        rig.bind(0x4abc)
        rig.client.send(c.channel_data(0x4ABC, b"six up"))
        rig.peer.sendto(b"six down", rig.relay.getsockname())
        assert rig.poll() == []
        assert queued_datagrams(rig.peer) == [b"six up"]
        assert queued_datagrams(rig.client) == [c.channel_data(0x4ABC, b"six down")]
        rig.client.send(b"\x00\x01 not channel data")
        [(fd, handle, data, key, raw)] = rig.poll()
        assert (fd, handle) == (rig.listener.fileno(), 0)
        assert data == b"\x00\x01 not channel data"
        assert key == raw and len(raw) == 28  # IPv6: the raw sockaddr is the key
        assert native.address(raw)[1] == rig.client.getsockname()[1]
    finally:
        rig.close()


def test_bad_arguments_are_refused_and_keep_the_old_routes(rig: Rig) -> None:
    rig.bind(0x4000)
    fw = rig.fw
    peer = sa(rig.family, rig.peer.getsockname())
    for bad in ([(0x3FFF, peer)], [(0x8000, peer)], [(0x4000, b"short")],
                [(0x4000, b"\xff\xff" + bytes(14))], [("x", peer)], [(0x4000,)], None):
        with pytest.raises((ValueError, TypeError)):
            fw.set_routes(rig.handle, bad, [])  # type: ignore[arg-type]
    for perms in ([(bytes(16), 0, 1)], [(bytes(4), 5, 4)], [(bytes(4), -1, 4)],
                  [(bytes(4), 0, 65536)], [(b"ip", 0, 1)], [(bytes(4),)], None):
        with pytest.raises((ValueError, TypeError)):
            fw.set_routes(rig.handle, [(0x4001, peer)], perms)  # type: ignore[arg-type]
    assert fw.routes == 1
    lfd, client = rig.listener.fileno(), sa(rig.family, rig.client.getsockname())
    other = udp("127.0.0.1")
    with pytest.raises(ValueError):
        fw.open(rig.relay.fileno(), lfd, client)  # already open
    with pytest.raises(ValueError):
        fw.open(other.fileno(), lfd, client)  # this client already has an allocation
    with pytest.raises(ValueError):
        fw.open(rig.listener.fileno(), lfd, client)
    with pytest.raises(ValueError):
        fw.open(-1, lfd, client)
    with pytest.raises(ValueError):
        fw.open(other.fileno(), rig.relay.fileno(), client)  # not a listener
    with pytest.raises(ValueError):
        fw.open(999, lfd, b"\x02\x00" + bytes(2))
    with pytest.raises(ValueError):  # a partner of the same family
        fw.open(other.fileno(), lfd, client, rig.handle)
    with pytest.raises(KeyError):
        fw.open(other.fileno(), lfd, client, rig.handle + 1)
    other.close()
    for handle in (-1, 0, 1, rig.handle + 1, rig.handle + (1 << 24), 10**30):
        with pytest.raises(KeyError):
            fw.set_tokens(handle, 1.0, 1.0)
    with pytest.raises(TypeError):
        fw.set_tokens(rig.handle, "1", 1.0)
    rig.client.send(c.channel_data(0x4000, b"still routed"))
    rig.poll()
    assert queued_datagrams(rig.peer) == [b"still routed"]


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=120),  # garbage, may look like anything
    st.binary(max_size=60).map(lambda b: c.channel_data(0x4000, b)),  # routed
    st.builds(lambda n, tail: b"\x40\x00" + n.to_bytes(2, "big") + tail,
              st.integers(0, 0xFFFF), st.binary(max_size=20)),  # any length field
), max_size=100))
def test_garbage_into_the_listener_never_crashes_and_goes_to_python(data: list[bytes]) -> None:
    rig = Rig()
    try:
        rig.bind(0x4000)
        for d in data:
            rig.client.send(d)
        back = rig.poll() if data else []  # one poll drains up to 4 x 64 datagrams
        forwarded, returned = [], []
        for d in data:
            if len(d) >= 4 and d[:2] == b"\x40\x00":
                n = int.from_bytes(d[2:4], "big")
                if n + 4 <= len(d):
                    forwarded.append(d[4 : 4 + n])
                continue  # a routed channel with a bad length: dropped in C
            if d:
                returned.append(d)
        assert queued_datagrams(rig.peer) == forwarded
        assert [d for _f, _h, d, _k, _r in back] == returned
        assert rig.fw.pull(rig.handle)[:2] == (len(forwarded), sum(map(len, forwarded)))
    finally:
        rig.close()
