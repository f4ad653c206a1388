"""The optional C forwarder (``_forward.c``) and the Python half of keeping it truthful.

Why it exists: on T1 the interpreter time of the per-datagram ChannelData loops was the whole
gap to coturn. The C module forwards ChannelData of bound channels both ways and nothing
else; this module is what the UDP edge (:mod:`metadata_relay.turn.batched`) uses to feed it:

* :func:`routes` turns an allocation's ``out_routes`` into the C table's form; the edge calls
  it from ``Allocation.observer``, i.e. on every rebuild the state machine makes, so a route
  never outlives its channel or permission, and from ``close`` when the allocation goes.
* :func:`settle` moves the packet/byte counts C made into ``Allocation.pk_out`` etc. (what
  ``/stats`` and ``/metrics`` read) and charges the bytes to the allocation's Python token
  buckets; :func:`seed` copies the buckets' balances back into C after the tick refilled them.
  Both paths thus draw on one balance, reconciled at every tick and every ``/stats`` read:
  over one tick (0.25 s) a client mixing ChannelData with Send indications can overdraw by at
  most one tick's worth, after which the debt blocks it; the long-run rate is exact.

:data:`Forwarder` is ``None`` when the extension is not built (no compiler at install time,
not Linux): the pure-Python batched path runs then, unchanged.
"""

from __future__ import annotations

from metadata_relay.turn import mmsg
from metadata_relay.turn.allocation import Allocation

try:
    from metadata_relay.turn._forward import Forwarder
except ImportError as exc:  # not built: the pure-Python path serves
    Forwarder = None  # type: ignore[assignment,misc]
    IMPORT_ERROR: str | None = str(exc)
else:
    IMPORT_ERROR = None


def available() -> bool:
    """The extension is importable and the batched edge it plugs into can run here."""
    return Forwarder is not None and mmsg.available()


def routes(al: Allocation, family: int) -> list[tuple[int, bytes]]:
    """``(channel, raw peer sockaddr)`` for every route of ``al`` (its live channels)."""
    out = []
    for number, (host, port) in al.out_routes.items():
        try:
            out.append((number, mmsg.address_to_sockaddr(family, host, port)))
        except (OSError, ValueError):
            continue  # not of the relay's family: unreachable from this socket anyway
    return out


def client_sockaddr(al: Allocation, family: int) -> bytes:
    return mmsg.address_to_sockaddr(family, al.client_addr[0], al.client_addr[1])


def settle(al: Allocation, counts: tuple[int, int, int, int]) -> None:
    """Add counts pulled from C (pk_out, by_out, pk_in, by_in) to ``al`` and its buckets."""
    pk_out, by_out, pk_in, by_in = counts
    if pk_out or pk_in:
        al.pk_out += pk_out
        al.by_out += by_out
        al.pk_in += pk_in
        al.by_in += by_in
        if al.up is not None and al.down is not None:
            al.up.tokens -= by_out
            al.down.tokens -= by_in


def seed(fw: Forwarder, handle: int, al: Allocation) -> None:
    """Give C the allocation's current bucket balances (None: unlimited)."""
    if al.up is not None and al.down is not None:
        fw.set_tokens(handle, al.up.tokens, al.down.tokens)
    else:
        fw.set_tokens(handle, None, None)


__all__ = ["IMPORT_ERROR", "Forwarder", "available", "client_sockaddr", "routes", "seed",
           "settle"]
