"""Config validation: one line per problem, naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_deploy.config import ConfigError, load_config, parse_config, update_config_file


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(tmp_path / "id_ed25519")
    key.write_public_key(tmp_path / "id_ed25519.pub")
    return tmp_path / "id_ed25519.pub"


def base(pub: Path) -> dict:
    return {"domain_name": "mydia.dev", "acme_email": "ops@mydia.dev",
            "cloudflare_api_token": "cf", "relay_secret_key_base": "x" * 64,
            "ssh_public_key_path": str(pub)}


def test_minimal_config_gets_the_documented_defaults(keys: Path, tmp_path: Path) -> None:
    cfg = parse_config(base(keys), tmp_path / "config.yaml")
    assert cfg.relay_host == "relay.mydia.dev" and cfg.argocd_host == "argocd.mydia.dev"
    assert cfg.ssh_user == "ubuntu" and cfg.ssh_port == 22
    assert cfg.private_key_file == keys.with_suffix("")
    assert cfg.health_url == "https://relay.mydia.dev/health"
    assert cfg.advanced.dns_resolver == "1.1.1.1" and cfg.advanced.stun_port == 3478
    assert cfg.known_hosts_path == tmp_path / "known_hosts"
    assert cfg.relay_secret_data() == {"RELAY_TOKEN_SECRET": "x" * 64, "TURN_SECRET": ""}


def test_turn_over_tls_is_on_and_the_iroh_relay_off_by_default(keys: Path, tmp_path: Path
                                                               ) -> None:
    cfg = parse_config(base(keys), tmp_path / "config.yaml")
    assert cfg.turn_host == "turn.mydia.dev"
    assert cfg.iroh_host is None and cfg.iroh_relay_url is None
    on = parse_config(base(keys) | {"iroh_relay_enabled": True, "iroh_subdomain": "p2p",
                                    "turn_tls_enabled": False}, tmp_path / "config.yaml")
    assert on.turn_host is None
    assert on.iroh_host == "p2p.mydia.dev" and on.iroh_relay_url == "https://p2p.mydia.dev"


@pytest.mark.parametrize(("change", "key"), [
    ({"turn_subdomain": "relay"}, "turn_subdomain"),
    ({"iroh_relay_enabled": True, "iroh_subdomain": "argocd"}, "iroh_subdomain"),
    ({"iroh_relay_enabled": True, "iroh_subdomain": "turn"}, "iroh_subdomain"),
    ({"iroh_relay_enabled": "yes"}, "iroh_relay_enabled"),
    ({"turn_subdomain": "a.b"}, "turn_subdomain"),
])
def test_host_names_must_be_distinct_labels(keys: Path, tmp_path: Path, change: dict,
                                            key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(base(keys) | change, tmp_path / "c.yaml")
    assert [p for p in info.value.problems if p.startswith(key)], info.value.problems


def test_a_disabled_route_may_share_its_unused_label(keys: Path, tmp_path: Path) -> None:
    cfg = parse_config(base(keys) | {"turn_tls_enabled": False, "turn_subdomain": "relay"},
                       tmp_path / "c.yaml")
    assert cfg.turn_host is None


def test_every_problem_is_reported_at_once(keys: Path, tmp_path: Path) -> None:
    raw = base(keys) | {"domain_name": "bad domain", "acme_email": "x", "ssh_port": 0,
                        "relay_subdomain": "two.labels", "turn_secret": "short",
                        "advanced": {"stun_port": 70000, "bogus": 1}, "extra": True}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, tmp_path / "c.yaml")
    problems = info.value.problems
    for key in ("domain_name", "acme_email", "ssh_port", "relay_subdomain", "turn_secret",
                "advanced.bogus", "advanced.stun_port", "extra"):
        assert any(p.startswith(key) for p in problems), (key, problems)
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize("raw", [None, [], "text", 3])
def test_non_mapping_documents(raw: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, tmp_path / "c.yaml")
    assert len(info.value.problems) == 1


def test_wrong_types(keys: Path, tmp_path: Path) -> None:
    raw = base(keys) | {"domain_name": ["a"], "ssh_port": True,
                        "advanced": {"poll_seconds": "fast", "health_verify_tls": "yes",
                                     "dns_resolver": 5}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, tmp_path / "c.yaml")
    text = "\n".join(info.value.problems)
    for key in ("domain_name: must be a string", "ssh_port", "advanced.poll_seconds",
                "advanced.health_verify_tls", "advanced.dns_resolver"):
        assert key in text


def test_passphrase_key_needs_an_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(tmp_path / "id", format_name="pkcs8-pem", passphrase="pw")
    key.write_public_key(tmp_path / "id.pub")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(ConfigError) as info:
        parse_config(base(tmp_path / "id.pub"), tmp_path / "c.yaml")
    assert "passphrase-protected" in info.value.problems[0]
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    assert parse_config(base(tmp_path / "id.pub"), tmp_path / "c.yaml")


def test_public_key_garbage(keys: Path, tmp_path: Path) -> None:
    keys.write_text("not a key\n")
    with pytest.raises(ConfigError) as info:
        parse_config(base(keys), tmp_path / "c.yaml")
    assert info.value.problems == [f"ssh_public_key_path: {keys} is not an SSH public key"]


def test_update_keeps_comments_and_other_lines(keys: Path, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = "# my notes\n" + yaml.safe_dump(base(keys)) + "vps_name: \"\"  # filled in\n"
    path.write_text(text)
    update_config_file(path, {"vps_name": "vps-1.ovh.net", "vps_ip": "203.0.113.5"})
    out = path.read_text()
    assert out.startswith("# my notes\n")
    cfg = load_config(path)
    assert cfg.vps_name == "vps-1.ovh.net" and cfg.vps_ip == "203.0.113.5"
    assert cfg.domain_name == "mydia.dev"
    assert (path.stat().st_mode & 0o777) == 0o600


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("domain_name: a\nb: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML at line" in info.value.problems[0]


def test_example_config_only_lacks_the_placeholders(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[3] / "infra" / "config.yaml.example"
    raw = yaml.safe_load(example.read_text())
    with pytest.raises(ConfigError) as info:
        parse_config(raw, tmp_path / "config.yaml")
    assert all("placeholder" in p or "ssh_" in p for p in info.value.problems), \
        info.value.problems


_KEYS = ["domain_name", "acme_email", "cloudflare_api_token", "relay_secret_key_base",
         "ssh_public_key_path", "ssh_port", "relay_subdomain", "turn_secret", "image_tag",
         "gitops_repo_url", "advanced", "vps_name", "iroh_relay_digest",
         "iroh_relay_pinned_image", "junk"]
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=40), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=12), st.integers(), max_size=3))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=len(_KEYS)))
def test_any_document_is_accepted_or_rejected_with_lines(raw: dict, tmp_path: Path) -> None:
    try:
        parse_config(raw, tmp_path / "c.yaml")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and "\n" not in p
                                    for p in exc.problems)


def test_tool_written_settings_are_checked(keys: Path, tmp_path: Path) -> None:
    for raw, expect in (
        ({"vps_order_id": "12ab"}, "vps_order_id: is written by the tool"),
        ({"vps_ip": "not-an-ip"}, "vps_ip: 'not-an-ip' is not an IP address"),
        ({"image_pull_username": "me"}, "image_pull_token: set both"),
        ({"ssh_user": "Root Admin"}, "ssh_user: 'Root Admin' is not a login name"),
        ({"vps_order_configuration": ["x"]}, "vps_order_configuration: must map"),
        ({"advanced": "fast"}, "advanced: must be a mapping of settings"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(base(keys) | raw, tmp_path / "c.yaml")
        assert [p for p in info.value.problems if p.startswith(expect)], (expect, info.value)
    cfg = parse_config(base(keys) | {"vps_order_id": 4242, "vps_order_configuration":
                                     {"vps_install_rtm": "no"}}, tmp_path / "c.yaml")
    assert cfg.vps_order_id == "4242" and cfg.ordered_vps
    assert cfg.vps_order_configuration == {"vps_install_rtm": "no"}
    moved = cfg.updated(vps_name="vps-1.ovh.net")
    assert moved.vps_name == "vps-1.ovh.net" and moved.path == tmp_path / "c.yaml"


def test_update_never_writes_through_a_planted_temp_file(keys: Path, tmp_path: Path) -> None:
    """A symlink planted where a predictable temp file would go is never followed, and a stale
    world-readable temp file never makes the result readable by others."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base(keys)))
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    for name in ("config.yaml.tmp", ".config.yaml.tmp", "config.tmp"):
        (tmp_path / name).symlink_to(victim)
    stale = tmp_path / "config.yaml.relay-deploy.tmp"
    stale.write_text("stale")
    stale.chmod(0o666)
    update_config_file(path, {"turn_secret": "s" * 32})
    assert victim.read_text() == "untouched\n"
    assert (path.stat().st_mode & 0o777) == 0o600 and not path.is_symlink()
    assert load_config(path).turn_secret == "s" * 32
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"config.yaml", "victim", "config.yaml.tmp", ".config.yaml.tmp", "config.tmp",
                    "config.yaml.relay-deploy.tmp", "id_ed25519", "id_ed25519.pub"}


