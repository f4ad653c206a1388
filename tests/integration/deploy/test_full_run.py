"""Full runs of the real CLI (a subprocess) against every loopback double."""

from __future__ import annotations

import base64
import re

import yaml

from relay_deploy import platform
from relay_deploy.ovh_rights import CALLS
from tests.doubles.fake_ovh import FakeVps
from tests.integration.deploy.conftest import DOMAIN, World

SECRETS = ("cf-token-secret", "k" * 64, "tmdb-secret-key")
DECLARED = {(c.method, c.template) for c in CALLS}


def _template(path: str) -> str:
    """The declared template a concrete path is an instance of (or the path itself)."""
    for call in CALLS:
        pattern = re.sub(r"\\{[A-Za-z]+\\}", "[^/]+", re.escape(call.template))
        if re.fullmatch(pattern, path):
            return call.template
    return path


def _expected_objects() -> list[dict]:
    objs = platform.platform_objects(domain=DOMAIN, acme_email="ops@mydia.test")
    objs += platform.cluster_issuers(acme_email="ops@mydia.test")
    objs += platform.app_objects(domain=DOMAIN)
    return objs


def _key(obj: dict) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


async def test_full_run_from_empty_account_then_second_run_changes_nothing(world: World) -> None:
    kube_path = world.tmp / "home" / ".kube" / "config"
    kube_path.parent.mkdir()
    other = {"apiVersion": "v1", "kind": "Config", "current-context": "work",
             "clusters": [{"name": "work", "cluster": {"server": "https://work.example"}}],
             "users": [{"name": "work", "user": {"token": "work-token"}}],
             "contexts": [{"name": "work", "context": {"cluster": "work", "user": "work"}}]}
    kube_path.write_text(yaml.safe_dump(other))
    first = await world.deploy("--yes", fresh=True)  # a plain `python -m relay_deploy.cli`
    assert first.rc == 0, first.text

    # exactly one VPS ordered and paid; the checked-out cart is not deleted (it is the order)
    assert len(world.ovh.orders) == 1 and len(world.ovh.checkouts()) == 1
    assert world.ovh.calls_to("DELETE", "") == []
    assert world.ovh.bad_signatures == 0 and world.ovh.not_granted == []
    ((order_id, order),) = world.ovh.orders.items()
    assert order.config == {"vps_datacenter": "EU-WEST-SBG", "vps_os": "Ubuntu 24.04",
                            "vps_install_rtm": "no"}
    (name,) = world.ovh.vps
    assert world.ovh.vps[name].display_name == "metadata-relay"
    # the new VPS was rebuilt once, after OVH's delivery task, with Ubuntu 24.04 and our key
    pub = (world.tmp / "keys" / "id_ed25519.pub").read_text().strip()
    assert world.ovh.rebuilds == [{"vps": name, "imageId": "img-ubu2404", "publicSshKey": pub,
                                   "doNotSendPassword": True}]
    assert [c for c in world.ovh.refused if c.path.endswith("/rebuild")] == []
    saved = world.saved()
    assert saved["vps_order_id"] == str(order_id)
    assert saved["vps_name"] == name and saved["vps_ip"] == "127.0.0.1"
    assert len(saved["turn_secret"]) == 64
    # every OVH call is one the token's rules name (the fake enforces them as OVH does)
    assert {(c.method, _template(c.path)) for c in world.ovh.calls} <= DECLARED

    # as ubuntu with sudo -n: the firewall first, then k3s once, at the pinned version
    assert all(c.startswith("sudo -n ") or c in ("command -v nft", 'echo "$SSH_CONNECTION"')
               or "| sudo -n env INSTALL_K3S_VERSION=" in c for c in world.vps.commands)
    assert len(world.vps.installs) == 1
    assert f"INSTALL_K3S_VERSION={platform.load_k3s_pin().version}" in world.vps.installs[0] \
        or f"INSTALL_K3S_VERSION='{platform.load_k3s_pin().version}'" in world.vps.installs[0]
    firewall_at = world.vps.commands.index("sudo -n nft -f /etc/metadata-relay/firewall.nft")
    assert firewall_at < world.vps.commands.index(next(c for c in world.vps.commands
                                                       if "get.k3s.io" in c))
    rules = world.vps.files["/etc/metadata-relay/firewall.nft"]
    assert world.vps.nft_loaded == rules
    assert "metadata-relay-firewall.service" in world.vps.enabled_units
    assert "ip saddr 127.0.0.1 tcp dport 6443 accept" in rules
    assert "4001" not in rules and "10250" not in rules
    assert (world.config_path.parent / "known_hosts").read_text().startswith("[127.0.0.1]:")
    kube_cfg = yaml.safe_load(kube_path.read_text())
    assert [c["name"] for c in kube_cfg["contexts"]] == ["work", "metadata-relay"]
    assert kube_cfg["current-context"] == "work"
    assert kube_cfg["users"][0] == other["users"][0]

    # every manifest applied, plus both secrets with the right data
    live = {_key(o) for o in world.kube.objects.values()}
    for obj in _expected_objects():
        assert _key(obj) in live, _key(obj)
    relay = world.kube.get("v1", "secrets", "metadata-relay", "metadata-relay-secrets")
    assert relay is not None
    data = {k: base64.b64decode(v).decode() for k, v in relay["data"].items()}
    assert data == {"RELAY_TOKEN_SECRET": "k" * 64, "TMDB_API_KEY": "tmdb-secret-key",
                    "TURN_SECRET": saved["turn_secret"]}
    cf = world.kube.get("v1", "secrets", "external-dns", "cloudflare-api-token")
    assert cf is not None
    assert base64.b64decode(cf["data"]["cloudflare_api_token"]).decode() == "cf-token-secret"
    assert world.kube.unauthorized == 0
    assert not any(c.dry_run for c in world.kube.calls)

    # verified, and secrets never printed
    assert world.health.hits >= 1 and world.stun.requests >= 1
    assert "relay.mydia.test" in world.dns.queries
    for secret in (*SECRETS, saved["turn_secret"]):
        assert secret not in first.text
    assert "turn:127.0.0.1:3478" in first.out and "argocd-initial-admin-secret" in first.out

    # second run: same result, not one mutating call on any double
    n_ovh, n_kube, n_ssh = len(world.ovh.calls), len(world.kube.calls), len(world.vps.commands)
    n_changes = len(world.vps.mutations())
    before = dict(world.kube.objects)
    config_before = world.config_path.read_text()
    second = await world.deploy()  # no --yes needed: nothing to buy
    assert second.rc == 0, second.text
    assert [c for c in world.ovh.calls[n_ovh:] if c.method != "GET"] == []
    assert [c for c in world.kube.calls[n_kube:] if c.method != "GET"] == []
    assert len(world.vps.installs) == 1 and len(world.vps.mutations()) == n_changes
    assert all("get.k3s.io" not in c for c in world.vps.commands[n_ssh:])
    assert world.kube.objects == before
    assert world.config_path.read_text() == config_before
    assert "Done: 0 changes" in second.out
    for phase in ("vps", "kubeconfig", "kubernetes", "app"):
        assert f"{phase}: nothing to change" in second.out

    # a dry run of a deployed system plans nothing and mutates nothing
    n_ovh, n_kube = len(world.ovh.calls), len(world.kube.calls)
    dry = await world.deploy("--dry-run")
    assert dry.rc == 0, dry.text
    assert "Plan: 0 changes" in dry.out
    assert [c for c in world.ovh.calls[n_ovh:] if c.method != "GET"] == []
    assert [c for c in world.kube.calls[n_kube:] if c.method != "GET"] == []

    # --status: one table, read-only
    n_ovh, n_kube = len(world.ovh.calls), len(world.kube.calls)
    status = await world.deploy("--status")
    assert status.rc == 0, status.text
    for row in ("VPS", "Node", "cert-manager", "external-dns", "argocd-server", "traefik",
                "ClusterIssuer letsencrypt-prod", "Certificate", "DNS", "Health", "TURN"):
        assert row in status.out, row
    assert "FAIL" not in status.out, status.out
    assert [c for c in world.ovh.calls[n_ovh:] if c.method != "GET"] == []
    assert [c for c in world.kube.calls[n_kube:] if c.method != "GET"] == []


