"""The operator's config file (``infra/config.yaml``): load, validate, and update in place.

The file's schema is the pydantic model :class:`DeployConfig`. Every problem becomes one line
that names the key and how to fix it; the CLI prints them all and exits 2 before any remote
call. Updates (VPS order id, name and IP, generated TURN secret) rewrite only the affected
top-level lines so the operator's comments survive.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
)

from relay_deploy.files import write_private

PLACEHOLDER = "REPLACE_ME"
DEFAULT_CONFIG = Path("infra/config.yaml")
EXAMPLE = "infra/config.yaml.example"
UNCONFIRMED_ORDER = "unconfirmed"  # vps_order_id after a checkout whose outcome is unknown

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_PINNED_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
                        r"@sha256:[0-9a-f]{64}$")


class ConfigError(Exception):
    """The config cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        # one line each, whatever the user's values contain (paths with newlines, ...)
        problems = [_one_line(p) for p in problems]
        super().__init__("; ".join(problems))
        self.problems = problems


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# ---- field types: each check raises ValueError with the text the operator reads -------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if PLACEHOLDER in text:
        raise ValueError(f"still the example placeholder; replace {PLACEHOLDER}")
    return text


def _default(value: str) -> BeforeValidator:
    """Empty or absent means ``value``."""
    return BeforeValidator(lambda v: _text(v) or value)


def _required(value: str, info: ValidationInfo) -> str:
    if not value:
        path = (info.context or {}).get("path", "the config")
        raise ValueError(f"missing in {path}; set it (see {EXAMPLE})")
    return value


def _check(pattern: re.Pattern[str], message: str) -> AfterValidator:
    def check(value: str) -> str:
        if value and not pattern.match(value):
            raise ValueError(message.format(value=value))
        return value

    return AfterValidator(check)


def _min_length(n: int, message: str) -> AfterValidator:
    def check(value: str) -> str:
        if value and len(value) < n:
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{value!r} is not a port number (1-65535)")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("must be a non-negative number")
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _order_id(value: str) -> str:
    if value and value != UNCONFIRMED_ORDER and not value.isdigit():
        raise ValueError("is written by the tool: an OVH order number (or "
                         f"{UNCONFIRMED_ORDER!r}); remove the line only if that order is gone")
    return value


def _ip(value: str) -> str:
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
    return value


def _url(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


def _labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int) and not isinstance(v, bool)
            for k, v in value.items()):
        raise ValueError("must map OVH configuration labels to values, e.g. "
                         "{vps_install_rtm: \"no\"}")
    return {k: str(v) for k, v in value.items()}


