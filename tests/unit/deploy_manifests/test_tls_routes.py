"""TURN over TLS on 443 (a component of the relay) and the iroh relay (an app of its own):
what Traefik routes by SNI, what cert-manager issues, what the pods bind, all consistent."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from metadata_relay.config import Settings
from relay_deploy import kustomize, platform

from .conftest import DOMAIN, find
from .policy import container_violations, violations

Obj = dict[str, Any]
TURN_HOST = f"turn.{DOMAIN}"
IROH_HOST = f"iroh.{DOMAIN}"


@pytest.fixture(scope="module")
def turn() -> list[Obj]:
    return platform.app_objects(domain=DOMAIN, turn_subdomain="turn")


@pytest.fixture(scope="module")
def iroh() -> list[Obj]:
    return platform.iroh_relay_objects(domain=DOMAIN)


def _port(container: Obj, name: str) -> Obj:
    (port,) = [p for p in container["ports"] if p["name"] == name]
    return port


# ---- TURN over TLS ----------------------------------------------------------------------


def test_turn_tls_route_terminates_tls_and_sends_proxy_v2_to_the_turn_listener(
        turn: list[Obj]) -> None:
    route = find(turn, "IngressRouteTCP", "metadata-relay-turn")
    assert route["spec"]["entryPoints"] == ["websecure"]
    (rule,) = route["spec"]["routes"]
    assert rule["match"] == f"HostSNI(`{TURN_HOST}`)"
    # TLS terminated by Traefik with the cert-manager certificate of the TURN host
    cert = find(turn, "Certificate", "metadata-relay-turn-tls")
    assert cert["spec"]["dnsNames"] == [TURN_HOST]
    assert cert["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "letsencrypt-prod"}
    assert route["spec"]["tls"]["secretName"] == cert["spec"]["secretName"]
    assert "passthrough" not in route["spec"]["tls"]
    options = find(turn, "TLSOption", route["spec"]["tls"]["options"]["name"])
    assert options["spec"]["minVersion"] == "VersionTLS12"
    assert "stun.turn" in options["spec"]["alpnProtocols"]
    # to the relay's TURN TCP port (host network: the Service's endpoint is the node)
    (backend,) = rule["services"]
    service = find(turn, "Service", backend["name"])
    dep = find(turn, "Deployment", "metadata-relay")
    relay = dep["spec"]["template"]["spec"]["containers"][0]
    (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == backend["port"]]
    target = _port(relay, svc_port["targetPort"])
    cm = find(turn, "ConfigMap", "metadata-relay-config")["data"]
    assert (target["containerPort"], target["protocol"]) == (int(cm["TURN_PORT"]), "TCP")
    assert service["spec"]["selector"].items() <= \
        dep["spec"]["template"]["metadata"]["labels"].items()
    # with a PROXY protocol v2 header (the client's address for XOR-MAPPED-ADDRESS)
    transport = find(turn, "ServersTransportTCP", backend["serversTransport"])
    assert transport["spec"]["proxyProtocol"] == {"version": 2}
    assert "proxyProtocol" not in backend  # deprecated there in Traefik v3
    # and the relay offers turns: URLs for that host
    assert cm["TURN_TLS_HOST"] == TURN_HOST


def test_without_turn_tls_nothing_of_it_is_rendered(app: list[Obj]) -> None:
    kinds = {o["kind"] for o in app}
    assert not kinds & {"IngressRouteTCP", "Certificate", "TLSOption", "ServersTransportTCP"}
    assert "TURN_TLS_HOST" not in find(app, "ConfigMap", "metadata-relay-config")["data"]
    assert not [o for o in app if o["metadata"]["name"] == "metadata-relay-turn"]


def test_turn_tls_keeps_the_relay_compliant(turn: list[Obj]) -> None:
    """The policy holds with the component (TURN_TLS_HOST is a setting of the relay's)."""
    assert "TURN_TLS_HOST" in Settings.model_fields
    assert violations(turn) == []


def test_turn_tls_in_gitops_renders_like_the_direct_apply() -> None:
    app = platform.argocd_application(repo_url="https://example.com/r.git", domain=DOMAIN,
                                      relay_subdomain="r", turn_subdomain="t")
    kust = app["spec"]["source"]["kustomize"]
    assert kust["components"] == [platform.TURN_TLS_COMPONENT]
    patches = [kustomize.Patch(patch=p["patch"], target=p["target"]) for p in kust["patches"]]
    via_argo = kustomize.render(platform.app_dir(), patches=patches,
                                components=kust["components"])
    assert via_argo == platform.app_objects(domain=DOMAIN, relay_subdomain="r",
                                            turn_subdomain="t")
    route = find(via_argo, "IngressRouteTCP", "metadata-relay-turn")
    assert route["spec"]["routes"][0]["match"] == f"HostSNI(`t.{DOMAIN}`)"


# ---- the iroh relay ---------------------------------------------------------------------


def _config(iroh: list[Obj]) -> Obj:
    return tomllib.loads(find(iroh, "ConfigMap", "iroh-relay-config")["data"]["config.toml"])


def _container(iroh: list[Obj]) -> Obj:
    (container,) = find(iroh, "Deployment", "iroh-relay")["spec"]["template"]["spec"][
        "containers"]
    return container


def test_iroh_relay_is_ns_own_release_pinned_as_mydia_runs_it(iroh: list[Obj]) -> None:
    pinned = platform.iroh_relay()
    name, tag, digest = kustomize.split_image(_container(iroh)["image"])
    assert name == "n0computer/iroh-relay"
    assert tag == "v0.96.1" == f"v{pinned.version}"  # iroh 0.96.1: mydia's Cargo.lock files
    assert digest == pinned.digest
    assert find(iroh, "Namespace", "iroh-relay")
    assert all(o["metadata"].get("namespace") == "iroh-relay" for o in iroh
               if o["kind"] != "Namespace")


def test_iroh_relay_terminates_its_own_tls_for_https_and_quic(iroh: list[Obj]) -> None:
    config, container = _config(iroh), _container(iroh)
    assert config["enable_relay"] is True and config["enable_quic_addr_discovery"] is True
    tls = config["tls"]
    assert tls["cert_mode"] == "Reloading"  # cert-manager's renewals without a restart
    # the certificate files come from the cert-manager Certificate of the host name
    cert = find(iroh, "Certificate", "iroh-relay-tls")
    assert cert["spec"]["dnsNames"] == [IROH_HOST]
    assert cert["spec"]["privateKey"]["encoding"] == "PKCS8"
    pod = find(iroh, "Deployment", "iroh-relay")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"]
                if volumes[m["name"]].get("secret", {}).get("secretName")
                == cert["spec"]["secretName"]]
    assert tls["manual_cert_path"] == f"{mount['mountPath']}/tls.crt"
    assert tls["manual_key_path"] == f"{mount['mountPath']}/tls.key"
    # the ports it binds are the container's: HTTPS, QUIC (a host port), HTTP for the probes
    https, quic, http = (_port(container, n) for n in ("https", "quic", "http"))
    assert tls["https_bind_addr"].endswith(f":{https['containerPort']}")
    assert tls["quic_bind_addr"].endswith(f":{quic['containerPort']}")
    assert quic["protocol"] == "UDP" and quic["hostPort"] == quic["containerPort"] == 7842
    assert config["http_bind_addr"].endswith(f":{http['containerPort']}")
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/generate_204", "port": "http"}