async def test_changed_setting_is_planned_by_dry_run_then_applied(world: World) -> None:
    assert (await world.deploy("--yes")).rc == 0
    config = world.saved()
    config["acme_email"] = "new-ops@mydia.test"
    world.write_config(**config)
    before = {k: v for k, v in world.kube.objects.items()}
    n_kube = len(world.kube.calls)
    dry = await world.deploy("--dry-run")
    assert dry.rc == 0, dry.text
    assert "would update ClusterIssuer letsencrypt-prod" in dry.out
    patches = [c for c in world.kube.calls[n_kube:] if c.method == "PATCH"]
    assert patches and all(c.dry_run for c in patches)
    assert world.kube.objects == before
    real = await world.deploy()
    assert real.rc == 0, real.text
    issuer = world.kube.get("cert-manager.io/v1", "clusterissuers", "", "letsencrypt-prod")
    assert issuer is not None
    assert issuer["spec"]["acme"]["email"] == "new-ops@mydia.test"
    assert "update ClusterIssuer letsencrypt-prod" in real.out


async def test_existing_vps_named_for_the_relay_is_reused_not_ordered(world: World) -> None:
    world.ovh.vps["vps-other"] = FakeVps("vps-other", "running", "my blog", "192.0.2.10")
    world.ovh.vps["vps-relay"] = FakeVps("vps-relay", "running", "metadata-relay", "127.0.0.1")
    result = await world.deploy("--phase", "vps")
    assert result.rc == 0, result.text
    assert world.ovh.mutating() == []
    assert world.saved()["vps_name"] == "vps-relay"
    assert world.vps.commands == [] and world.kube.calls == []


