"""http/wsframes.py against websockets' own frame codec (a client nobody here wrote)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from metadata_relay.http.wsframes import frame_at, text_frame, unmasked


def client_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True)


@given(st.binary(max_size=70000), st.sampled_from([Opcode.TEXT, Opcode.BINARY, Opcode.PING]))
def test_frames_split_and_unmasked_as_websockets_writes_them(data: bytes, op: Opcode) -> None:
    if op is Opcode.PING:
        data = data[:125]
    raw = client_frame(op, data)
    stream = raw + b"\x81"  # the next frame's first byte
    frame = frame_at(stream, 0)
    assert frame is not None
    first, masked, length, payload_at, end = frame
    assert masked and length == len(data)
    assert end == len(raw) and first == (0x80 | op.value)
    assert unmasked(stream, payload_at, end) == data


def test_incomplete_headers_wait() -> None:
    raw = client_frame(Opcode.TEXT, b"x" * 70000)
    for cut in range(14):
        assert frame_at(raw[:cut], 0) is None
    frame = frame_at(raw[:14], 0)
    assert frame is not None and frame[4] == len(raw)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 100000])
def test_server_text_frames_parse_in_websockets(size: int) -> None:
    data = os.urandom(size // 2).hex().encode()[:size]
    reader = StreamReader()
    reader.feed_data(text_frame(data))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    else:
        raise AssertionError("incomplete")
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == data