def test_iroh_relay_traffic_passes_through_traefik_untouched(iroh: list[Obj]) -> None:
    route = find(iroh, "IngressRouteTCP", "iroh-relay")
    assert route["spec"]["tls"] == {"passthrough": True}
    (rule,) = route["spec"]["routes"]
    assert rule["match"] == f"HostSNI(`{IROH_HOST}`)"
    (backend,) = rule["services"]
    service = find(iroh, "Service", backend["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == backend["port"]]
    assert port["targetPort"] == "https"
    assert route["metadata"]["annotations"][platform.DNS_TARGET] == f"relay.{DOMAIN}"


def test_iroh_relay_pod_is_locked_down(iroh: list[Obj]) -> None:
    dep = find(iroh, "Deployment", "iroh-relay")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # a host port
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert "hostNetwork" not in pod
    assert container_violations(pod) == []
    config = _config(iroh)
    binds = [config["http_bind_addr"], config["metrics_bind_addr"],
             config["tls"]["https_bind_addr"], config["tls"]["quic_bind_addr"]]
    assert all(int(b.rsplit(":", 1)[1]) > 1024 for b in binds)  # no capability to bind below


def test_iroh_relay_in_gitops_renders_like_the_direct_apply() -> None:
    app = platform.iroh_relay_application(repo_url="git@github.com:me/relay.git",
                                          revision="v3", domain="example.org",
                                          iroh_subdomain="p2p", relay_subdomain="r")
    src = app["spec"]["source"]
    assert (src["repoURL"], src["targetRevision"], src["path"]) == (
        "git@github.com:me/relay.git", "v3", platform.IROH_APP_PATH)
    assert app["spec"]["destination"]["namespace"] == platform.IROH_NAMESPACE
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    patches = [kustomize.Patch(patch=p["patch"], target=p["target"])
               for p in src["kustomize"]["patches"]]
    assert kustomize.render(platform.iroh_dir(), patches=patches) == \
        platform.iroh_relay_objects(domain="example.org", iroh_subdomain="p2p",
                                    relay_subdomain="r")
    with pytest.raises(ValueError):
        platform.iroh_relay_application(repo_url="file:///etc", domain="example.org")


def test_a_digest_pins_the_iroh_relay_beside_its_tag(tmp_path: Any) -> None:
    import shutil

    root = tmp_path / "kubernetes"
    shutil.copytree(platform.kubernetes_dir(), root)
    kust = root / "apps" / "iroh-relay" / "kustomization.yaml"
    digest = "sha256:" + "0f" * 32
    kust.write_text(kust.read_text().replace("newTag: v0.96.1",
                                             f"newTag: v0.96.1\n    digest: {digest}"))
    pinned = platform.iroh_relay(root)
    assert pinned.image == f"n0computer/iroh-relay:v0.96.1@{digest}"
    assert (pinned.version, pinned.digest) == ("0.96.1", digest)


@pytest.mark.parametrize(("image", "problem"), [
    ("n0computer/iroh-relay:latest", "release tag"),
    ("n0computer/iroh-relay", "release tag"),
    ("n0computer/iroh-relay:v0.96.1@sha256:abc", "digest"),
])
def test_an_unpinned_iroh_relay_is_refused(tmp_path: Any, image: str, problem: str) -> None:
    import shutil

    root = tmp_path / "kubernetes"
    shutil.copytree(platform.kubernetes_dir(), root)
    kust = root / "apps" / "iroh-relay" / "kustomization.yaml"
    name, tag, digest = kustomize.split_image(image)
    entry = f"  - name: n0computer/iroh-relay\n    newTag: {tag or ''}\n" if tag else \
        "  - name: n0computer/iroh-relay\n    newName: n0computer/iroh-relay\n"
    if digest:
        entry += f"    digest: {digest}\n"
    text = kust.read_text()
    kust.write_text(text[:text.index("images:")] + "images:\n" + entry)
    dep = root / "apps" / "iroh-relay" / "deployment.yaml"
    dep.write_text(dep.read_text().replace("n0computer/iroh-relay:v0.96.1", name))
    with pytest.raises(platform.PlatformError, match=problem):
        platform.iroh_relay(root)


def test_the_pinned_digest_goes_beside_the_tag_in_both_modes() -> None:
    """The tool's digest (relay_deploy.image_pin) in a direct apply, and in the Argo CD
    Application as ``kustomize edit set image`` reads it (name=newName:tag@digest), render
    the same Deployment: n0computer/iroh-relay:v0.96.1@sha256:..."""
    digest = "sha256:" + "c4" * 32
    hosts = {"domain": "example.org", "iroh_subdomain": "p2p", "relay_subdomain": "r"}
    direct = platform.iroh_relay_objects(digest=digest, **hosts)
    (container,) = find(direct, "Deployment", "iroh-relay")["spec"]["template"]["spec"][
        "containers"]
    assert container["image"] == f"n0computer/iroh-relay:v0.96.1@{digest}"
    assert platform.iroh_relay_objects(**hosts) != direct
    src = platform.iroh_relay_application(repo_url="https://git.example/r.git", digest=digest,
                                          **hosts)["spec"]["source"]["kustomize"]
    (arg,) = src["images"]
    key, value = arg.split("=", 1)
    new_name, tag, pinned = kustomize.split_image(value)
    patches = [kustomize.Patch(patch=p["patch"], target=p["target"]) for p in src["patches"]]
    argo = kustomize.render(platform.iroh_dir(), patches=patches, images=[
        kustomize.Image(name=key, new_name=new_name, new_tag=tag, digest=pinned)])
    assert argo == direct
    assert "images" not in platform.iroh_relay_application(
        repo_url="https://git.example/r.git", **hosts)["spec"]["source"]["kustomize"]
    for bad in ("sha256:abc", "latest", "sha256:" + "C4" * 32):
        with pytest.raises(ValueError):
            platform.iroh_relay_objects(digest=bad, **hosts)
