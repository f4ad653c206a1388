"""OVHcloud API access: credentials discovery, the guarded API client, the token request.

python-ovh does the signing. An ``endpoint`` that is a base URL (``http://127.0.0.1:8080/1.0``)
is registered with python-ovh as a named endpoint, which is how tests use a fake API.
:class:`OvhApi` makes only the calls declared in :mod:`relay_deploy.ovh_rights`, whose list
is also what :func:`request_consumer_key` asks OVH to grant.
"""

from __future__ import annotations

import configparser
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ovh
import ovh.client
import ovh.exceptions

from relay_deploy.config import ConfigError
from relay_deploy.files import write_private
from relay_deploy.ovh_rights import access_rules, declared

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

    def api(self) -> OvhApi:
        return OvhApi(self.client())


def ovh_config_candidates() -> list[Path]:
    repo_infra = Path(__file__).resolve().parents[2] / "infra" / "ovh.conf"
    return [repo_infra, Path("infra/ovh.conf"), Path("ovh.conf"),
            Path("~/.config/ovh.conf").expanduser(), Path("~/.ovh.conf").expanduser()]


def load_ovh_credentials(explicit: Path | None, *,
                         need_consumer_key: bool = True) -> OvhCredentials:
    """From ``explicit``, else the first existing candidate file, else ``OVH_*`` variables."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError([f"{explicit}: OVH config file not found (--ovh-config); copy "
                               f"infra/ovh.conf.example and fill in your API keys"])
        return _from_file(explicit, need_consumer_key)
    for candidate in ovh_config_candidates():
        if candidate.is_file():
            return _from_file(candidate, need_consumer_key)
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


def _from_file(path: Path, need_consumer_key: bool) -> OvhCredentials:
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
        if "REPLACE_ME" in value:
            value = ""
        if not value and key == "consumer_key":
            if need_consumer_key:
                problems.append(f"{path}: [{endpoint}] consumer_key missing; run "
                                f"`./infra/deploy ovh-token` to get one with the right rights")
        elif not value:
            problems.append(f"{path}: [{endpoint}] {key} missing; fill in your API credentials "
                            f"(create an application: infra/README.md)")
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


class OvhApi:
    """python-ovh, restricted to the calls declared in :mod:`relay_deploy.ovh_rights`."""

    def __init__(self, client: ovh.Client) -> None:
        self.client = client

    def call(self, method: str, template: str, *, body: dict[str, Any] | None = None,
             **params: str | int) -> Any:
        return self._send(method, template, body, None, params)

    def get(self, template: str, *, query: dict[str, str] | None = None,
            **params: str | int) -> Any:
        return self._send("GET", template, None, query, params)

    def post(self, template: str, body: dict[str, Any] | None = None,
             **params: str | int) -> Any:
        return self._send("POST", template, body, None, params)

    def _send(self, method: str, template: str, body: dict[str, Any] | None,
              query: dict[str, str] | None, params: dict[str, str | int]) -> Any:
        call = declared(method, template)
        path = template.format(**{k: urllib.parse.quote(str(v), safe="")
                                  for k, v in params.items()})
        if query:
            path += "?" + urllib.parse.urlencode(query)
        try:
            return self.client.call(method, path, body, True)
        except ovh.exceptions.NotGrantedCall as exc:
            raise ovh.exceptions.NotGrantedCall(
                f"{method} {call.rule_path} is not granted to this consumer key; run "
                f"`./infra/deploy ovh-token` for a key with exactly the rights the tool needs "
                f"(listed in infra/README.md)", response=exc.response) from None


def busy(exc: Exception) -> bool:
    """OVH's refusal of an action while tasks run on the VPS (retry once they are done)."""
    return isinstance(exc, ovh.exceptions.APIError) and "running task" in str(exc).lower()


def outcome_unknown(exc: Exception) -> bool:
    """The request may or may not have been carried out: no answer, or a server error."""
    if isinstance(exc, ovh.exceptions.HTTPError | ovh.exceptions.InvalidResponse):
        return True
    response = getattr(exc, "response", None)
    return isinstance(exc, ovh.exceptions.APIError) and (
        response is None or getattr(response, "status_code", 500) >= 500)


def request_consumer_key(creds: OvhCredentials) -> dict[str, Any]:
    """Ask OVH for a consumer key granting exactly :func:`access_rules` (python-ovh's
    consumer-key request); the operator validates it at the returned ``validationUrl``."""
    client = OvhCredentials(creds.endpoint, creds.application_key, creds.application_secret,
                            "", creds.source).client()
    request = client.new_consumer_key_request()
    for rule in access_rules():
        request.add_rule(rule["method"], rule["path"])
    answer: dict[str, Any] = request.request()
    return answer


def store_consumer_key(path: Path, endpoint: str, consumer_key: str) -> None:
    """Set ``consumer_key`` in section ``[endpoint]`` of the INI file, keeping every other line."""
    lines = path.read_text().splitlines()
    section, found = -1, -1
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith("["):
            if section >= 0:
                break
            if text == f"[{endpoint}]":
                section = i
        elif section >= 0 and re.match(r"consumer_key\s*[=:]", text):
            found = i
    if found >= 0:
        lines[found] = f"consumer_key={consumer_key}"
    elif section >= 0:
        lines.insert(section + 1, f"consumer_key={consumer_key}")
    else:
        lines += ["", f"[{endpoint}]", f"consumer_key={consumer_key}"]
    write_private(path, "\n".join(lines) + "\n")
