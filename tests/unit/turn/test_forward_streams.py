"""The C forwarder's TCP client legs on real loopback sockets: ChannelData framed on the
stream (4-byte padding, frames split across reads, several per read) and Send indications
forwarded; STUN and unrouted frames handed back whole and in order; peer data written back
as padded ChannelData or Data indications through one output buffer with Python's writes;
garbage and EOF reported once as a closed stream."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from metadata_relay.turn import codec as c
from metadata_relay.turn import native
from tests.tools import queued_datagrams, require_native
from tests.unit.turn.test_forward import sa, udp
from tests.unit.turn.test_forward_indications import send_indication


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native()


class StreamRig:
    """A TCP client connected to an accepted socket attached to a Forwarder, the allocation's
    relay socket and a peer, all on one epoll set."""

    def __init__(self, initial: bytes = b"", before: bytes = b"") -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.client = socket.create_connection(listener.getsockname())
        if before:
            self.client.sendall(before)
        self.conn, _ = listener.accept()
        listener.close()
        self.conn.setblocking(False)
        self.client.settimeout(3)
        self.relay, self.peer = udp("127.0.0.1"), udp("127.0.0.1")
        self.ep = select.epoll()
        assert native.Forwarder is not None
        self.fw = native.Forwarder(self.ep.fileno())
        self.stream = self.fw.attach(self.conn.fileno(), initial)
        self.ep.register(self.conn.fileno(), select.EPOLLIN)
        self.ep.register(self.relay.fileno(), select.EPOLLIN)
        self.handle = self.fw.open_stream(self.relay.fileno(), self.stream)
        self.buf = b""

    def route(self, channel: int = 0x4000, permit: bool = True) -> None:
        perms = [(socket.inet_aton("127.0.0.1"), 0, 65535)] if permit else []
        self.fw.set_routes(self.handle, [(channel, sa(socket.AF_INET, self.peer.getsockname()))],
                           perms)

    def poll(self) -> list[Any]:
        """Polls of the forwarder until nothing is ready (what was sent on loopback is
        queued at once: the first wait returns at once unless nothing was sent)."""
        out: list[Any] = []
        self.ep.poll(0.2)
        for _ in range(8):
            out += self.fw.poll() or []
            if not self.ep.poll(0):
                break
        return out

    def frames(self, count: int) -> list[bytes]:
        """The next ``count`` frames the client receives on the stream."""
        out = []
        while len(out) < count:
            n = c.stream_frame_length(self.buf)
            if n is not None and n > 0 and len(self.buf) >= n:
                out.append(self.buf[:n])
                self.buf = self.buf[n:]
                continue
            chunk = self.client.recv(65536)
            assert chunk, "stream closed"
            self.buf += chunk
        return out

    def close(self) -> None:
        self.ep.close()
        for s in (self.client, self.conn, self.relay, self.peer):
            s.close()


@pytest.fixture
def rig() -> Iterator[StreamRig]:
    r = StreamRig()
    yield r
    r.close()


def binding() -> bytes:
    return c.encode(c.BINDING, c.REQUEST, os.urandom(12), fingerprint=True)


def test_frames_split_byte_by_byte_and_coalesced(rig: StreamRig) -> None:
    rig.route(0x4001)
    stun = binding()
    frames = [c.channel_data(0x4001, p, pad=True) for p in (b"a", b"bbbbb", b"cccc", b"")]
    stream = frames[0] + stun + b"".join(frames[1:]) + c.channel_data(0x4002, b"unbound", pad=True)
    handed: list[bytes] = []
    for b in stream:  # one byte per read
        rig.client.send(bytes([b]))
        handed += [d for _f, _h, d, _k, _r in rig.poll()]
    assert handed == [stun, c.channel_data(0x4002, b"unbound", pad=True)]
    assert queued_datagrams(rig.peer) == [b"a", b"bbbbb", b"cccc", b""]
    rig.client.sendall(stream * 3)  # many frames per read
    back = rig.poll()
    assert [(f, h) for f, h, _d, _k, _r in back] == [(rig.conn.fileno(), rig.stream)] * 6
    assert [d for _f, _h, d, _k, _r in back] == [stun, stream[-12:]] * 3
    assert queued_datagrams(rig.peer) == [b"a", b"bbbbb", b"cccc", b""] * 3
    assert rig.fw.pull(rig.handle) == (16, 40, 0, 0)


def test_send_indications_on_the_stream(rig: StreamRig) -> None:
    rig.route()
    rig.client.sendall(send_indication(rig.peer.getsockname(), b"via send", fingerprint=True)
                       + send_indication(("127.0.0.2", 1), b"no permission"))
    back = rig.poll()
    assert queued_datagrams(rig.peer) == [b"via send"]
    assert len(back) == 1 and c.parse(back[0][2]) is not None


def test_peer_data_comes_back_padded_and_as_data_indications(rig: StreamRig) -> None:
    rig.route(0x4abc)
    other = udp("127.0.0.1")  # same IP, no channel: a Data indication
    for i in range(5):
        rig.peer.sendto(b"x" * i, rig.relay.getsockname())
    other.sendto(b"odd", rig.relay.getsockname())
    assert rig.poll() == []
    frames = rig.frames(6)
    assert frames[:5] == [c.channel_data(0x4ABC, b"x" * i, pad=True) for i in range(5)]
    msg = c.parse(frames[5])
    assert msg is not None and msg.attrs[c.DATA_ATTR] == b"odd"
    assert frames[5] == c.data_indication(other.getsockname(), b"odd", msg.txid)
    assert rig.fw.pull(rig.handle) == (0, 0, 6, 13)
    assert rig.fw.backlog(rig.stream) == 0
    other.close()


def test_python_writes_share_the_stream_in_order(rig: StreamRig) -> None:
    rig.route()
    answer = c.encode(c.BINDING, c.SUCCESS, os.urandom(12))
    rig.peer.sendto(b"first", rig.relay.getsockname())
    rig.poll()
    assert rig.fw.write(rig.stream, answer) is True
    rig.peer.sendto(b"last", rig.relay.getsockname())
    rig.poll()
    assert rig.frames(3) == [c.channel_data(0x4000, b"first", pad=True), answer,
                             c.channel_data(0x4000, b"last", pad=True)]


def test_a_client_that_does_not_read_loses_peer_data_not_the_stream(rig: StreamRig) -> None:
    from metadata_relay.turn._forward import STREAM_BACKLOG

    rig.route()
    rig.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    rig.conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    rig.relay.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sent = 0
    for _ in range(12):
        for _ in range(60):
            rig.peer.sendto(bytes(1200), rig.relay.getsockname())
            sent += 1
        rig.poll()
    backlog = rig.fw.backlog(rig.stream)
    assert STREAM_BACKLOG < backlog <= STREAM_BACKLOG + 1204
    relayed = rig.fw.pull(rig.handle)[2]
    assert relayed < sent  # dropped over the backlog, uncounted
    # as the client reads, EPOLLOUT writes the backlog out: whole frames, in order
    while rig.fw.backlog(rig.stream) >= backlog:
        rig.ep.poll(0.01)
        rig.fw.poll()
        rig.buf += rig.client.recv(1 << 20)
    assert rig.frames(8) == [c.channel_data(0x4000, bytes(1200), pad=True)] * 8


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x02\x00\x01\x00\x01", b"\xff" * 8,
                                     b"\x00\x01\x00\x00\x00\x00\x00\x00", b"\x00\x01\x00\x02"])
def test_garbage_closes_the_stream_once(rig: StreamRig, garbage: bytes) -> None:
    rig.route()
    rig.client.sendall(c.channel_data(0x4000, b"before", pad=True) + garbage
                       + c.channel_data(0x4000, b"after", pad=True))
    back = rig.poll()
    assert back == [(rig.conn.fileno(), rig.stream, None, None, None)]
    assert queued_datagrams(rig.peer) == [b"before"]
    assert rig.fw.write(rig.stream, b"\x00") is False
    rig.fw.close(rig.handle)
    rig.fw.detach(rig.stream)
    assert rig.fw.streams == 0 and rig.fw.slots == 0
    with pytest.raises(KeyError):
        rig.fw.write(rig.stream, b"x")


def test_eof_closes_the_stream(rig: StreamRig) -> None:
    rig.client.sendall(binding()[:10])  # half a frame, then gone
    rig.client.shutdown(socket.SHUT_WR)
    back = rig.poll()
    assert back == [(rig.conn.fileno(), rig.stream, None, None, None)]


def test_bytes_attached_with_the_stream_are_framed_at_the_next_poll() -> None:
    stun = binding()
    first = c.channel_data(0x4000, b"early", pad=True)
    rig = StreamRig(initial=stun + first[:3])
    try:
        rig.route()
        rig.client.sendall(first[3:])
        back = rig.poll()
        assert [d for _f, _h, d, _k, _r in back] == [stun]
        assert queued_datagrams(rig.peer) == [b"early"]
    finally:
        rig.close()


def test_stale_handles_and_bad_arguments() -> None:
    rig = StreamRig()
    try:
        fw = rig.fw
        with pytest.raises(ValueError):
            fw.attach(rig.conn.fileno(), b"")  # already attached
        with pytest.raises(ValueError):
            fw.attach(rig.relay.fileno(), b"")  # a relay socket
        with pytest.raises(ValueError):
            fw.attach(-1, b"")
        with pytest.raises(ValueError):
            fw.attach(999, bytes(70000))  # more than a frame
        with pytest.raises(ValueError):
            fw.open_stream(udp("127.0.0.1").fileno(), rig.stream)  # has an allocation
        for bad in (rig.stream + 1, rig.handle, -1, 0, 10**30):
            with pytest.raises(KeyError):
                fw.write(bad, b"x")
        with pytest.raises(TypeError):
            fw.write("stream", b"x")  # type: ignore[arg-type]
        fw.close(rig.handle)
        fw.detach(rig.stream)
        with pytest.raises(KeyError):
            fw.open_stream(rig.relay.fileno(), rig.stream)  # detached
        again = fw.attach(rig.conn.fileno(), b"")  # same fd, new handle
        assert again != rig.stream
        with pytest.raises(KeyError):
            fw.backlog(rig.stream)
    finally:
        rig.close()


FRAMES = st.lists(st.one_of(
    st.binary(max_size=80).map(lambda b: ("routed", c.channel_data(0x4000, b, pad=True))),
    st.binary(max_size=80).map(lambda b: ("back", c.channel_data(0x4123, b, pad=True))),
    st.builds(lambda: ("back", binding())),
    st.binary(max_size=40).map(lambda b: ("sent", send_indication(("127.0.0.1", 0), b))),
), max_size=25)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=FRAMES, cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_any_split_of_any_frames_is_framed_like_python(
        frames: list[tuple[str, bytes]], cuts: list[int]) -> None:
    rig = StreamRig()
    try:
        rig.route()
        peer = rig.peer.getsockname()
        fixed = []
        for kind, frame in frames:  # the Send indications go to the peer
            if kind == "sent":
                msg = c.parse(frame)
                assert msg is not None
                frame = send_indication(peer, msg.attrs[c.DATA_ATTR])
            fixed.append((kind, frame))
        stream = b"".join(f for _k, f in fixed)
        handed: list[bytes] = []
        pos = 0
        for cut in [*sorted({min(cut, len(stream)) for cut in cuts}), len(stream)]:
            if cut > pos:
                rig.client.sendall(stream[pos:cut])
                pos = cut
                handed += [d for _f, _h, d, _k, _r in rig.poll()]
        assert handed == [f for k, f in fixed if k == "back"]
        expected = []
        for kind, frame in fixed:
            if kind == "routed":
                parsed = c.parse_channel_data(frame)
                assert parsed is not None
                expected.append(parsed[1])
            elif kind == "sent":
                msg = c.parse(frame)
                assert msg is not None
                expected.append(msg.attrs[c.DATA_ATTR])
        assert queued_datagrams(rig.peer) == expected
    finally:
        rig.close()
