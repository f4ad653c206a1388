"""Every environment variable the service reads, validated once.

Nothing else in the service reads ``os.environ``: build a :class:`Settings` (``load_settings()``)
and pass it down. A bad value raises :class:`ConfigError` whose message is one line naming the
variable, so start-up stops before anything is half-configured.
"""

from __future__ import annotations

import ipaddress
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

# RFC-reserved and private ranges a TURN client must never reach (spec/turn.md).
DEFAULT_DENIED_PEERS = (
    "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,172.16.0.0/12,"
    "192.0.0.0/24,192.0.2.0/24,192.88.99.0/24,192.168.0.0/16,198.18.0.0/15,198.51.100.0/24,"
    "203.0.113.0/24,224.0.0.0/4,240.0.0.0/4,255.255.255.255/32,::/128,::1/128,64:ff9b::/96,"
    "100::/64,2001::/32,2001:db8::/32,2002::/16,fc00::/7,fe80::/10,ff00::/8"
)


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
    UPSTREAM_TIMEOUT: float = Field(10.0, gt=0, le=300)
    UPSTREAM_MAX_RPS: float = Field(40.0, gt=0)
    UPSTREAM_MAX_CONNECTIONS: int = Field(16, ge=1, le=1024)
    UPSTREAM_QUEUE_TIMEOUT: float = Field(10.0, gt=0, le=300)

    # cache
    CACHE_MEMORY_MAX_BYTES: int = Field(64 * 1024 * 1024, ge=0)

    # pairing
    RELAY_TOKEN_SECRET: str | None = None

    # TURN
    TURN_ENABLED: bool = True
    TURN_SECRET: str | None = None
    TURN_SECRETS: Annotated[tuple[str, ...], NoDecode] = ()
    TURN_LISTEN_IP: str = "0.0.0.0"
    TURN_PORT: int = Field(3478, ge=0, le=65535)
    TURN_PUBLIC_IP: str | None = None
    TURN_REALM: str = "metadata-relay"
    TURN_MIN_PORT: int = Field(49152, ge=1, le=65535)
    TURN_MAX_PORT: int = Field(49252, ge=1, le=65535)
    TURN_MAX_RATE: int = Field(1_000_000, ge=0)
    TURN_NATIVE_FORWARDING: bool = True
    TURN_CREDENTIAL_TTL: int = Field(86400, ge=60)
    TURN_USER_QUOTA: int = Field(10, ge=1)
    TURN_ALLOWED_PEERS: Annotated[tuple[Network, ...], NoDecode] = ()
    TURN_DENIED_PEERS: Annotated[tuple[Network, ...], NoDecode] = Field(
        default=DEFAULT_DENIED_PEERS  # type: ignore[arg-type]
    )
    TURN_URI: str | None = None

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

    @field_validator("TMDB_BASE_URL", "TVDB_BASE_URL")
    @classmethod
    def _base_url(cls, v: str) -> str:
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

    @field_validator(
        "TMDB_API_KEY", "TVDB_API_KEY", "TVDB_PIN", "RELAY_TOKEN_SECRET", "TURN_SECRET"
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

    @field_validator("HOST", "TURN_LISTEN_IP")
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

    @property
    def turn_public_ip(self) -> str:
        return self.TURN_PUBLIC_IP or detect_public_ip()


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
        shown = "" if loc.endswith(("SECRET", "KEY", "PIN", "SECRETS")) else f" (got {value!r})"
        if isinstance(value, dict):
            shown = ""
        raise ConfigError(f"invalid configuration: {loc}: {msg}{shown}") from None