Text = Annotated[str, BeforeValidator(_text)]
Required = Annotated[str, BeforeValidator(_text), AfterValidator(_required)]
Port = Annotated[int, BeforeValidator(_port)]
Seconds = Annotated[float, BeforeValidator(_seconds)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Label = Annotated[str, _default(""), _check(
    _LABEL_RE, "{value!r} is not a single DNS label like 'relay'")]


class Advanced(BaseModel):
    """Knobs for testing and unusual setups; the defaults are right for a real deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    dns_resolver: Annotated[Text, AfterValidator(_ip)] = "1.1.1.1"
    dns_port: Port = 53
    health_base_url: Annotated[str, BeforeValidator(_text), AfterValidator(_url)] = ""
    health_verify_tls: Flag = True
    probe_host: Text = ""  # where verify probes ports and STUN; default: the VPS IP
    stun_port: Port = 3478
    https_port: Port = 443
    relay_http_port: Annotated[int | None, BeforeValidator(
        lambda v: None if v is None else _port(v))] = None  # default: PORT of the ConfigMap
    probe_timeout_seconds: Seconds = 3.0  # per DNS/STUN/health/port attempt
    poll_seconds: Seconds = 5.0
    wait_timeout_seconds: Seconds = 600.0
    vps_poll_seconds: Seconds = 30.0
    vps_order_timeout_seconds: Seconds = 1800.0
    vps_task_timeout_seconds: Seconds = 1200.0
    ssh_connect_timeout_seconds: Seconds = 300.0
    ssh_known_hosts_path: Text = ""  # default: known_hosts next to the config file
    tls_ca_file: Text = ""  # CA bundle the TLS probes trust instead of the system's
    # where the iroh relay's digest is read (the OCI distribution API); default: the image's
    # own registry (Docker Hub, https://registry-1.docker.io). Tests point it at a fake.
    image_registry_url: Annotated[str, BeforeValidator(_text), AfterValidator(_url)] = ""
    registry_timeout_seconds: Seconds = 15.0  # per request to the registry


class DeployConfig(BaseModel):
    """``infra/config.yaml`` (see infra/config.yaml.example for what each key means)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    domain_name: Annotated[Required, _check(
        _DOMAIN_RE, "{value!r} is not a lower-case DNS name like example.org")] = ""
    acme_email: Annotated[Required, _check(
        _EMAIL_RE, "not an email address (Let's Encrypt sends expiry notices)")] = ""
    cloudflare_api_token: Required = ""
    relay_secret_key_base: Annotated[Required, _min_length(
        32, "too short; generate one with `openssl rand -hex 32`")] = ""
    ssh_public_key_path: Required = ""
    ssh_private_key_path: Text = ""  # default: the public key's path without .pub
    cloudflare_zone_id: Text = ""
    relay_subdomain: Annotated[Label, _default("relay")] = "relay"
    argocd_subdomain: Annotated[Label, _default("argocd")] = "argocd"
    turn_tls_enabled: Flag = True  # TURN over TLS on 443 (turns:), routed by Traefik by SNI
    turn_subdomain: Annotated[Label, _default("turn")] = "turn"
    iroh_relay_enabled: Flag = False  # n0's iroh-relay beside the service, for today's mydia
    iroh_subdomain: Annotated[Label, _default("iroh")] = "iroh"
    # the operator's own pin of the iroh relay image (the registry is then not asked)
    iroh_relay_digest: Annotated[Text, _check(
        _DIGEST_RE, "{value!r} is not an image digest: sha256: and 64 lower-case hex digits "
                    "(the Digest: line of `docker buildx imagetools inspect`)")] = ""
    relay_tmdb_api_key: Text = ""
    relay_tvdb_api_key: Text = ""
    turn_secret: Annotated[Text, _min_length(
        16, "too short (16+ characters), or leave it empty to generate")] = ""
    ssh_user: Annotated[str, _default("ubuntu"), _check(
        _USER_RE, "{value!r} is not a login name (OVH's Ubuntu images use 'ubuntu')")] = "ubuntu"
    ssh_port: Port = 22
    gitops_repo_url: Annotated[Text, _check(
        re.compile(r"^(https://|ssh://|git@)"),
        "must be an https://, ssh:// or git@ URL (or empty)")] = ""
    gitops_revision: Annotated[str, _default("main")] = "main"
    image_tag: Annotated[Text, _check(_IMAGE_TAG_RE, "{value!r} is not a valid image tag")] = ""
    image_pull_username: Text = ""
    image_pull_token: Text = ""
    vps_display_name: Annotated[str, _default("metadata-relay")] = "metadata-relay"
    vps_plan: Annotated[str, _default("vps-2025-model1")] = "vps-2025-model1"
    vps_datacenter: Text = ""
    vps_os: Annotated[str, _default("Ubuntu 24.04")] = "Ubuntu 24.04"
    vps_order_configuration: Annotated[dict[str, str], BeforeValidator(_labels)] = Field(
        default_factory=dict)
    vps_order_id: Annotated[Text, AfterValidator(_order_id)] = ""
    vps_rebuild_task: Annotated[Text, _check(
        re.compile(r"^\d+$"), "is written by the tool: the OVH task id of the rebuild")] = ""
    vps_name: Text = ""
    vps_ip: Annotated[Text, AfterValidator(_ip)] = ""
    iroh_relay_pinned_image: Annotated[Text, _check(
        _PINNED_RE, "is written by the tool: the iroh relay image as pinned on first use "
                    "(name:tag@sha256:...); set iroh_relay_digest to pin one yourself")] = ""
    advanced: Annotated[Advanced, BeforeValidator(lambda v: {} if v is None else v)] = Field(
        default_factory=Advanced)

    _path: Path = PrivateAttr(default=DEFAULT_CONFIG)

    def model_post_init(self, context: Any) -> None:
        """The file the settings came from (``model_validate(..., context={"path": p})``):
        relative key paths are read from its folder."""
        if isinstance(context, dict) and context.get("path") is not None:
            self._path = Path(context["path"])

    @property
    def path(self) -> Path:
        return self._path

    def _file(self, value: str) -> Path:
        file = Path(os.path.expanduser(value))
        return file if file.is_absolute() else (self._path.parent / file).resolve()

    @property
    def public_key_file(self) -> Path:
        return self._file(self.ssh_public_key_path or "~/.ssh/id_ed25519.pub")

    @property
    def private_key_file(self) -> Path:
        if self.ssh_private_key_path:
            return self._file(self.ssh_private_key_path)
        pub = self.public_key_file
        return pub.with_suffix("") if pub.suffix == ".pub" else pub

    @property
    def relay_host(self) -> str:
        return f"{self.relay_subdomain}.{self.domain_name}"

    @property
    def argocd_host(self) -> str:
        return f"{self.argocd_subdomain}.{self.domain_name}"

    @property
    def turn_host(self) -> str | None:
        """The TURN-over-TLS host name, or None when that route is off."""
        return f"{self.turn_subdomain}.{self.domain_name}" if self.turn_tls_enabled else None

    @property
    def iroh_host(self) -> str | None:
        """The iroh relay's host name, or None when it is not deployed."""
        return f"{self.iroh_subdomain}.{self.domain_name}" if self.iroh_relay_enabled else None

    @property
    def iroh_relay_url(self) -> str | None:
        """What mydia's IROH_RELAY_URL must be set to."""
        return f"https://{self.iroh_host}" if self.iroh_host else None

    def subdomains(self) -> dict[str, str]:
        """Setting -> host label of every host name in use (each must be distinct: Traefik
        routes 443 by name)."""
        used = {"relay_subdomain": self.relay_subdomain,
                "argocd_subdomain": self.argocd_subdomain}
        if self.turn_tls_enabled:
            used["turn_subdomain"] = self.turn_subdomain
        if self.iroh_relay_enabled:
            used["iroh_subdomain"] = self.iroh_subdomain
        return used

    @property
    def health_url(self) -> str:
        base = self.advanced.health_base_url or f"https://{self.relay_host}"
        return base.rstrip("/") + "/health"

    @property
    def known_hosts_path(self) -> Path:
        if self.advanced.ssh_known_hosts_path:
            return Path(self.advanced.ssh_known_hosts_path).expanduser()
        return self._path.parent / "known_hosts"

    @property
    def ordered_vps(self) -> bool:
        """The configured VPS came from this deployment's own OVH order."""
        return bool(self.vps_order_id and self.vps_order_id != UNCONFIRMED_ORDER)

    def secrets(self) -> list[str]:
        """Every secret value in the config (never to appear in output)."""
        values = [self.cloudflare_api_token, self.relay_secret_key_base, self.relay_tmdb_api_key,
                  self.relay_tvdb_api_key, self.turn_secret, self.image_pull_token]
        return [v for v in values if len(v) >= 4]

    def relay_secret_data(self) -> dict[str, str]:
        """The data of Secret ``metadata-relay-secrets`` (never printed, never on disk)."""
        data = {
            "RELAY_TOKEN_SECRET": self.relay_secret_key_base,
            "TURN_SECRET": self.turn_secret,
        }
        if self.relay_tmdb_api_key:
            data["TMDB_API_KEY"] = self.relay_tmdb_api_key
        if self.relay_tvdb_api_key:
            data["TVDB_API_KEY"] = self.relay_tvdb_api_key
        return data

    def updated(self, **updates: str) -> DeployConfig:
        """A copy with tool-written values changed (same file)."""
        return self.model_copy(update=updates)


def _show(key: object) -> str:
    """A key as the operator can read it on one line."""
    text = str(key)
    return text if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text) else repr(text)[:80]


