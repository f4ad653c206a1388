"""The operator's config file (``infra/config.yaml``): load, validate, and update in place.

Validation collects every problem as one line that names the key and how to fix it; the CLI
prints them and exits 2 before any remote call. Updates (VPS name/IP, generated TURN secret)
rewrite only the affected top-level lines so the operator's comments survive.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PLACEHOLDER = "REPLACE_ME"
DEFAULT_CONFIG = Path("infra/config.yaml")

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ConfigError(Exception):
    """The config cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        # one line each, whatever the user's values contain (paths with newlines, ...)
        problems = [_one_line(p) for p in problems]
        super().__init__("; ".join(problems))
        self.problems = problems


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Advanced:
    """Knobs for testing and unusual setups; the defaults are right for a real deployment."""

    dns_resolver: str = "1.1.1.1"
    dns_port: int = 53
    health_base_url: str = ""  # default https://<relay_subdomain>.<domain_name>
    health_verify_tls: bool = True
    stun_host: str = ""  # default: the VPS IP
    stun_port: int = 3478
    probe_timeout_seconds: float = 3.0  # per DNS/STUN/health attempt
    poll_seconds: float = 5.0
    wait_timeout_seconds: float = 600.0
    vps_poll_seconds: float = 30.0
    vps_order_timeout_seconds: float = 1800.0
    ssh_connect_timeout_seconds: float = 300.0
    ssh_known_hosts_path: str = ""  # default: known_hosts next to the config file


@dataclass(frozen=True)
class DeployConfig:
    path: Path
    domain_name: str
    acme_email: str
    cloudflare_api_token: str
    relay_secret_key_base: str
    ssh_public_key_path: Path
    ssh_private_key_path: Path
    cloudflare_zone_id: str = ""
    relay_subdomain: str = "relay"
    argocd_subdomain: str = "argocd"
    relay_tmdb_api_key: str = ""
    relay_tvdb_api_key: str = ""
    turn_secret: str = ""
    ssh_user: str = "root"
    ssh_port: int = 22
    gitops_repo_url: str = ""
    gitops_revision: str = "main"
    image_tag: str = ""
    vps_display_name: str = "metadata-relay"
    vps_plan: str = "vps-2025-model1"
    vps_datacenter: str = "SBG"
    vps_os: str = "Ubuntu 24.04"
    vps_name: str = ""
    vps_ip: str = ""
    advanced: Advanced = field(default_factory=Advanced)

    @property
    def relay_host(self) -> str:
        return f"{self.relay_subdomain}.{self.domain_name}"

    @property
    def argocd_host(self) -> str:
        return f"{self.argocd_subdomain}.{self.domain_name}"

    @property
    def health_url(self) -> str:
        base = self.advanced.health_base_url or f"https://{self.relay_host}"
        return base.rstrip("/") + "/health"

    @property
    def known_hosts_path(self) -> Path:
        if self.advanced.ssh_known_hosts_path:
            return Path(self.advanced.ssh_known_hosts_path).expanduser()
        return self.path.parent / "known_hosts"

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


_STR_KEYS = {
    "domain_name", "acme_email", "cloudflare_api_token", "cloudflare_zone_id", "relay_subdomain",
    "argocd_subdomain", "relay_secret_key_base", "relay_tmdb_api_key", "relay_tvdb_api_key",
    "turn_secret", "ssh_public_key_path", "ssh_private_key_path", "ssh_user", "gitops_repo_url",
    "gitops_revision", "image_tag", "vps_display_name", "vps_plan", "vps_datacenter", "vps_os",
    "vps_name", "vps_ip",
}
_INT_KEYS = {"ssh_port"}
_KNOWN = _STR_KEYS | _INT_KEYS | {"advanced"}
_REQUIRED = ("domain_name", "acme_email", "cloudflare_api_token", "relay_secret_key_base",
             "ssh_public_key_path")


def _show(key: object) -> str:
    """A key as the operator can read it on one line."""
    text = str(key)
    return text if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text) else repr(text)[:80]


def _as_str(raw: dict[str, Any], key: str, problems: list[str]) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.append(f"{key}: must be a string, got {type(value).__name__}")
        return ""
    return str(value).strip()


