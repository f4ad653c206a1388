from __future__ import annotations

import ipaddress

import pytest

from metadata_relay.config import ConfigError, load_settings


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert (s.HOST, s.PORT) == ("0.0.0.0", 4001)
    assert str(s.SQLITE_DB_PATH) == "data/metadata_relay.db"
    assert s.TMDB_BASE_URL == "https://api.themoviedb.org/3"
    assert s.TVDB_BASE_URL == "https://api4.thetvdb.com/v4"
    assert s.TURN_ENABLED and s.TURN_PORT == 3478 and s.TURN_REALM == "metadata-relay"
    assert (s.TURN_MIN_PORT, s.TURN_MAX_PORT) == (49152, 49252)
    assert s.TURN_MAX_RATE == 1_000_000 and s.TURN_CREDENTIAL_TTL == 86400
    assert s.TURN_NATIVE_FORWARDING is True
    assert s.TURN_USER_QUOTA == 10 and s.TURN_IP_QUOTA == 16  # 16 of 101 relay ports
    assert s.UPSTREAM_MAX_RPS == 40 and s.UPSTREAM_MAX_CONNECTIONS == 16
    assert s.REDIS_URL is None and s.TMDB_API_KEY is None and s.TURN_URI is None
    for net in ("fc00::/7", "::ffff:0:0/96", "64:ff9b:1::/48", "fec0::/10", "2001:10::/28",
                "192.0.0.0/24", "224.0.0.0/4"):  # the rest: tests/unit/turn/test_policy.py
        assert ipaddress.ip_network(net) in s.TURN_DENIED_PEERS
    assert len(set(s.TURN_DENIED_PEERS)) == len(s.TURN_DENIED_PEERS) == 54
    ipaddress.ip_address(s.turn_public_ip)


def test_lists_and_empty_values() -> None:
    s = load_settings({"TURN_ALLOWED_PEERS": "127.0.0.0/8, ::1/128", "TURN_SECRETS": "a,b,,c",
                       "TMDB_API_KEY": "", "LOG_LEVEL": "DEBUG", "REDIS_URL": ""})
    assert [str(n) for n in s.TURN_ALLOWED_PEERS] == ["127.0.0.0/8", "::1/128"]
    assert s.TURN_SECRETS == ("a", "b", "c")
    assert s.TMDB_API_KEY is None and s.REDIS_URL is None and s.LOG_LEVEL == "debug"


@pytest.mark.parametrize(("var", "value"), [
    ("PORT", "not-a-port"), ("PORT", "70000"), ("TURN_PORT", "-1"),
    ("TURN_MIN_PORT", "60000"), ("TURN_ALLOWED_PEERS", "10.0.0.0/33"),
    ("TURN_DENIED_PEERS", "nonsense"), ("TRUSTED_PROXIES", "1.2.3.4/40"),
    ("TMDB_BASE_URL", "notaurl"), ("TVDB_BASE_URL", "ftp://x"), ("TMDB_BASE_URL", "http://h:x/"),
    ("REDIS_URL", "http://example"), ("LOG_LEVEL", "loud"), ("LOG_FORMAT", "xml"),
    ("TURN_ENABLED", "maybe"), ("TURN_URI", "http://x"), ("TURN_PUBLIC_IP", "host.example"),
    ("HOST", "not an ip"), ("UPSTREAM_TIMEOUT", "0"), ("UPSTREAM_MAX_CONNECTIONS", "0"),
    ("TURN_CREDENTIAL_TTL", "5"), ("TURN_NATIVE_FORWARDING", "maybe"), ("TURN_IP_QUOTA", "0"),
    ("TURN_IP_QUOTA", "x"),
    ("MUSICBRAINZ_BASE_URL", "musicbrainz.org"), ("COVERART_BASE_URL", "ftp://x"),
    ("OPENLIBRARY_BASE_URL", "http://"), ("OPENSUBTITLES_BASE_URL", "nope"),
    ("MUSICBRAINZ_MAX_RPS", "0"), ("UPSTREAM_CONTACT", "call me"),
    ("UPSTREAM_CONTACT", "ops@"), ("UPSTREAM_CONTACT", "https://x.org/\x1b"),
    ("CACHE_ENTRY_MAX_BYTES", "10"), ("CRASH_REPORTS_MAX", "0"),
    ("CRASH_REPORTS_MAX_AGE_DAYS", "-1"), ("TURN_TLS_HOST", "203.0.113.9"),
    ("TURN_TLS_HOST", "https://turn.example.com"), ("TURN_TLS_HOST", "turn.example.com:443"),
    ("TURN_TLS_HOST", "turn_1.example.com"), ("TURN_TLS_HOST", "-turn.example.com"),
    ("TURN_TLS_HOST", "turn..example.com"), ("TURN_TLS_HOST", "x" * 64 + ".example.com"),
    ("TURN_TLS_PORT", "0"), ("TURN_TLS_PORT", "65536"), ("TURN_TLS_PORT", "https"),
])
def test_bad_values_name_the_variable_in_one_line(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({var: value})
    message = str(err.value)
    assert "\n" not in message
    assert var in message


def test_secret_values_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"TURN_CREDENTIAL_TTL": "1", "TMDB_API_KEY": "supersecret"})
    assert "supersecret" not in str(err.value)


