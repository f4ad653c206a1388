from __future__ import annotations

from metadata_relay.config import load_settings
from metadata_relay.pairing.service import IceServers, enrich


def test_enrich() -> None:
    urls = ["https://10.0.0.2:4443", "http://x"]
    assert enrich(urls, "81.2.69.160") == [*urls, "https://81-2-69-160.sslip.io:4443"]
    # no stored URL names a port: mydia's default, 4000 (as the original relay)
    assert enrich(["https://h"], "81.2.69.160") == [
        "https://h", "https://81-2-69-160.sslip.io:4000"]
    assert enrich([], "81.2.69.160") == ["https://81-2-69-160.sslip.io:4000"]
    assert enrich(["https://h", "https://10.0.0.2:8443"], "81.2.69.160")[-1] == (
        "https://81-2-69-160.sslip.io:8443")
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


def test_ice_servers_turn_over_tls() -> None:
    """TURN_TLS_HOST adds turns: after the UDP and TCP URLs of the one TURN entry (UDP is
    tried first), with the same credential; TURN_TLS_PORT moves it off 443."""
    base = {"TURN_PUBLIC_IP": "203.0.113.9", "TURN_PORT": "3479",
            "TURN_TLS_HOST": "Turn.Example.com"}
    ice = IceServers(load_settings(base), "sec").for_session("S", 1000.0)
    assert ice[0] == {"urls": ["turn:203.0.113.9:3479", "turn:203.0.113.9:3479?transport=tcp",
                               "turns:turn.example.com:443?transport=tcp"],
                      "username": "87400:S", "credential": ice[0]["credential"]}
    assert ice[1] == {"urls": "stun:203.0.113.9:3479"}
    moved = IceServers(load_settings({**base, "TURN_TLS_PORT": "5349"}), "sec")
    assert moved.for_session("S", 0.0)[0]["urls"][-1] == (
        "turns:turn.example.com:5349?transport=tcp")
    v6 = IceServers(load_settings({**base, "TURN_PUBLIC_IP": "2001:db8::9"}), "sec")
    assert v6.for_session("S", 0.0)[0]["urls"] == [
        "turn:[2001:db8::9]:3479", "turn:[2001:db8::9]:3479?transport=tcp",
        "turns:turn.example.com:443?transport=tcp"]
