"""Every environment variable the service reads, validated once.

Nothing else in the service reads ``os.environ``: build a :class:`Settings` (``load_settings()``)
and pass it down. A bad value raises :class:`ConfigError` whose message is one line naming the
variable, so start-up stops before anything is half-configured.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED_PROXIES = (
    "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7,100.64.0.0/10"
)

# Peers a TURN client must never reach (turn/peers.py): every entry of the IANA IPv4 and IPv6
# special-purpose address registries, multicast, and the IPv6 forms that embed or translate
# IPv4 (a deny list has no business trusting a translator to refuse 10.0.0.1 written as IPv6).
DEFAULT_DENIED_PEERS = ",".join((
    "0.0.0.0/8",            # this network (0.0.0.0/32: this host)
    "10.0.0.0/8",           # private
    "100.64.0.0/10",        # shared address space (carrier-grade NAT)
    "127.0.0.0/8",          # loopback
    "169.254.0.0/16",       # link local (cloud metadata services)
    "172.16.0.0/12",        # private
    "192.0.0.0/24",         # IETF protocol assignments
    "192.0.0.0/29",         # IPv4 service continuity prefix (DS-Lite)
    "192.0.0.8/32",         # IPv4 dummy address
    "192.0.0.9/32",         # PCP anycast
    "192.0.0.10/32",        # TURN anycast
    "192.0.0.170/32",       # NAT64/DNS64 discovery
    "192.0.0.171/32",       # NAT64/DNS64 discovery
    "192.0.2.0/24",         # documentation (TEST-NET-1)
    "192.31.196.0/24",      # AS112-v4
    "192.52.193.0/24",      # AMT
    "192.88.99.0/24",       # deprecated 6to4 relay anycast (192.88.99.2/32: 6a44 relay)
    "192.168.0.0/16",       # private
    "192.175.48.0/24",      # direct delegation AS112 service
    "198.18.0.0/15",        # benchmarking
    "198.51.100.0/24",      # documentation (TEST-NET-2)
    "203.0.113.0/24",       # documentation (TEST-NET-3)
    "224.0.0.0/4",          # multicast
    "240.0.0.0/4",          # reserved
    "255.255.255.255/32",   # limited broadcast
    "::/128",               # unspecified
    "::1/128",              # loopback
    "::/96",                # IPv4-compatible (deprecated)
    "::ffff:0:0/96",        # IPv4-mapped
    "::ffff:0:0:0/96",      # IPv4-translated (SIIT)
    "64:ff9b::/96",         # IPv4/IPv6 translation (NAT64 well-known prefix)
    "64:ff9b:1::/48",       # IPv4/IPv6 translation, local use
    "100::/64",             # discard only
    "100:0:0:1::/64",       # dummy IPv6 prefix
    "2001::/23",            # IETF protocol assignments
    "2001::/32",            # Teredo
    "2001:1::1/128",        # PCP anycast
    "2001:1::2/128",        # TURN anycast
    "2001:1::3/128",        # DNS-SD service registration protocol anycast
    "2001:2::/48",          # benchmarking
    "2001:3::/32",          # AMT
    "2001:4:112::/48",      # AS112-v6
    "2001:10::/28",         # ORCHID (deprecated)
    "2001:20::/28",         # ORCHIDv2
    "2001:30::/28",         # drone remote ID entity tags
    "2001:db8::/32",        # documentation
    "2002::/16",            # 6to4
    "2620:4f:8000::/48",    # direct delegation AS112 service
    "3fff::/20",            # documentation
    "5f00::/16",            # segment routing (SRv6) SIDs
    "fc00::/7",             # unique local
    "fe80::/10",            # link local
    "fec0::/10",            # site local (deprecated)
    "ff00::/8",             # multicast
))


_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_CONTACT_MAIL = re.compile(r"[!-~]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.ASCII)


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line naming the variable."""


def _cidrs(value: object, name: str) -> tuple[Network, ...]:
    if value is None:
        return ()
    if isinstance(value, tuple | list):
        items = [str(v) for v in value]
    else:
        items = [p for p in str(value).replace(" ", "").split(",") if p]
    nets: list[Network] = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"malformed CIDR {item!r}") from exc
    return tuple(nets)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in URL {value!r}") from exc
    return value.rstrip("/")


