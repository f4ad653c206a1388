"""OVHcloud API access: credentials discovery, finding the relay's VPS, ordering one.

python-ovh does the signing. An ``endpoint`` that is a base URL (``http://127.0.0.1:8080/1.0``)
is registered with python-ovh as a named endpoint, which is how tests use a fake API.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ovh
import ovh.client
import ovh.exceptions

from relay_deploy.config import ConfigError

ENV_KEYS = ("OVH_ENDPOINT", "OVH_APPLICATION_KEY", "OVH_APPLICATION_SECRET", "OVH_CONSUMER_KEY")


@dataclass(frozen=True)
class OvhCredentials:
    endpoint: str
    application_key: str
    application_secret: str
    consumer_key: str
    source: str

    def client(self) -> ovh.Client:
        endpoint = self.endpoint
        if endpoint.startswith(("http://", "https://")):
            ovh.client.ENDPOINTS[endpoint] = endpoint.rstrip("/")
        return ovh.Client(endpoint=endpoint, application_key=self.application_key,
                          application_secret=self.application_secret,
                          consumer_key=self.consumer_key, timeout=(10, 60))


def ovh_config_candidates() -> list[Path]:
    repo_infra = Path(__file__).resolve().parents[2] / "infra" / "ovh.conf"
    return [repo_infra, Path("infra/ovh.conf"), Path("ovh.conf"),
            Path("~/.config/ovh.conf").expanduser(), Path("~/.ovh.conf").expanduser()]


def load_ovh_credentials(explicit: Path | None) -> OvhCredentials:
    """From ``explicit``, else the first existing candidate file, else ``OVH_*`` variables."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError([f"{explicit}: OVH config file not found (--ovh-config); copy "
                               f"infra/ovh.conf.example and fill in your API keys"])
        return _from_file(explicit)
    for candidate in ovh_config_candidates():
        if candidate.is_file():
            return _from_file(candidate)
    env = {k: os.environ.get(k, "").strip() for k in ENV_KEYS}
    if any(env.values()):
        missing = [k for k, v in env.items() if not v]
        if missing:
            raise ConfigError([f"{k}: environment variable missing (OVH credentials from the "
                               f"environment need all of {', '.join(ENV_KEYS)})"
                               for k in missing])
        return OvhCredentials(env["OVH_ENDPOINT"], env["OVH_APPLICATION_KEY"],
                              env["OVH_APPLICATION_SECRET"], env["OVH_CONSUMER_KEY"],
                              "environment")
    raise ConfigError(["OVH credentials not found: copy infra/ovh.conf.example to "
                       "infra/ovh.conf and fill it in (or pass --ovh-config PATH)"])


def _from_file(path: Path) -> OvhCredentials:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(), source=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{path}: cannot read the OVH config file ({reason})"]) from None
    except configparser.Error as exc:
        # the exception's text quotes the offending line, which may hold a secret: name only
        # the kind of mistake and its line number
        raise ConfigError([f"{path}: not a valid python-ovh INI file ({_ini_problem(exc)}); "
                           f"compare with infra/ovh.conf.example"]) from None
    endpoint = parser.get("default", "endpoint", fallback="").strip()
    if not endpoint:
        raise ConfigError([f"{path}: [default] endpoint missing (ovh-eu, ovh-us, ovh-ca, "
                           f"or a base URL)"])
    if endpoint not in ovh.client.ENDPOINTS and not endpoint.startswith(("http://", "https://")):
        raise ConfigError([f"{path}: endpoint {endpoint!r} unknown; use one of "
                           f"{', '.join(sorted(ovh.client.ENDPOINTS))} or a base URL"])
    problems: list[str] = []
    values: dict[str, str] = {}
    for key in ("application_key", "application_secret", "consumer_key"):
        value = parser.get(endpoint, key, fallback="").strip()
        if not value or "REPLACE_ME" in value:
            problems.append(f"{path}: [{endpoint}] {key} missing; fill in your API credentials")
        values[key] = value
    if problems:
        raise ConfigError(problems)
    return OvhCredentials(endpoint, values["application_key"], values["application_secret"],
                          values["consumer_key"], str(path))


def _ini_problem(exc: configparser.Error) -> str:
    line = getattr(exc, "lineno", None)
    errors = getattr(exc, "errors", None)
    if not line and errors:
        line = errors[0][0]
    kind = {
        "MissingSectionHeaderError": "no [section] header before the first setting",
        "DuplicateSectionError": "a [section] appears twice",
        "DuplicateOptionError": "a setting appears twice in one section",
        "ParsingError": "a line that is neither [section] nor key=value",
    }.get(type(exc).__name__, type(exc).__name__)
    return f"{kind}{f' at line {line}' if line else ''}"


@dataclass(frozen=True)
class Vps:
    name: str
    state: str
    display_name: str
    ip: str

    @property
    def running(self) -> bool:
        return self.state == "running"


class OrderFailed(Exception):
    pass