def _problem(error: Any, path: Path) -> str:
    loc = [_show(part) for part in error["loc"]]
    where = ".".join(loc) or str(path)
    kind = error["type"]
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return f"{where}: unknown setting in {path} (see {EXAMPLE})"
        return f"{where}: unknown setting (see {EXAMPLE})"
    if kind == "value_error":
        return f"{where}: {error['ctx']['error']}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{where}: must be a mapping of settings (see {EXAMPLE})"
    return f"{where}: {error['msg']}"


def parse_config(raw: Any, path: Path) -> DeployConfig:
    """Validate a loaded YAML document; raises ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: must be a YAML mapping of settings (copy {EXAMPLE})"])
    problems: list[str] = []
    cfg: DeployConfig | None = None
    try:
        cfg = DeployConfig.model_validate(raw, context={"path": path})
    except ValidationError as exc:
        problems = [_problem(e, path) for e in exc.errors()]
    if cfg is not None:
        seen: dict[str, str] = {}
        for key, label in cfg.subdomains().items():
            if label in seen:
                problems.append(f"{key}: {label!r} is already {seen[label]}; each host name "
                                f"needs its own label (Traefik routes 443 by name)")
            seen.setdefault(label, key)
        if bool(cfg.image_pull_username) != bool(cfg.image_pull_token):
            problems.append("image_pull_token: set both image_pull_username and "
                            "image_pull_token (a GitHub token with read:packages), or neither")
        if cfg.ssh_public_key_path:
            problems.extend(check_ssh_keys(cfg.public_key_file, cfg.private_key_file))
    for key in ("ssh_public_key_path", "ssh_private_key_path"):
        if "\x00" in str(raw.get(key) or ""):
            problems = [p for p in problems if not p.startswith(key)]
            problems.append(f"{key}: contains a NUL character; give a file path")
    if problems or cfg is None:
        raise ConfigError(problems)
    return cfg


def check_ssh_keys(pub: Path, priv: Path) -> list[str]:
    """Problems with the SSH key pair; the private key may be passphrase-protected only when
    an SSH agent is available to hold it."""
    import asyncssh

    problems: list[str] = []
    try:
        asyncssh.import_public_key(pub.read_bytes())
    except OSError as exc:
        problems.append(f"ssh_public_key_path: cannot read {pub} ({exc.strerror}); create a key "
                        f"with `ssh-keygen -t ed25519` or fix the path")
    except (asyncssh.KeyImportError, ValueError):
        problems.append(f"ssh_public_key_path: {pub} is not an SSH public key")
    try:
        data = priv.read_bytes()
    except OSError as exc:
        problems.append(f"ssh_private_key_path: cannot read {priv} ({exc.strerror}); set "
                        f"ssh_private_key_path or fix the permissions")
        return problems
    try:
        asyncssh.import_private_key(data)
    except (asyncssh.KeyEncryptionError, asyncssh.KeyImportError, ValueError) as exc:
        encrypted = isinstance(exc, asyncssh.KeyEncryptionError) or "assphrase" in str(exc)
        if not encrypted:
            problems.append(f"ssh_private_key_path: {priv} is not an SSH private key")
        elif not os.environ.get("SSH_AUTH_SOCK"):
            problems.append(f"ssh_private_key_path: {priv} is passphrase-protected and no SSH "
                            f"agent is running; run `ssh-add {priv}` in an agent session")
    return problems


def load_config(path: Path) -> DeployConfig:
    if not path.exists():
        raise ConfigError([f"{path}: config file not found; copy {EXAMPLE} to {path} and fill "
                           f"it in"])
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{path}: cannot read config file ({reason})"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{path}: not valid YAML{where}; fix the syntax"]) from exc
    return parse_config(raw, path.resolve())


def update_config_file(path: Path, updates: dict[str, str]) -> None:
    """Set top-level ``key: value`` lines, keeping every other line (and comment) as it is.

    The file is replaced atomically (a fresh 0600 temporary file renamed over it), so an
    interruption leaves the old or the new file, and no planted path is ever written through.
    """
    lines = path.read_text().splitlines()
    remaining = dict(updates)
    for i, line in enumerate(lines):
        match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", line)
        if match and match.group(1) in remaining:
            key = match.group(1)
            lines[i] = f"{key}: {json.dumps(remaining.pop(key))}"
    for key, value in remaining.items():
        lines.append(f"{key}: {json.dumps(value)}")
    write_private(path, "\n".join(lines) + "\n")


def generate_turn_secret() -> str:
    return secrets.token_hex(32)