async def test_gitops_mode_applies_the_argocd_applications(world: World) -> None:
    world.write_config(gitops_repo_url="https://github.com/example/metadata-relay.git",
                       gitops_revision="release", image_tag="0.2.0", iroh_relay_enabled=True)
    result = await world.deploy("--yes", "--skip", "verify")
    assert result.rc == 0, result.text
    app = world.kube.get("argoproj.io/v1alpha1", "applications", "argocd", "metadata-relay")
    assert app is not None
    source = app["spec"]["source"]
    assert source["repoURL"] == "https://github.com/example/metadata-relay.git"
    assert source["targetRevision"] == "release"
    assert source["path"] == "infra/kubernetes/apps/metadata-relay"
    assert any("0.2.0" in str(i) for i in source["kustomize"].get("images", []))
    assert source["kustomize"]["components"] == ["components/turn-tls"]  # TURN over TLS
    assert app["spec"]["syncPolicy"]["automated"]["prune"] is True
    assert app["spec"]["syncPolicy"]["automated"]["selfHeal"] is True
    # the Secret is created by the tool (never in Git); the rest is Argo CD's job
    assert world.kube.get("v1", "secrets", "metadata-relay", "metadata-relay-secrets")
    assert world.kube.get("apps/v1", "deployments", "metadata-relay", "metadata-relay") is None
    # the iroh relay: an Application of its own, same repository and revision
    iroh = world.kube.get("argoproj.io/v1alpha1", "applications", "argocd", "iroh-relay")
    assert iroh is not None
    assert (iroh["spec"]["source"]["repoURL"], iroh["spec"]["source"]["targetRevision"],
            iroh["spec"]["source"]["path"]) == (source["repoURL"], "release",
                                                "infra/kubernetes/apps/iroh-relay")
    assert any("iroh.mydia.test" in p["patch"] for p in iroh["spec"]["source"]["kustomize"][
        "patches"])
    digest = world.registry.repos["n0computer/iroh-relay"]["v0.96.1"].digest  # first use
    assert iroh["spec"]["source"]["kustomize"]["images"] == [
        f"n0computer/iroh-relay=n0computer/iroh-relay:v0.96.1@{digest}"]
    assert world.kube.get("apps/v1", "deployments", "iroh-relay", "iroh-relay") is None
    again = await world.deploy("--skip", "verify")
    assert again.rc == 0 and "Done: 0 changes" in again.out, again.text


async def test_status_of_an_empty_account_still_prints_the_table(world: World) -> None:
    result = await world.deploy("--status")
    assert result.rc == 1, result.text  # rows FAIL: the table is printed, the exit code says so
    assert "none found" in result.out and "no metadata-relay context" in result.out
    assert world.ovh.mutating() == [] and world.kube.calls == [] and world.vps.commands == []


async def test_verify_against_the_real_service_health(world: World, service) -> None:
    """The relay's own /health (the real process) satisfies verify's version check: the
    image tag pinned in the kustomization equals the package version."""
    config = world.saved()
    config["advanced"]["health_base_url"] = service.url
    world.write_config(**config)
    result = await world.deploy("--yes")
    assert result.rc == 0, result.text
    assert f"{service.url}/health 200, version" in result.out
