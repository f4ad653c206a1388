from __future__ import annotations

import base64
import json
import re

from hypothesis import given
from hypothesis import strategies as st

from metadata_relay.config import load_settings
from metadata_relay.pairing import protocol
from metadata_relay.pairing.ice import IceServers
from metadata_relay.pairing.service import enrich


def test_parse() -> None:
    assert protocol.parse('{"type":"ping"}') == {"type": "ping"}
    for bad in ("", "null", "[]", '{"type":1}', "{", '"x"', b"\xff\xfe", None, "[" * 10000):
        assert protocol.parse(bad) is None


@given(st.binary(max_size=100) | st.text(max_size=100))
def test_parse_never_raises(data: bytes | str) -> None:
    msg = protocol.parse(data)
    assert msg is None or isinstance(msg["type"], str)


def test_session_id_shape() -> None:
    ids = {protocol.new_session_id() for _ in range(200)}
    assert len(ids) == 200
    for sid in ids:
        assert len(sid) == 22
        assert len(base64.urlsafe_b64decode(sid + "==")) == 16


def test_public_key() -> None:
    raw = bytes(range(32))
    assert protocol.public_key(base64.b64encode(raw).decode()) == raw
    assert protocol.public_key(base64.b64encode(raw).decode().rstrip("=")) == raw
    assert protocol.public_key(base64.urlsafe_b64encode(raw).decode()) == raw
    for bad in (None, 5, "", "abc", base64.b64encode(b"x" * 31).decode(), "!" * 44):
        assert protocol.public_key(bad) is None


def test_negotiate() -> None:
    assert protocol.negotiate(None) == "1.0"
    assert protocol.negotiate({}) == "1.0"
    assert protocol.negotiate({"relay_protocol": ["1.0"]}) == "1.0"
    assert protocol.negotiate({"relay_protocol": ["1.3", "2.0"]}) == "1.0"
    assert protocol.negotiate({"relay_protocol": ["2.0"]}) is None
    assert protocol.negotiate({"relay_protocol": 1}) is None
    assert protocol.negotiate("1.0") is None


def test_direct_urls() -> None:
    assert protocol.direct_urls(None, missing=[]) == []
    assert protocol.direct_urls(["https://a", "https://a"]) == ["https://a"]
    assert protocol.direct_urls(["ftp://a"]) is None
    assert protocol.direct_urls("https://a") is None


def test_enrich() -> None:
    urls = ["https://10.0.0.2:4443", "http://x"]
    assert enrich(urls, "81.2.69.160") == [*urls, "https://81-2-69-160.sslip.io:4443"]
    assert enrich(["https://h"], "81.2.69.160") == [
        "https://h", "https://81-2-69-160.sslip.io:443"]
    assert enrich([], "81.2.69.160") == ["https://81-2-69-160.sslip.io:443"]
    for private in ("10.1.2.3", "192.168.1.1", "172.16.0.1", "127.0.0.1", "169.254.1.1",
                    "2001:4860::1", None, "garbage"):
        assert enrich(urls, private) == urls
    # already present: not duplicated
    full = [*urls, "https://81-2-69-160.sslip.io:4443"]
    assert enrich(full, "81.2.69.160") == full


def test_ice_servers_variants() -> None:
    base = {"TURN_PUBLIC_IP": "203.0.113.9", "TURN_PORT": "3479"}
    ice = IceServers(load_settings(base), "sec").for_session("S", 1000.0)
    assert ice[0]["urls"] == ["turn:203.0.113.9:3479", "turn:203.0.113.9:3479?transport=tcp"]
    assert ice[0]["username"] == "87400:S"
    assert ice[1] == {"urls": "stun:203.0.113.9:3479"}
    ext = IceServers(load_settings({**base, "TURN_URI": "turn:coturn.example:3478"}), "sec")
    ice = ext.for_session("S", 0.0)
    assert ice[0]["urls"] == [
        "turn:coturn.example:3478", "turn:coturn.example:3478?transport=tcp"]
    off = IceServers(load_settings({**base, "TURN_ENABLED": "false"}), "sec")
    assert off.for_session("S", 0.0) == [{"urls": "stun:stun.l.google.com:19302"}]
    ext_off = IceServers(load_settings({**base, "TURN_ENABLED": "false",
                                        "TURN_URI": "turn:coturn.example:3478"}), "sec")
    ice = ext_off.for_session("S", 0.0)
    assert ice[0]["username"] == "86400:S" and ice[1] == {"urls": "stun:coturn.example:3478"}


def test_b64_payload_is_json_safe() -> None:
    good = base64.b64encode(bytes(range(256))).decode()
    assert protocol.b64_payload(good) and protocol.b64_payload("")
    assert protocol.b64_payload(base64.urlsafe_b64encode(b"\xff\xfe").decode())
    for bad in ('a"b', "a\\b", "ab\n", "é", None, 5, ["x"], "a=b"):
        assert not protocol.b64_payload(bad)
    frame = protocol.relay_message_frame("sid", good)
    assert json.loads(frame) == {"type": "relay_message", "session_id": "sid", "payload": good}
    assert json.loads(protocol.message_frame(good)) == {"type": "message", "payload": good}


_B64_GRAMMAR = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


@given(st.one_of(
    st.text(alphabet="AZaz09+/_-=\"\\ é\n\x00", max_size=12),
    st.text(max_size=12),
))
def test_b64_payload_accepts_exactly_the_base64_grammar(value: str) -> None:
    """The translate-based check accepts the same strings as the grammar it replaced."""
    assert protocol.b64_payload(value) == (_B64_GRAMMAR.fullmatch(value) is not None)
    if protocol.b64_payload(value):
        assert json.loads(protocol.message_frame(value))["payload"] == value
