"""Which peers a client may reach: deny list (on by default), allow list punching holes.

IPv4-mapped (``::ffff:a.b.c.d``) and IPv4-compatible (``::a.b.c.d``) IPv6 addresses are
checked in both forms, as written and unmapped (CVE-2026-27624). A peer equal to one of the
server's own relay addresses is allowed only on ports inside the relay range (relay-to-relay
between two clients of this server), whether or not that address is denied: its other ports
are the node's own services (with host networking: kubelet, flannel VXLAN, DNS). Only an
allow-list entry that names the address opens its other ports (the operator asked for it; the
loopback tests do).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_COMPAT = ipaddress.ip_network("::/96")


def parse(ip: str) -> IP | None:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None


def unmap(addr: IP) -> IP:
    """The IPv4 address inside an IPv4-mapped or IPv4-compatible IPv6 address, else itself."""
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return mapped
        if addr in _COMPAT and int(addr) > 1:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def normalise(ip: str) -> IP | None:
    addr = parse(ip)
    return None if addr is None else unmap(addr)


def _within(addr: IP, nets: tuple[Network, ...]) -> bool:
    return any(addr in net for net in nets if net.version == addr.version)


class PeerPolicy:
    def __init__(self, denied: Iterable[Network], allowed: Iterable[Network] = (),
                 own_ips: Iterable[str] = (), relay_ports: tuple[int, int] = (0, -1)) -> None:
        self.denied = tuple(denied)
        self.allowed = tuple(allowed)
        self.own = {a for a in (normalise(ip) for ip in own_ips) if a is not None}
        self.relay_ports = relay_ports

    def permits_ip(self, ip: str) -> bool:
        """May a permission (any port) be installed for ``ip``? Never for an own address.
        Denied when the address as written or its unmapped IPv4 form is in a denied range
        (``::ffff:8.8.8.8`` is: the deny list has ``::ffff:0:0/96``); allowed when either form
        is in an allowed one."""
        raw = parse(ip)
        if raw is None:
            return False
        addr = unmap(raw)
        if _within(addr, self.allowed) or _within(raw, self.allowed):
            return True
        if addr in self.own:
            return False
        return not (_within(addr, self.denied) or _within(raw, self.denied))

    def own_allowed(self) -> list[str]:
        """Own addresses the allow list opens on every port (worth a warning at start)."""
        return sorted(str(a) for a in self.own if _within(a, self.allowed))

    def is_own_relay(self, ip: str, port: int) -> bool:
        addr = normalise(ip)
        lo, hi = self.relay_ports
        return addr is not None and addr in self.own and lo <= port <= hi

    def permits(self, ip: str, port: int) -> bool:
        """May data go to ``(ip, port)``? An own address only on the relay range."""
        return self.permits_ip(ip) or self.is_own_relay(ip, port)
