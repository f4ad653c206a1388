"""DNS and STUN codecs against independent implementations (dnspython, aioice)."""

from __future__ import annotations

import os

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from relay_deploy import probes


def test_dns_query_is_what_dnspython_reads() -> None:
    wire = probes.encode_dns_query(0x1234, "relay.mydia.dev")
    msg = dns.message.from_wire(wire)
    assert msg.id == 0x1234
    assert msg.question[0].name.to_text() == "relay.mydia.dev."
    assert msg.question[0].rdtype == 1 and msg.flags & dns.flags.RD


def _response(txid: int, *addrs: str, rcode: int = 0, cname: bool = False) -> bytes:
    query = dns.message.from_wire(probes.encode_dns_query(txid, "relay.mydia.dev"))
    resp = dns.message.make_response(query)
    resp.set_rcode(rcode)
    if cname:
        resp.answer.append(dns.rrset.from_text("relay.mydia.dev.", 60, "IN", "CNAME",
                                               "edge.mydia.dev."))
    if addrs:
        name = "edge.mydia.dev." if cname else "relay.mydia.dev."
        resp.answer.append(dns.rrset.from_text(name, 60, "IN", "A", *addrs))
    return resp.to_wire()


def test_dns_answers_parsed() -> None:
    assert sorted(probes.parse_dns_answer(7, _response(7, "203.0.113.5", "203.0.113.6"))) == [
        "203.0.113.5", "203.0.113.6"]
    assert probes.parse_dns_answer(7, _response(7, "203.0.113.9", cname=True)) == [
        "203.0.113.9"]
    assert probes.parse_dns_answer(7, _response(7, rcode=dns.rcode.NXDOMAIN)) == []
    with pytest.raises(ValueError, match="rcode 2"):
        probes.parse_dns_answer(7, _response(7, rcode=dns.rcode.SERVFAIL))
    with pytest.raises(ValueError, match="not a response"):
        probes.parse_dns_answer(8, _response(7, "203.0.113.5"))


@given(st.binary(max_size=300))
def test_dns_garbage_only_raises_value_error(data: bytes) -> None:
    try:
        out = probes.parse_dns_answer(int.from_bytes(data[:2] or b"\0\0", "big"), data)
    except ValueError:
        return
    assert isinstance(out, list)


def test_stun_request_is_what_aioice_reads_and_answer_parsed() -> None:
    txid = os.urandom(12)
    request = stun.parse_message(probes.encode_binding_request(txid))
    assert request.message_method == stun.Method.BINDING
    assert request.message_class == stun.Class.REQUEST
    assert request.transaction_id == txid
    response = stun.Message(message_method=stun.Method.BINDING,
                            message_class=stun.Class.RESPONSE, transaction_id=txid)
    response.attributes["XOR-MAPPED-ADDRESS"] = ("198.51.100.7", 40000)
    response.attributes["SOFTWARE"] = "test"
    assert probes.parse_binding_response(txid, bytes(response)) == ("198.51.100.7", 40000)
    error = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.ERROR,
                         transaction_id=txid)
    with pytest.raises(ValueError, match="not a Binding success"):
        probes.parse_binding_response(txid, bytes(error))
    with pytest.raises(ValueError, match="not a response"):
        probes.parse_binding_response(os.urandom(12), bytes(response))


@given(st.binary(max_size=200))
def test_stun_garbage_only_raises_value_error(data: bytes) -> None:
    txid = data[8:20] if len(data) >= 20 else os.urandom(12)
    try:
        probes.parse_binding_response(txid, data)
    except ValueError:
        pass


def test_health_refuses_non_http_urls() -> None:
    with pytest.raises(OSError):
        probes.get_health("file:///etc/passwd")
