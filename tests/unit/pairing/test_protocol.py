from __future__ import annotations

import base64
import collections
import json
import re
from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from metadata_relay.pairing import protocol


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
    for bad in (None, 5, "", "abc", base64.b64encode(b"x" * 31).decode(), "!" * 44,
                base64.b64encode(b"x" * 33).decode(), "A" * 500):
        assert protocol.public_key(bad) is None


def test_negotiate() -> None:
    assert protocol.negotiate(None) == "1.0"
    assert protocol.negotiate({}) == "1.0"
    assert protocol.negotiate({"relay_protocol": ["1.0"]}) == "1.0"
    assert protocol.negotiate({"relay_protocol": ["1.3", "2.0"]}) == "1.0"
    assert protocol.negotiate({"relay_protocol": ["1.0", "1.1"]}) == "1.1"
    assert protocol.negotiate({"relay_protocol": "1.1"}) == "1.1"
    assert protocol.negotiate({"relay_protocol": ["2.0"]}) is None
    assert protocol.negotiate({"relay_protocol": 1}) is None
    assert protocol.negotiate("1.0") is None


def test_direct_urls_repaired_never_refused() -> None:
    assert protocol.direct_urls(None) == ([], 0)
    assert protocol.direct_urls(["https://a", "https://a"]) == (["https://a"], 0)
    assert protocol.direct_urls([" https://a ", "b.example:4000"]) == (
        ["https://a", "https://b.example:4000"], 0)
    assert protocol.direct_urls(["ftp://a", "javascript:x", "", 5, "http://", "https://h:p",
                                 "https://a b"]) == ([], 7)
    assert protocol.direct_urls("https://a") == (["https://a"], 0)
    assert protocol.direct_urls({"a": 1}) == ([], 1)
    urls, dropped = protocol.direct_urls([f"https://h{i}" for i in range(40)])
    assert len(urls) == protocol.MAX_URLS == 32 and dropped == 8
    assert protocol.direct_urls(["https://" + "a" * 3000]) == ([], 1)


@given(st.lists(st.one_of(st.text(max_size=40), st.integers(), st.none()), max_size=50))
def test_direct_urls_keep_only_usable_urls(items: list[object]) -> None:
    urls, dropped = protocol.direct_urls(items)
    assert len(urls) <= protocol.MAX_URLS and len(set(urls)) == len(urls)
    assert len(urls) + dropped <= len(items)
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme in protocol.URL_SCHEMES and parts.hostname
        assert url == url.strip() and " " not in url


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


# --- tokens ---------------------------------------------------------------------------------

def test_token_roundtrip_and_rejections() -> None:
    t = protocol.sign_token("k", "inst-1", 1000.0)
    assert protocol.verify_token("k", t, 1000.0) == "inst-1"
    assert protocol.verify_token("k", t, 1000.0 + protocol.TOKEN_TTL - 1) == "inst-1"
    assert protocol.verify_token("k", t, 1000.0 + protocol.TOKEN_TTL) is None  # expired
    assert protocol.verify_token("other", t, 1000.0) is None  # other secret
    # tampering with the payload breaks the signature
    raw = base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
    evil = raw.replace(b"inst-1", b"inst-2")
    assert protocol.verify_token("k", base64.urlsafe_b64encode(evil).decode(), 1000.0) is None
    # ids containing dots are fine (split at the last dot)
    t2 = protocol.sign_token("k", "a.b.c", 5.0)
    assert protocol.verify_token("k", t2, 6.0) == "a.b.c"
    for bad in (None, 5, "", "x" * 5000):
        assert protocol.verify_token("k", bad, 0.0) is None


@given(st.text(max_size=300))
def test_token_garbage_never_verifies(garbage: str) -> None:
    assert protocol.verify_token("k", garbage, 0.0) is None


def test_bearer_header() -> None:
    assert protocol.bearer("Bearer abc") == "abc"
    assert protocol.bearer("bearer  abc ") == "abc"
    assert protocol.bearer("Basic abc") is None
    assert protocol.bearer("Bearer ") is None
    assert protocol.bearer(None) is None


