"""WebSocket framing (RFC 6455 §5.2), sans-I/O: where the next client frame ends, its text
unmasked, and a server text frame. Just what the relay lane (:mod:`.websocket`) needs; every
frame it does not take is left whole to ``websockets``."""

from __future__ import annotations

import struct

try:
    # the C version of websockets.utils.apply_mask, as websockets' own frame parser uses it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

FIN_TEXT = 0x81  # FIN, no RSV bits, opcode 1 (text)
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE = 0x0, 0x1, 0x2, 0x8

_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


Frame = tuple[int, bool, int, int, int]
"""(first byte: FIN, RSV and opcode; masked; payload length; offset of the payload (after the
masking key, if any); offset after the frame). A plain tuple: one per frame, on the hot path."""


def frame_at(buf: bytes | bytearray, pos: int) -> Frame | None:
    """The frame whose header starts at ``pos``, once its header is in ``buf`` (the payload
    may not be: compare ``end`` with ``len(buf)``); None while the header is incomplete."""
    size = len(buf)
    if size - pos < 2:
        return None
    b1 = buf[pos + 1]
    n = b1 & 0x7F
    at = pos + 2
    if n == 126:
        if size - pos < 4:
            return None
        n = (buf[pos + 2] << 8) | buf[pos + 3]
        at = pos + 4
    elif n == 127:
        if size - pos < 10:
            return None
        n = int.from_bytes(buf[pos + 2:pos + 10], "big")
        at = pos + 10
    masked = bool(b1 & 0x80)
    if masked:
        at += 4
        if at > size:
            return None
    return buf[pos], masked, n, at, at + n


def unmasked(buf: bytes | bytearray, payload_at: int, end: int) -> bytes:
    """The payload of a complete masked frame in ``buf`` (from :func:`frame_at`)."""
    return apply_mask(buf[payload_at:end], bytes(buf[payload_at - 4:payload_at]))


def text_frame(data: bytes) -> bytes:
    """A server text frame: FIN, opcode 1, unmasked (what websockets' ``send_text`` sends)."""
    n = len(data)
    if n < 126:
        head = bytes((FIN_TEXT, n))
    elif n < 65536:
        head = _pack_short(FIN_TEXT, 126, n)
    else:
        head = _pack_long(FIN_TEXT, 127, n)
    return head + data
