"""Batched UDP I/O on Linux: ``recvmmsg``/``sendmmsg`` through ctypes on libc.

A :class:`Batch` is a preallocated ring of datagram slots (one bytearray of payload space, one
of socket addresses, one ``mmsghdr`` array each for receiving and sending) so a whole batch of
datagrams moves with one system call and no Python object per datagram beyond what the caller
slices out. Addresses stay raw ``sockaddr`` bytes: no ``inet_ntop`` and no tuple per datagram.

:func:`available` says whether the calls exist (Linux glibc/musl on a 64- or 32-bit ABI);
elsewhere the transport falls back to the event loop's datagram endpoints.
"""

from __future__ import annotations

import ctypes
import mmap
import socket
import sys
from typing import Any

MSG_TRUNC = 0x20
MSG_DONTWAIT = 0x40
SOCKADDR_SIZE = 28
"""Room for a ``sockaddr_in6``; a ``sockaddr_in`` uses the first 16 bytes."""
NAME_STRIDE = 32
"""Bytes between two addresses in a batch (8-aligned: ``name_q[i * 4]`` is the first 8 bytes
of address ``i``, i.e. family, port and IPv4 address)."""


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint32)]


HDR = ctypes.sizeof(_MMsgHdr)
IOV = ctypes.sizeof(_IoVec)
HDR_U32 = HDR // 4
HDR_PTRS = HDR // ctypes.sizeof(ctypes.c_void_p)
LEN_U32 = _MMsgHdr.len.offset // 4

_libc: Any = None
if sys.platform.startswith("linux"):
    try:
        # PyDLL: the calls keep the GIL (they never block: non-blocking sockets, MSG_DONTWAIT),
        # which saves releasing and re-taking it per call.
        _libc = ctypes.PyDLL(None)
        _recvmmsg = _libc.recvmmsg
        _sendmmsg = _libc.sendmmsg
    except (OSError, AttributeError):
        _libc = None
if _libc is not None:
    for _f in (_recvmmsg, _sendmmsg):
        _f.restype = ctypes.c_int
    _recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                          ctypes.c_void_p]
    _sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]


def available() -> bool:
    """recvmmsg/sendmmsg are there (and the hot path's byte-order assumptions hold)."""
    return _libc is not None and sys.byteorder == "little"


class Batch:
    """``size`` slots of ``slot`` bytes each. Received payloads land ``pad`` bytes into their
    slot (room for a ChannelData header when the slot is sent on as is). Receive and send
    headers share the payload space but have their own address arrays. One batch serves one
    address family (the kernel shrinks each received name length to its family's size)."""

    def __init__(self, size: int, slot: int, pad: int = 0) -> None:
        self.size = size
        self.slot = slot
        self.pad = pad
        # anonymous mapping: pages are only touched (resident) as far as datagrams fill them
        self.data = mmap.mmap(-1, size * slot)
        self.view = memoryview(self.data)
        self.rx_names = bytearray(size * NAME_STRIDE)
        self.tx_names = bytearray(size * NAME_STRIDE)
        self.rx_name_q = memoryview(self.rx_names).cast("Q")
        """``rx_name_q[i * 4]``: first 8 bytes of the address of received datagram ``i``."""
        self._keep: list[Any] = []
        self.rx, _ = self._headers(self.rx_names, pad, slot - pad)
        self.tx, tx_iovs = self._headers(self.tx_names, 0, 0)
        self.head_u32 = self.view.cast("I")
        """``head_u32[i * slot // 4]``: the first 4 payload bytes of slot ``i`` (native order)."""
        self.rx_u32 = memoryview(self.rx).cast("B").cast("I")
        """``rx_u32[i * HDR_U32 + LEN_U32]``: length of received datagram ``i``."""
        self.tx_len = memoryview(tx_iovs).cast("B").cast("Q" if IOV == 16 else "I")
        """``tx_len[2 * i + 1] = n``: length of outgoing datagram ``i`` (iovec.iov_len)."""
        self.tx_name = memoryview(self.tx).cast("B").cast("Q" if IOV == 16 else "I")
        """``tx_name[i * HDR_PTRS] = address``: where outgoing datagram ``i``'s destination
        ``sockaddr`` is (msg_name); by default its slot of :attr:`tx_names`."""
        base = ctypes.addressof(self.rx)
        tbase = ctypes.addressof(self.tx)
        # one prebuilt pointer per starting slot, so a call can start mid-batch
        self.rx_at = [ctypes.c_void_p(base + i * HDR) for i in range(size)]
        self.tx_at = [ctypes.c_void_p(tbase + i * HDR) for i in range(size)]

    def _headers(self, names: bytearray, offset: int, length: int) -> tuple[Any, Any]:
        """One mmsghdr array (and its iovecs) over the payload slots and ``names``."""
        n, slot = self.size, self.slot
        hdrs = (_MMsgHdr * n)()
        iovs = (_IoVec * n)()
        data = (ctypes.c_char * (self.size * slot)).from_buffer(self.data)
        cnames = (ctypes.c_char * len(names)).from_buffer(names)
        self._keep += [iovs, data, cnames]
        d0, n0 = ctypes.addressof(data), ctypes.addressof(cnames)
        for i in range(n):
            iovs[i].base = d0 + i * slot + offset
            iovs[i].len = length
            h = hdrs[i].hdr
            h.name = n0 + i * NAME_STRIDE
            h.namelen = SOCKADDR_SIZE
            h.iov = ctypes.addressof(iovs[i])
            h.iovlen = 1
        return hdrs, iovs

    def recv(self, fd: int, start: int, count: int) -> int:
        """Receive up to ``count`` datagrams into slots ``start``...; how many arrived (0 when
        none was waiting, or on an error). A datagram longer than its slot reports its full
        length (``MSG_TRUNC``), so the caller can tell and drop it."""
        n: int = _recvmmsg(fd, self.rx_at[start], count, MSG_DONTWAIT | MSG_TRUNC, None)
        return n if n > 0 else 0

    def send(self, fd: int, count: int) -> int:
        """Send slots 0..count-1 (lengths in :attr:`tx_len`, addresses in :attr:`tx_names`);
        how many went out. A full socket buffer or an error drops the rest, as UDP may."""
        sent = 0
        while sent < count:
            n: int = _sendmmsg(fd, self.tx_at[sent], count - sent, MSG_DONTWAIT)
            if n <= 0:
                return sent
            sent += n
        return sent


def sockaddr_to_address(raw: bytes) -> tuple[str, int]:
    """Raw ``sockaddr_in``/``sockaddr_in6`` bytes -> (host, port)."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


def address_to_sockaddr(family: int, host: str, port: int) -> bytes:
    """(host, port) -> raw ``sockaddr`` bytes as the kernel reports them for ``family``."""
    if family == socket.AF_INET6:
        return (family.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big") + bytes(4)
                + socket.inet_pton(socket.AF_INET6, host) + bytes(4))
    return (family.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
            + socket.inet_pton(socket.AF_INET, host) + bytes(8))