def test_update_replaces_a_symlinked_config_instead_of_writing_through_it(
        keys: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.yaml"
    real.write_text(yaml.safe_dump(base(keys)))
    real.chmod(0o644)
    path = tmp_path / "config.yaml"
    path.symlink_to(real)
    update_config_file(path, {"vps_name": "vps-9"})
    assert not path.is_symlink() and (path.stat().st_mode & 0o777) == 0o600
    assert "vps-9" not in real.read_text()


def test_example_datacentre_is_one_the_example_endpoint_sells() -> None:
    """ovh.conf.example's endpoint and config.yaml.example's datacentre go together (the old
    example paired SBG with ovh-us, which OVH refuses)."""
    import configparser

    infra = Path(__file__).resolve().parents[3] / "infra"
    parser = configparser.ConfigParser()
    parser.read_string((infra / "ovh.conf.example").read_text())
    endpoint = parser.get("default", "endpoint")
    datacenter = yaml.safe_load((infra / "config.yaml.example").read_text())["vps_datacenter"]
    regions = {"ovh-us": ("US-",), "ovh-ca": ("BHS", "TOR", "CA-"),
               "ovh-eu": ("SBG", "GRA", "RBX", "WAW", "LIM", "ERI", "EU-")}
    assert datacenter.startswith(regions[endpoint]), (endpoint, datacenter)


DIGEST = "sha256:" + "3f" * 32


@pytest.mark.parametrize(("key", "value"), [
    ("iroh_relay_digest", "sha256:" + "3F" * 32),  # registries write lower case
    ("iroh_relay_digest", "sha256:" + "3f" * 31),
    ("iroh_relay_digest", "3f" * 32),
    ("iroh_relay_digest", "sha512:" + "3f" * 64),
    ("iroh_relay_digest", DIGEST + "\nimage: evil"),
    ("iroh_relay_pinned_image", DIGEST),
    ("iroh_relay_pinned_image", f"n0computer/iroh-relay@{DIGEST}"),
    ("iroh_relay_pinned_image", f"n0computer/iroh-relay:v0.96.1@sha256:{'3f' * 30}"),
    ("advanced.image_registry_url", "registry-1.docker.io"),
])
def test_iroh_relay_digests_are_validated(keys: Path, tmp_path: Path, key: str,
                                          value: str) -> None:
    raw = base(keys)
    if key.startswith("advanced."):
        raw["advanced"] = {key.split(".", 1)[1]: value}
    else:
        raw[key] = value
    with pytest.raises(ConfigError) as info:
        parse_config(raw, tmp_path / "c.yaml")
    assert [p for p in info.value.problems if p.startswith(key)], info.value.problems
    assert all("\n" not in p for p in info.value.problems)


def test_iroh_relay_digests_as_written(keys: Path, tmp_path: Path) -> None:
    cfg = parse_config(base(keys) | {
        "iroh_relay_digest": DIGEST,
        "iroh_relay_pinned_image": f"registry.example:5000/n0/iroh-relay:v0.96.1@{DIGEST}",
        "advanced": {"image_registry_url": "http://127.0.0.1:5000"}}, tmp_path / "c.yaml")
    assert cfg.iroh_relay_digest == DIGEST
    assert cfg.iroh_relay_pinned_image.endswith(f":v0.96.1@{DIGEST}")
    assert cfg.advanced.image_registry_url == "http://127.0.0.1:5000"
    default = parse_config(base(keys), tmp_path / "c.yaml")
    assert (default.iroh_relay_digest, default.iroh_relay_pinned_image) == ("", "")
    assert default.advanced.image_registry_url == ""  # the image's own: Docker Hub
