"""Where the OVH credentials come from, and the clear line when they are missing."""

from __future__ import annotations

from pathlib import Path

import ovh.client
import pytest

from relay_deploy.config import ConfigError
from relay_deploy.ovh_api import load_ovh_credentials


def test_explicit_file_with_named_endpoint(tmp_path: Path) -> None:
    conf = tmp_path / "ovh.conf"
    conf.write_text("[default]\nendpoint=ovh-eu\n\n[ovh-eu]\napplication_key=a\n"
                    "application_secret=s\nconsumer_key=c\n")
    creds = load_ovh_credentials(conf)
    assert (creds.endpoint, creds.application_key, creds.consumer_key) == ("ovh-eu", "a", "c")
    assert creds.client()._endpoint == "https://eu.api.ovh.com/1.0"


def test_base_url_endpoint_is_registered_with_python_ovh(tmp_path: Path) -> None:
    conf = tmp_path / "ovh.conf"
    url = "http://127.0.0.1:9/1.0"
    conf.write_text(f"[default]\nendpoint={url}\n\n[{url}]\napplication_key=a\n"
                    "application_secret=s\nconsumer_key=c\n")
    client = load_ovh_credentials(conf).client()
    assert ovh.client.ENDPOINTS[url] == url and client._endpoint == url


@pytest.mark.parametrize(("text", "expect"), [
    ("[default]\n", "endpoint missing"),
    ("[default]\nendpoint=ovh-moon\n", "ovh-moon"),
    ("[default]\nendpoint=ovh-us\n[ovh-us]\napplication_key=REPLACE_ME\n", "application_key"),
    ("not an ini file", "not a valid python-ovh INI"),
])
def test_bad_files(tmp_path: Path, text: str, expect: str) -> None:
    conf = tmp_path / "ovh.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_ovh_credentials(conf)
    assert expect in info.value.problems[0]


def test_environment_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for key, value in (("OVH_ENDPOINT", "ovh-ca"), ("OVH_APPLICATION_KEY", "a"),
                       ("OVH_APPLICATION_SECRET", "s"), ("OVH_CONSUMER_KEY", "c")):
        monkeypatch.setenv(key, value)
    repo_conf = Path(__file__).resolve().parents[3] / "infra" / "ovh.conf"
    if repo_conf.exists():
        pytest.skip("a real infra/ovh.conf exists in this checkout")
    creds = load_ovh_credentials(None)
    assert creds.source == "environment" and creds.endpoint == "ovh-ca"
    monkeypatch.delenv("OVH_CONSUMER_KEY")
    with pytest.raises(ConfigError) as info:
        load_ovh_credentials(None)
    assert info.value.problems[0].startswith("OVH_CONSUMER_KEY")
    for key in ("OVH_ENDPOINT", "OVH_APPLICATION_KEY", "OVH_APPLICATION_SECRET"):
        monkeypatch.delenv(key)
    with pytest.raises(ConfigError) as info:
        load_ovh_credentials(None)
    assert "infra/ovh.conf.example" in info.value.problems[0]


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_ovh_credentials(tmp_path / "nope.conf")
    assert "not found" in info.value.problems[0]


@pytest.mark.parametrize("text", [
    "application_secret=very-secret-value\n[default]\nendpoint=ovh-eu\n",
    "[default]\nendpoint=ovh-eu\n[ovh-eu]\napplication_secret=very-secret-value\n"
    "application_secret=very-secret-value\n",
    "[default]\nendpoint=ovh-eu\n[ovh-eu]\n  very-secret-value\n[[x\n",
    "[default]\nendpoint=ovh-eu\n[ovh-eu]\nconsumer_key very-secret-value\n",
])
def test_parse_errors_never_echo_a_secret(tmp_path: Path, text: str) -> None:
    conf = tmp_path / "ovh.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_ovh_credentials(conf)
    assert "very-secret-value" not in str(info.value)
    assert "line" in info.value.problems[0], info.value.problems