# --- claim codes ----------------------------------------------------------------------------

def test_codes_use_alphabet_and_are_uniform() -> None:
    alphabet = protocol.CODE_ALPHABET
    assert len(alphabet) == 32 and len(set(alphabet)) == 32
    assert not set("IO01") & set(alphabet)
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(4000):
        code = protocol.new_code()
        assert len(code) == 8 and set(code) <= set(alphabet)
        counts.update(code)
    # 32,000 symbols over 32 letters: each ~1000; a biased generator would be far off
    assert all(800 < n < 1200 for n in counts.values()), counts
    assert len(counts) == 32


def test_normalise() -> None:
    assert protocol.normalise_code("abcd-efgh") == "ABCDEFGH"
    assert protocol.normalise_code(" ab cd\tef-gh ") == "ABCDEFGH"
    assert protocol.normalise_code("ABCDEFG") is None
    assert protocol.normalise_code("ABCDEFGHJ") is None
    assert protocol.normalise_code("ABCDEFG0") is None  # 0 is not in the alphabet
    assert protocol.normalise_code(12345678) is None
    assert protocol.normalise_code("A" * 100) is None
    assert protocol.redacted("ABCDEFGH") == "AB…"


@given(st.text(max_size=20))
def test_normalise_only_yields_valid_codes(raw: str) -> None:
    code = protocol.normalise_code(raw)
    assert code is None or (len(code) == 8 and set(code) <= set(protocol.CODE_ALPHABET))


def test_ttl_bounds() -> None:
    assert protocol.claim_ttl(None) == 300
    assert protocol.claim_ttl(10_000) == 600
    assert protocol.claim_ttl(60) == 60
    for bad in (0, -5, "300", True, [1]):
        assert protocol.claim_ttl(bad) is None


def test_node_addr_kept_as_given_within_its_bounds() -> None:
    for text in ('{"id":"ab","addrs":[{"Relay":"https://r.example/"}]}', ' { "x" : 1 } ',
                 '"just a string"', "1", "null", '{"a": "\\ud83d\\ude00 ü"}',
                 "[" * protocol.NODE_ADDR_MAX_DEPTH + "]" * protocol.NODE_ADDR_MAX_DEPTH,
                 json.dumps("x" * (protocol.NODE_ADDR_MAX_BYTES - 2))):
        assert protocol.node_addr(text) is text


def test_node_addr_refusals_say_why() -> None:
    limit = protocol.NODE_ADDR_MAX_BYTES
    depth = protocol.NODE_ADDR_MAX_DEPTH + 1
    cases = {
        None: "is required", 5: "must be a string", b"{}": "must be a string",
        "": "must be JSON", "{": "must be JSON", "NaN": "must be JSON",
        '[1, -Infinity]': "must be JSON", "{} {}": "must be JSON",
        json.dumps("x" * (limit - 1)): f"at most {limit} bytes",
        json.dumps("é" * (limit // 2)): f"at most {limit} bytes",  # UTF-8 bytes, not chars
        '"\ud800"': "valid UTF-8",
        "[" * depth + "]" * depth: f"at most {protocol.NODE_ADDR_MAX_DEPTH} deep",
        '{"a":' * depth + "1" + "}" * depth: "deep",
        "[" * 2000 + "]" * 2000: "must be JSON",  # past the parser's recursion limit
    }
    for value, reason in cases.items():
        try:
            protocol.node_addr(value)
        except protocol.InvalidNodeAddr as exc:
            assert reason in str(exc), (value, exc)
        else:
            raise AssertionError(f"accepted {value!r:.40}")


@given(st.text(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids,
                                                              max_size=3)).map(json.dumps))
def test_node_addr_answers_or_refuses_never_raises_otherwise(text: str) -> None:
    try:
        assert protocol.node_addr(text) == text
    except protocol.InvalidNodeAddr:
        pass