def detect_public_ipv6() -> str | None:
    """First global IPv6 address of the host (route lookup, no packet sent), else None."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.connect(("2001:db8::1", 9))
            ip = ipaddress.ip_address(str(s.getsockname()[0]).split("%", 1)[0])
    except (OSError, ValueError):
        return None
    return str(ip) if ip.is_global else None


WILDCARDS = ("0.0.0.0", "::")


def listen_ips(value: str) -> tuple[str, ...]:
    """TURN_LISTEN_IP as the addresses to bind: a lone wildcard (``0.0.0.0`` or ``::``) is
    every address of both families; ``localhost`` is 127.0.0.1; else the comma list as given
    (at most one address per family)."""
    items = [p.strip() for p in value.split(",") if p.strip()]
    if len(items) == 1 and items[0] in WILDCARDS:
        return WILDCARDS
    return tuple("127.0.0.1" if ip == "localhost" else ip for ip in items)


def detect_public_ip() -> str:
    """First non-loopback IPv4 of the host (route lookup, no packet sent), else 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # connect() on UDP only selects a route and source address; nothing is sent.
            s.connect(("192.0.2.1", 9))
            ip = str(s.getsockname()[0])
            if not ipaddress.ip_address(ip).is_loopback:
                return ip
    except OSError:
        pass
    return "127.0.0.1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=True, extra="ignore", validate_default=True
    )

    # HTTP listener
    HOST: str = "0.0.0.0"
    PORT: int = Field(4001, ge=0, le=65535)
    HTTP_HEADER_TIMEOUT: float = Field(10.0, gt=0, le=300)
    HTTP_IDLE_TIMEOUT: float = Field(5.0, gt=0, le=3600)
    HTTP_BODY_TIMEOUT: float = Field(30.0, gt=0, le=3600)
    HTTP_MAX_HEADER_BYTES: int = Field(16384, ge=1024, le=1024 * 1024)
    HTTP_WRITE_TIMEOUT: float = Field(30.0, gt=0, le=3600)
    HTTP_ACCESS_LOG: bool = False

    # storage
    SQLITE_DB_PATH: Path = Path("./data/metadata_relay.db")
    REDIS_URL: str | None = None

    # upstream providers
    TMDB_API_KEY: str | None = None
    TMDB_BASE_URL: str = "https://api.themoviedb.org/3"
    TVDB_API_KEY: str | None = None
    TVDB_PIN: str | None = None
    TVDB_BASE_URL: str = "https://api4.thetvdb.com/v4"
    MUSICBRAINZ_BASE_URL: str = "https://musicbrainz.org/ws/2"
    MUSICBRAINZ_MAX_RPS: float = Field(1.0, gt=0)  # musicbrainz.org allows 1 request/s
    COVERART_BASE_URL: str = "https://coverartarchive.org"
    OPENLIBRARY_BASE_URL: str = "https://openlibrary.org"
    OPENSUBTITLES_API_KEY: str | None = None
    OPENSUBTITLES_USERNAME: str | None = None
    OPENSUBTITLES_PASSWORD: str | None = None
    OPENSUBTITLES_BASE_URL: str = "https://api.opensubtitles.com/api/v1"
    # named in the User-Agent every provider sees, so their operators can reach ours
    UPSTREAM_CONTACT: str = "https://github.com/getmydia/mydia"
    UPSTREAM_TIMEOUT: float = Field(10.0, gt=0, le=300)
    UPSTREAM_MAX_RPS: float = Field(40.0, gt=0)
    UPSTREAM_MAX_CONNECTIONS: int = Field(16, ge=1, le=1024)
    UPSTREAM_QUEUE_TIMEOUT: float = Field(10.0, gt=0, le=300)

    # cache
    CACHE_MEMORY_MAX_BYTES: int = Field(64 * 1024 * 1024, ge=0)
    CACHE_ENTRY_MAX_BYTES: int = Field(8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)

    # crash reports
    CRASH_REPORTS_MAX: int = Field(2000, ge=1, le=1_000_000)
    CRASH_REPORTS_MAX_AGE_DAYS: float = Field(30.0, gt=0, le=3650)

    # pairing
    RELAY_TOKEN_SECRET: str | None = None

    # TURN
    TURN_ENABLED: bool = True
    TURN_SECRET: str | None = None
    TURN_SECRETS: Annotated[tuple[str, ...], NoDecode] = ()
    TURN_LISTEN_IP: str = "0.0.0.0"
    TURN_PORT: int = Field(3478, ge=0, le=65535)
    TURN_PUBLIC_IP: str | None = None
    TURN_PUBLIC_IPV6: str | None = None
    TURN_REALM: str = "metadata-relay"
    TURN_MIN_PORT: int = Field(49152, ge=1, le=65535)
    TURN_MAX_PORT: int = Field(49252, ge=1, le=65535)
    TURN_MAX_RATE: int = Field(1_000_000, ge=0)
    TURN_NATIVE_FORWARDING: bool = True
    TURN_CREDENTIAL_TTL: int = Field(86400, ge=60)
    TURN_USER_QUOTA: int = Field(10, ge=1)
    TURN_IP_QUOTA: int = Field(16, ge=1, le=65535)
    TURN_ALLOWED_PEERS: Annotated[tuple[Network, ...], NoDecode] = ()
    TURN_DENIED_PEERS: Annotated[tuple[Network, ...], NoDecode] = Field(
        default=DEFAULT_DENIED_PEERS  # type: ignore[arg-type]
    )
    TURN_URI: str | None = None
    # TURN over TLS: the host name a TLS-terminating proxy (Traefik on 443) routes to the
    # integrated server's TCP listener; adds a turns: URL to the ICE servers
    TURN_TLS_HOST: str | None = None
    TURN_TLS_PORT: int = Field(443, ge=1, le=65535)

    # network edge
    TRUSTED_PROXIES: Annotated[tuple[Network, ...], NoDecode] = Field(
        default=DEFAULT_TRUSTED_PROXIES  # type: ignore[arg-type]
    )

    # logging
    LOG_LEVEL: Literal["debug", "info", "warning", "error", "critical"] = "info"
    LOG_FORMAT: Literal["json", "console"] | None = None

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @field_validator("TMDB_BASE_URL", "TVDB_BASE_URL", "MUSICBRAINZ_BASE_URL",
                     "COVERART_BASE_URL", "OPENLIBRARY_BASE_URL", "OPENSUBTITLES_BASE_URL")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return _http_url(v)

    @field_validator("UPSTREAM_CONTACT")
    @classmethod
    def _contact(cls, v: str) -> str:
        # it goes into a header: printable ASCII, an http(s) URL or a mail address
        if not v.isascii() or not v.isprintable() or " " in v:
            raise ValueError(f"not a URL or mail address: {v!r}")
        if v.startswith("mailto:") or ("@" in v and "/" not in v):
            if not _CONTACT_MAIL.fullmatch(v.removeprefix("mailto:")):
                raise ValueError(f"not a mail address: {v!r}")
            return v
        return _http_url(v)

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ValueError(f"not a redis:// URL: {v!r}")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError("bad port") from exc
        return v

    @field_validator("TURN_URI")
    @classmethod
    def _turn_uri(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("turn:", "turns:")) or len(v.split(":", 1)[1]) == 0:
            raise ValueError(f"not a turn: URI: {v!r}")
        return v

    @field_validator("TURN_TLS_HOST")
    @classmethod
    def _tls_host(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        name = v.lower().removesuffix(".")
        labels = name.split(".")
        if (len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels)
                or labels[-1].isdigit()):
            raise ValueError("not a host name (the TLS certificate's name, without scheme "
                             "or port)")
        return name

    @field_validator(
        "TMDB_API_KEY", "TVDB_API_KEY", "TVDB_PIN", "RELAY_TOKEN_SECRET", "TURN_SECRET",
        "OPENSUBTITLES_API_KEY", "OPENSUBTITLES_USERNAME", "OPENSUBTITLES_PASSWORD",
    )
    @classmethod
    def _empty_is_unset(cls, v: str | None) -> str | None:
        return v or None

    @field_validator("TURN_SECRETS", mode="before")
    @classmethod
    def _secret_list(cls, v: object) -> tuple[str, ...]:
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return tuple(v) if isinstance(v, list | tuple) else ()

    @field_validator("TURN_ALLOWED_PEERS", "TURN_DENIED_PEERS", "TRUSTED_PROXIES", mode="before")
    @classmethod
    def _networks(cls, v: object) -> tuple[Network, ...]:
        return _cidrs(v, "")

    @field_validator("TURN_LISTEN_IP")
    @classmethod
    def _turn_listen_ips(cls, v: str) -> str:
        ips = listen_ips(v)
        if not ips:
            raise ValueError("no address")
        families = []
        for ip in ips:
            try:
                families.append(ipaddress.ip_address(ip).version)
            except ValueError as exc:
                raise ValueError(f"not an IP address: {ip!r}") from exc
        if len(set(families)) != len(families):
            raise ValueError(f"more than one address of a family: {v!r}")
        return v

    @field_validator("TURN_PUBLIC_IPV6")
    @classmethod
    def _public_ipv6(cls, v: str | None) -> str | None:
        if not v:
            return None
        if v.lower() == "none":
            return "none"
        try:
            ip = ipaddress.ip_address(v)
        except ValueError as exc:
            raise ValueError(f"not an IP address: {v!r}") from exc
        if ip.version != 6 or "%" in v:
            raise ValueError(f"not an unscoped IPv6 address: {v!r}")
        return v

    @field_validator("HOST")
    @classmethod
    def _listen_ip(cls, v: str) -> str:
        if v in ("localhost",):
            return v
        try:
            ipaddress.ip_address(v)
        except ValueError as exc:
            raise ValueError(f"not an IP address: {v!r}") from exc
        return v

    @field_validator("TURN_PUBLIC_IP")
    @classmethod
    def _public_ip(cls, v: str | None) -> str | None:
        if not v:
            return None
        try:
            ipaddress.ip_address(v)
        except ValueError as exc:
            raise ValueError(f"not an IP address: {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _ports(self) -> Settings:
        if self.TURN_MIN_PORT > self.TURN_MAX_PORT:
            raise ValueError(
                "TURN_MIN_PORT: greater than TURN_MAX_PORT "
                f"({self.TURN_MIN_PORT} > {self.TURN_MAX_PORT})"
            )
        return self

    @model_validator(mode="after")
    def _tls_route(self) -> Settings:
        # turns: describes the integrated server's TLS route; it has no meaning elsewhere
        if self.TURN_TLS_HOST and self.TURN_URI:
            raise ValueError("TURN_TLS_HOST: names the integrated TURN server's TLS route; "
                             "unset it when TURN_URI points at another server")
        if self.TURN_TLS_HOST and not self.TURN_ENABLED:
            raise ValueError("TURN_TLS_HOST: set, but the integrated TURN server is off "
                             "(TURN_ENABLED=false)")
        return self

    @property
    def turn_public_ip(self) -> str:
        return self.TURN_PUBLIC_IP or detect_public_ip()

    @property
    def turn_public_ipv6(self) -> str | None:
        """The IPv6 relay address: TURN_PUBLIC_IPV6, else the host's first global IPv6
        address; None (``none``, or nothing found): no IPv6 relays."""
        if self.TURN_PUBLIC_IPV6 == "none":
            return None
        return self.TURN_PUBLIC_IPV6 or detect_public_ipv6()

    @property
    def turn_listen_ips(self) -> tuple[str, ...]:
        return listen_ips(self.TURN_LISTEN_IP)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read and validate the environment (or ``env``) once; raise :class:`ConfigError`."""
    try:
        if env is None:
            return Settings()
        return Settings.model_validate(
            {k: v for k, v in env.items() if k in Settings.model_fields}
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "configuration"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if loc == "configuration" and ":" in msg:
            loc, msg = (s.strip() for s in msg.split(":", 1))
        value = err.get("input")
        hidden = ("SECRET", "KEY", "PIN", "SECRETS", "PASSWORD", "USERNAME")
        shown = "" if loc.endswith(hidden) else f" (got {value!r})"
        if isinstance(value, dict):
            shown = ""
        raise ConfigError(f"invalid configuration: {loc}: {msg}{shown}") from None