def test_provider_defaults_and_contacts() -> None:
    s = load_settings({})
    assert s.MUSICBRAINZ_BASE_URL == "https://musicbrainz.org/ws/2" and s.MUSICBRAINZ_MAX_RPS == 1
    assert s.COVERART_BASE_URL == "https://coverartarchive.org"
    assert s.OPENLIBRARY_BASE_URL == "https://openlibrary.org"
    assert s.OPENSUBTITLES_BASE_URL == "https://api.opensubtitles.com/api/v1"
    assert s.OPENSUBTITLES_API_KEY is s.OPENSUBTITLES_USERNAME is s.OPENSUBTITLES_PASSWORD is None
    for contact in ("https://relay.example.org/about", "mailto:ops@example.org",
                    "ops@example.org"):
        assert load_settings({"UPSTREAM_CONTACT": contact}).UPSTREAM_CONTACT == contact
    assert load_settings({"OPENSUBTITLES_PASSWORD": ""}).OPENSUBTITLES_PASSWORD is None


def test_turn_over_tls_settings() -> None:
    s = load_settings({})
    assert s.TURN_TLS_HOST is None and s.TURN_TLS_PORT == 443
    s = load_settings({"TURN_TLS_HOST": "TURN.Example.com.", "TURN_TLS_PORT": "5349"})
    assert (s.TURN_TLS_HOST, s.TURN_TLS_PORT) == ("turn.example.com", 5349)
    assert load_settings({"TURN_TLS_HOST": ""}).TURN_TLS_HOST is None
    # it names the integrated server's TLS route: meaningless with TURN_URI or TURN off
    for other in ({"TURN_URI": "turn:coturn.example:3478"}, {"TURN_ENABLED": "false"}):
        with pytest.raises(ConfigError) as err:
            load_settings({"TURN_TLS_HOST": "turn.example.com", **other})
        assert str(err.value).startswith("invalid configuration: TURN_TLS_HOST:")
        assert "\n" not in str(err.value)


def test_turn_listen_ip_names_one_address_per_family() -> None:
    from metadata_relay.config import listen_ips

    assert load_settings({}).turn_listen_ips == ("0.0.0.0", "::")  # every address, both
    assert listen_ips("::") == ("0.0.0.0", "::")
    assert listen_ips("localhost") == ("127.0.0.1",)
    assert listen_ips("127.0.0.1, ::1") == ("127.0.0.1", "::1")
    assert listen_ips("0.0.0.0,::1") == ("0.0.0.0", "::1")  # in a list: its family only
    for bad in ("127.0.0.1,127.0.0.2", "::1,::2", "host.example", ",", "127.0.0.1,nope"):
        with pytest.raises(ConfigError, match="TURN_LISTEN_IP"):
            load_settings({"TURN_LISTEN_IP": bad})


def test_turn_public_ipv6_is_an_ipv6_address_none_or_discovered() -> None:
    from metadata_relay.config import detect_public_ipv6

    assert load_settings({"TURN_PUBLIC_IPV6": "2001:db8::7"}).turn_public_ipv6 == "2001:db8::7"
    assert load_settings({"TURN_PUBLIC_IPV6": "none"}).turn_public_ipv6 is None
    assert load_settings({"TURN_PUBLIC_IPV6": "NONE"}).turn_public_ipv6 is None
    found = load_settings({}).turn_public_ipv6  # this host's first global IPv6, if any
    assert found == detect_public_ipv6()
    assert found is None or ipaddress.ip_address(found).is_global
    for bad in ("192.0.2.1", "host.example", "fe80::1%eth0"):
        with pytest.raises(ConfigError, match="TURN_PUBLIC_IPV6"):
            load_settings({"TURN_PUBLIC_IPV6": bad})
