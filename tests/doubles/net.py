"""Loopback stand-ins for the outside world verify looks at: a DNS resolver (dnspython
builds the answers), a STUN server (aioice's STUN codec), and the relay's /health."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
from aiohttp import web
from aioice import stun


@dataclass
class FakeDns(asyncio.DatagramProtocol):
    """A recursive resolver's answers: A records, and CNAMEs answered with the chain (the
    CNAME, then the target's A records) as 1.1.1.1 does."""

    records: dict[str, list[str]] = field(default_factory=dict)
    cnames: dict[str, str] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text().rstrip(".")
        self.queries.append(name)
        response = dns.message.make_response(query)
        target = self.cnames.get(name)
        if target is not None:
            response.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "CNAME",
                                                       target + "."))
            name = target
        addrs = self.records.get(name)
        if addrs is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            response.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", *addrs))
        self.transport.sendto(response.to_wire(), addr)


@dataclass
class FakeStun(asyncio.DatagramProtocol):
    answering: bool = True
    requests: int = 0
    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        request = stun.parse_message(data)
        self.requests += 1
        if not self.answering or request.message_method != stun.Method.BINDING:
            return
        response = stun.Message(message_method=stun.Method.BINDING,
                                message_class=stun.Class.RESPONSE,
                                transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr[:2]
        self.transport.sendto(bytes(response), addr)


@dataclass
class FakeHealth:
    status: int = 200
    version: str = "0.1.0"
    hits: int = 0

    def app(self) -> web.Application:
        async def health(request: web.Request) -> web.Response:
            self.hits += 1
            return web.json_response({"status": "ok" if self.status == 200 else "degraded",
                                      "service": "metadata-relay", "version": self.version},
                                     status=self.status)

        app = web.Application()
        app.router.add_get("/health", health)
        return app