def _load_advanced(raw: Any, problems: list[str]) -> Advanced:
    if raw is None:
        return Advanced()
    if not isinstance(raw, dict):
        problems.append("advanced: must be a mapping of advanced settings")
        return Advanced()
    defaults = Advanced()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key.startswith("_") or not hasattr(defaults, key):
            problems.append(f"advanced.{_show(key)}: unknown setting (see "
                            f"infra/config.yaml.example)")
            continue
        default = getattr(defaults, key)
        if value is None:
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                problems.append(f"advanced.{key}: must be true or false")
                continue
        elif isinstance(default, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problems.append(f"advanced.{key}: must be a non-negative number")
                continue
            value = type(default)(value)
        elif not isinstance(value, str):
            problems.append(f"advanced.{key}: must be a string")
            continue
        values[key] = value
    adv = Advanced(**values)
    if not 0 < adv.dns_port < 65536 or not 0 < adv.stun_port < 65536:
        problems.append("advanced: dns_port and stun_port must be between 1 and 65535")
    base = adv.health_base_url
    if base and not base.startswith(("http://", "https://")):
        problems.append("advanced.health_base_url: must start with http:// or https://")
    return adv


def parse_config(raw: Any, path: Path) -> DeployConfig:
    """Validate a loaded YAML document; raises ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: must be a YAML mapping of settings "
                           f"(copy infra/config.yaml.example)"])
    problems: list[str] = []
    for key in raw:
        if key not in _KNOWN:
            problems.append(f"{_show(key)}: unknown setting in {path} (see "
                            f"infra/config.yaml.example)")
    values: dict[str, Any] = {k: _as_str(raw, k, problems) for k in _STR_KEYS}
    for key in _REQUIRED:
        if not values[key]:
            problems.append(f"{key}: missing in {path}; set it (see infra/config.yaml.example)")
    for key, value in values.items():
        if PLACEHOLDER in value:
            problems.append(f"{key}: still the example placeholder; replace {PLACEHOLDER}")
    dom = values["domain_name"]
    if dom and not _DOMAIN_RE.match(dom):
        problems.append(f"domain_name: {dom!r} is not a lower-case DNS name like example.org")
    for key in ("relay_subdomain", "argocd_subdomain"):
        values[key] = values[key] or ("relay" if key == "relay_subdomain" else "argocd")
        if not _LABEL_RE.match(values[key]):
            problems.append(f"{key}: {values[key]!r} is not a single DNS label like 'relay'")
    if values["acme_email"] and not _EMAIL_RE.match(values["acme_email"]):
        problems.append("acme_email: not an email address (Let's Encrypt sends expiry notices)")
    rskb = values["relay_secret_key_base"]
    if rskb and PLACEHOLDER not in rskb and len(rskb) < 32:
        problems.append("relay_secret_key_base: too short; generate one with "
                        "`openssl rand -hex 32`")
    ts = values["turn_secret"]
    if ts and len(ts) < 16:
        problems.append("turn_secret: too short (16+ characters), or leave it empty to generate")
    if values["image_tag"] and not _IMAGE_TAG_RE.match(values["image_tag"]):
        problems.append(f"image_tag: {values['image_tag']!r} is not a valid image tag")
    repo = values["gitops_repo_url"]
    if repo and not re.match(r"^(https://|ssh://|git@)", repo):
        problems.append("gitops_repo_url: must be an https://, ssh:// or git@ URL (or empty)")
    values["gitops_revision"] = values["gitops_revision"] or "main"
    for key, default in (("ssh_user", "root"), ("vps_display_name", "metadata-relay"),
                         ("vps_plan", "vps-2025-model1"), ("vps_datacenter", "SBG"),
                         ("vps_os", "Ubuntu 24.04")):
        values[key] = values[key] or default
    port_raw = raw.get("ssh_port", 22)
    ssh_port = 22
    if isinstance(port_raw, bool) or not isinstance(port_raw, int) or not 0 < port_raw < 65536:
        problems.append(f"ssh_port: {port_raw!r} is not a port number (default 22)")
    else:
        ssh_port = port_raw
    advanced = _load_advanced(raw.get("advanced"), problems)

    for key in ("ssh_public_key_path", "ssh_private_key_path"):
        if "\x00" in (values[key] or ""):
            problems.append(f"{key}: contains a NUL character; give a file path")
            values[key] = ""
    pub = Path(os.path.expanduser(values["ssh_public_key_path"] or "~/.ssh/id_ed25519.pub"))
    if not pub.is_absolute():
        pub = (path.parent / pub).resolve()
    priv_raw = values["ssh_private_key_path"]
    if priv_raw:
        priv = Path(os.path.expanduser(priv_raw))
        if not priv.is_absolute():
            priv = (path.parent / priv).resolve()
    else:
        priv = pub.with_suffix("") if pub.suffix == ".pub" else pub
    if values["ssh_public_key_path"]:
        problems.extend(check_ssh_keys(pub, priv))
    if problems:
        raise ConfigError(problems)
    values.pop("ssh_public_key_path")
    values.pop("ssh_private_key_path")
    return DeployConfig(path=path, ssh_public_key_path=pub, ssh_private_key_path=priv,
                        ssh_port=ssh_port, advanced=advanced, **values)


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
        raise ConfigError([f"{path}: config file not found; copy infra/config.yaml.example to "
                           f"{path} and fill it in"])
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{path}: not valid YAML{where}; fix the syntax"]) from exc
    return parse_config(raw, path.resolve())


def update_config_file(path: Path, updates: dict[str, str]) -> None:
    """Set top-level ``key: value`` lines, keeping every other line (and comment) as it is."""
    lines = path.read_text().splitlines()
    remaining = dict(updates)
    for i, line in enumerate(lines):
        match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", line)
        if match and match.group(1) in remaining:
            key = match.group(1)
            lines[i] = f"{key}: {json.dumps(remaining.pop(key))}"
    for key, value in remaining.items():
        lines.append(f"{key}: {json.dumps(value)}")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def generate_turn_secret() -> str:
    return secrets.token_hex(32)