class OvhVps:
    """The VPS calls the deploy tool makes (reads always; writes only from ``order``)."""

    def __init__(self, client: ovh.Client) -> None:
        self.client = client

    def get(self, name: str) -> Vps | None:
        try:
            info: dict[str, Any] = self.client.get(f"/vps/{name}")
        except ovh.exceptions.ResourceNotFoundError:
            return None
        return Vps(name=name, state=str(info.get("state", "")),
                   display_name=str(info.get("displayName") or ""), ip=self.ipv4(name))

    def ipv4(self, name: str) -> str:
        ips: list[str] = self.client.get(f"/vps/{name}/ips")
        v4 = [ip for ip in ips if ":" not in ip]
        return v4[0] if v4 else ""

    def names(self) -> list[str]:
        return [str(n) for n in self.client.get("/vps")]

    def find_named(self, display_name: str) -> Vps | None:
        """A running VPS whose display name contains ``display_name`` (never any other VPS:
        installing k3s on an unrelated server would be destructive)."""
        for name in self.names():
            info: dict[str, Any] = self.client.get(f"/vps/{name}")
            shown = str(info.get("displayName") or "")
            if info.get("state") == "running" and display_name.lower() in shown.lower():
                return Vps(name=name, state="running", display_name=shown, ip=self.ipv4(name))
        return None

    def install_ssh_key(self, vps: Vps, *, os_name: str, public_key: str,
                        wait: Callable[[Callable[[], Vps | None]], Vps | None]) -> Vps:
        """Rebuild a freshly delivered VPS with ``os_name`` and our public key (so we can log
        in). Only ever called right after ordering: a rebuild erases the disk."""
        ids: list[Any] = self.client.get(f"/vps/{vps.name}/images/available")
        images: dict[str, Any] = {}
        for image_id in ids:
            info: dict[str, Any] = self.client.get(f"/vps/{vps.name}/images/available/{image_id}")
            images[str(info.get("name", ""))] = info.get("id", image_id)
        chosen = _pick(sorted(images), os_name, "image")
        self.client.post(f"/vps/{vps.name}/rebuild", imageId=images[chosen],
                         publicSshKey=public_key, doNotSendPassword=True)

        def rebuilt() -> Vps | None:
            now = self.get(vps.name)
            return now if now is not None and now.running else None

        done = wait(rebuilt)
        if done is None:
            raise OrderFailed(f"VPS {vps.name} is still being rebuilt with your SSH key; run "
                              f"again in a few minutes")
        return done

    def order(self, *, plan: str, datacenter: str, os_name: str, display_name: str,
              confirm: Callable[[str], bool], wait: Callable[[Callable[[], Vps | None]],
                                                           Vps | None],
              public_key: str, on_cart: Callable[[str], None] | None = None) -> Vps | None:
        """Order one VPS through a cart; returns it once running, or None if not confirmed.

        The cart is deleted in every case (declined, failure, Ctrl-C, success).
        """
        known = set(self.names())
        me: dict[str, Any] = self.client.get("/me")
        subsidiary = str(me.get("ovhSubsidiary") or "US")
        cart: dict[str, Any] = self.client.post("/order/cart", ovhSubsidiary=subsidiary,
                                                description="metadata-relay deploy")
        cart_id = str(cart["cartId"])
        if on_cart:
            on_cart(cart_id)
        try:
            offers: list[dict[str, Any]] = self.client.get(f"/order/cart/{cart_id}/vps")
            codes = [str(o.get("planCode")) for o in offers]
            if plan not in codes:
                raise OrderFailed(f"plan {plan!r} is not offered to this account; set vps_plan "
                                  f"to one of: {', '.join(codes) or '(none)'}")
            item: dict[str, Any] = self.client.post(
                f"/order/cart/{cart_id}/vps", planCode=plan, duration="P1M",
                pricingMode="default", quantity=1)
            item_id = item["itemId"]
            required: list[dict[str, Any]] = self.client.get(
                f"/order/cart/{cart_id}/item/{item_id}/requiredConfiguration")
            chosen: dict[str, str] = {}
            for conf in required:
                label = str(conf.get("label"))
                allowed = [str(v) for v in conf.get("allowedValues") or []]
                if "datacenter" in label:
                    value = _pick(allowed, datacenter, label)
                elif label.endswith("_os") or label == "os" or "image" in label:
                    value = _pick(allowed, os_name, label)
                elif conf.get("required"):
                    raise OrderFailed(f"the order needs {label!r}, which this tool does not "
                                      f"know how to fill in")
                else:
                    continue
                chosen[label] = value
                self.client.post(f"/order/cart/{cart_id}/item/{item_id}/configuration",
                                 label=label, value=value)
            self.client.post(f"/order/cart/{cart_id}/assign")
            preview: dict[str, Any] = self.client.get(f"/order/cart/{cart_id}/checkout")
            price = ((preview.get("prices") or {}).get("withTax") or {}).get("text", "?")
            summary = (f"order OVH VPS {plan} ({', '.join(chosen.values())}) for {price} "
                       f"per month")
            if not confirm(summary):
                return None
            self.client.post(f"/order/cart/{cart_id}/checkout",
                             autoPayWithPreferredPaymentMethod=True,
                             waiveRetractationPeriod=False)
        finally:
            try:
                self.client.delete(f"/order/cart/{cart_id}")
            except ovh.exceptions.ResourceNotFoundError:
                pass  # carts vanish once checked out on some endpoints

        def delivered() -> Vps | None:
            for name in self.names():
                if name in known:
                    continue
                vps = self.get(name)
                if vps is not None and vps.running and vps.ip:
                    return vps
            return None

        vps = wait(delivered)
        if vps is None:
            raise OrderFailed("the VPS was ordered but is not running yet; run the vps phase "
                              "again later (it finds the new VPS instead of ordering another)")
        self.client.put(f"/vps/{vps.name}", displayName=display_name)
        vps = self.install_ssh_key(vps, os_name=os_name, public_key=public_key, wait=wait)
        return Vps(vps.name, vps.state, display_name, vps.ip)


def _pick(allowed: list[str], wanted: str, label: str) -> str:
    for value in allowed:
        if value.lower() == wanted.lower():
            return value
    norm = wanted.lower().replace(" ", "").replace(".", "")
    for value in allowed:
        if norm in value.lower().replace(" ", "").replace(".", "").replace("-", ""):
            return value
    raise OrderFailed(f"{label}: {wanted!r} is not available; allowed: {', '.join(allowed)}")
