"""relay_deploy.platform: what the deploy tool applies, rendered from infra/kubernetes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_deploy import kustomize, platform

from .conftest import DOMAIN, EMAIL, K8S_DIR

Obj = dict[str, Any]


def test_kubernetes_dir_is_this_checkout() -> None:
    assert platform.kubernetes_dir() == K8S_DIR
    assert (platform.kubernetes_dir() / "charts.yaml").is_file()


def test_chart_pins() -> None:
    pins = platform.load_chart_pins()
    assert list(pins) == ["traefik", "cert-manager", "external-dns", "argocd"]
    for pin in pins.values():
        assert pin.namespace == "kube-system"
        assert pin.version and "latest" not in pin.version
        assert (K8S_DIR / pin.values).is_file()
        assert pin.bundled or pin.repo.startswith("https://")
    assert pins["traefik"].bundled
    assert pins["cert-manager"].target_namespace == "cert-manager"
    assert pins["external-dns"].target_namespace == "external-dns"
    assert pins["argocd"].target_namespace == "argocd"
    assert platform.load_k3s_pin() == platform.K3sPin("v1.36.4+k3s1", "1.36")


def test_platform_objects_order_and_shape() -> None:
    objs = platform.platform_objects(domain=DOMAIN, acme_email=EMAIL)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "cert-manager"), ("Namespace", "external-dns"), ("Namespace", "argocd"),
        ("HelmChartConfig", "traefik"),
        ("HelmChart", "cert-manager"), ("HelmChart", "external-dns"), ("HelmChart", "argocd"),
    ]
    pins = platform.load_chart_pins()
    for obj in objs[3:]:
        assert obj["apiVersion"] == "helm.cattle.io/v1"
        assert obj["metadata"]["namespace"] == "kube-system"
        assert "${" not in obj["spec"]["valuesContent"]
        assert isinstance(yaml.safe_load(obj["spec"]["valuesContent"]), dict)
    for obj in objs[4:]:
        pin = pins[obj["metadata"]["name"]]
        spec = obj["spec"]
        assert (spec["repo"], spec["chart"], spec["version"], spec["targetNamespace"]) == (
            pin.repo, pin.chart, pin.version, pin.target_namespace)
        assert spec["createNamespace"] is True
    # same input, same output (server-side apply finds nothing to change on a second run)
    assert platform.platform_objects(domain=DOMAIN, acme_email=EMAIL) == objs


def _values(name: str, **kw: str) -> Obj:
    objs = platform.platform_objects(domain=kw.get("domain", DOMAIN), acme_email=EMAIL,
                                     argocd_subdomain=kw.get("argocd", "argocd"))
    obj = next(o for o in objs
               if o["metadata"]["name"] == name and o["kind"].startswith("HelmChart"))
    values: Obj = yaml.safe_load(obj["spec"]["valuesContent"])
    return values


def test_traefik_redirects_http_to_https_but_not_the_acme_challenges() -> None:
    """The redirect is the lowest-priority router on port 80, so cert-manager's HTTP-01 solver
    (an Ingress without entrypoint annotation) answers there: a challenge redirected to 443
    would reach the TCP routes of turn.<domain> and iroh.<domain>, never an HTTP router."""
    redirect = _values("traefik")["ports"]["web"]["http"]["redirections"]["entryPoint"]
    assert redirect == {"to": "websecure", "scheme": "https", "permanent": True, "priority": 1}


def _ingresses() -> list[Obj]:
    objs = platform.app_objects(domain=DOMAIN, turn_subdomain="turn")
    argocd = _values("argocd")["server"]["ingress"]
    return [*[o for o in objs if o["kind"] == "Ingress"],
            {"kind": "Ingress", "metadata": {"name": "argocd-server",
                                             "annotations": argocd["annotations"]}}]


def test_every_ingress_is_on_websecure_only() -> None:
    """With the redirect at the lowest priority, an Ingress on every entry point would be
    served over plain HTTP: ours name websecure."""
    for ingress in _ingresses():
        annotations = ingress["metadata"].get("annotations") or {}
        assert annotations.get("traefik.ingress.kubernetes.io/router.entrypoints") == \
            "websecure", ingress["metadata"]["name"]


def test_routes_by_sni_are_published_by_external_dns() -> None:
    """external-dns reads IngressRouteTCPs (traefik-proxy source) and gets their target from
    the annotation: each route's host is a CNAME of the relay's host, in the domain filter."""
    v = _values("external-dns", domain="example.org")
    assert "traefik-proxy" in v["sources"]
    routes = [o for o in [*platform.app_objects(domain="example.org", relay_subdomain="r",
                                                turn_subdomain="t"),
                          *platform.iroh_relay_objects(domain="example.org",
                                                       relay_subdomain="r", iroh_subdomain="i")]
              if o["kind"] == "IngressRouteTCP"]
    assert {r["spec"]["routes"][0]["match"] for r in routes} == {
        "HostSNI(`t.example.org`)", "HostSNI(`i.example.org`)"}
    for route in routes:
        assert route["metadata"]["annotations"][platform.DNS_TARGET] == "r.example.org"
        assert route["spec"]["entryPoints"] == ["websecure"]


def test_external_dns_values() -> None:
    v = _values("external-dns", domain="example.org")
    assert v["provider"]["name"] == "cloudflare"
    assert v["domainFilters"] == ["example.org"]
    assert "ingress" in v["sources"]
    assert v["policy"] == "sync"
    env = {e["name"]: e for e in v["env"]}
    ref = env["CF_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = platform.cloudflare_secret("abc")
    assert ref == {"name": secret["metadata"]["name"],
                   "key": next(iter(secret["stringData"]))}
    assert secret["metadata"]["namespace"] == platform.load_chart_pins()[
        "external-dns"].target_namespace


def test_argocd_values() -> None:
    v = _values("argocd", argocd="cd")
    assert v["global"]["domain"] == f"cd.{DOMAIN}"
    ingress = v["server"]["ingress"]
    assert ingress["enabled"] is True and ingress["tls"] is True
    assert ingress["ingressClassName"] == "traefik"
    issuers = {i["metadata"]["name"] for i in platform.cluster_issuers(acme_email=EMAIL)}
    assert ingress["annotations"]["cert-manager.io/cluster-issuer"] in issuers
    assert v["configs"]["params"]["server.insecure"] is True
    assert v["fullnameOverride"] == "argocd"
    # sized for 4 vCPU / 8 GB: every component has requests and limits, total limits fit
    cpu = mem = 0.0
    for comp in ("controller", "server", "repoServer", "redis", "applicationSet"):
        res = v[comp]["resources"]
        assert set(res) == {"requests", "limits"}, comp
        cpu += _cpu(res["limits"]["cpu"])
        mem += _mem(res["limits"]["memory"])
    assert cpu <= 4 and mem <= 4 * 1024


def _cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _mem(q: str) -> float:
    return float(q[:-2]) * (1024 if q.endswith("Gi") else 1)


def test_cluster_issuers() -> None:
    issuers = platform.cluster_issuers(acme_email="someone@example.org")
    by_name = {i["metadata"]["name"]: i for i in issuers}
    assert set(by_name) == {"letsencrypt-staging", "letsencrypt-prod"}
    assert "staging" in by_name["letsencrypt-staging"]["spec"]["acme"]["server"]
    assert by_name["letsencrypt-prod"]["spec"]["acme"]["server"] == (
        "https://acme-v02.api.letsencrypt.org/directory")
    for issuer in issuers:
        acme = issuer["spec"]["acme"]
        assert acme["email"] == "someone@example.org"
        assert acme["solvers"] == [{"http01": {"ingress": {"ingressClassName": "traefik"}}}]


@pytest.mark.parametrize("domain", [
    "", "localhost", "Example.com", "example.com.", "exa mple.com", "example.com\nx: 1",
    "-bad.com", "a..b", "${DOMAIN}", "x" * 64 + ".com",
])
def test_bad_domain_rejected(domain: str) -> None:
    with pytest.raises(ValueError):
        platform.platform_objects(domain=domain, acme_email=EMAIL)
    with pytest.raises(ValueError):
        platform.app_objects(domain=domain)
    with pytest.raises(ValueError):
        platform.argocd_application(repo_url="https://example.com/r.git", domain=domain)


@pytest.mark.parametrize("email", ["", "root", "a@b", "a b@c.de", "a@b.c\nx: 1", "@b.cd"])
def test_bad_email_rejected(email: str) -> None:
    with pytest.raises(ValueError):
        platform.platform_objects(domain=DOMAIN, acme_email=email)
    with pytest.raises(ValueError):
        platform.cluster_issuers(acme_email=email)


@pytest.mark.parametrize("label", ["", "a.b", "UP", "-x", "x" * 64, "x\n"])
def test_bad_subdomain_rejected(label: str) -> None:
    with pytest.raises(ValueError):
        platform.platform_objects(domain=DOMAIN, acme_email=EMAIL, relay_subdomain=label)
    with pytest.raises(ValueError):
        platform.platform_objects(domain=DOMAIN, acme_email=EMAIL, argocd_subdomain=label)
    with pytest.raises(ValueError):
        platform.app_objects(domain=DOMAIN, relay_subdomain=label)


def test_app_objects_hosts_and_image() -> None:
    objs = platform.app_objects(domain="example.org", relay_subdomain="r",
                                image="ghcr.io/me/metadata-relay:2.0.0")
    ing = next(o for o in objs if o["kind"] == "Ingress")
    assert ing["spec"]["rules"][0]["host"] == "r.example.org"
    assert ing["spec"]["tls"][0]["hosts"] == ["r.example.org"]
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    assert cm["data"]["TURN_REALM"] == "r.example.org"
    dep = next(o for o in objs if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/me/metadata-relay:2.0.0")
    digest = "sha256:" + "a" * 64
    objs = platform.app_objects(domain=DOMAIN, image=f"ghcr.io/me/metadata-relay@{digest}")
    dep = next(o for o in objs if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@" + digest)
    assert objs[0]["kind"] == "Namespace"  # apply order: the namespace first


@pytest.mark.parametrize("image", [
    "ghcr.io/me/metadata-relay", "ghcr.io/me/metadata-relay:latest", "ghcr.io/me/x:bad tag",
    "ghcr.io/me/x@sha256:short", ":1.0", "ghcr.io/me/x:-1",
])
def test_unpinned_or_malformed_image_rejected(image: str) -> None:
    with pytest.raises(ValueError):
        platform.app_objects(domain=DOMAIN, image=image)
    with pytest.raises(ValueError):
        platform.argocd_application(repo_url="https://example.com/r.git", domain=DOMAIN,
                                    image=image)


def test_empty_image_means_the_pinned_default() -> None:
    assert platform.app_objects(domain=DOMAIN, image="") == platform.app_objects(domain=DOMAIN)


def test_argocd_application_renders_like_app_objects() -> None:
    """GitOps and the direct apply produce the same objects: the Application's kustomize
    patches and images, applied by the renderer, give app_objects() exactly."""
    image = "ghcr.io/me/metadata-relay:3.1.4"
    app = platform.argocd_application(repo_url="git@github.com:me/relay.git", revision="v3",
                                      domain="example.org", relay_subdomain="r", image=image,
                                      components=("components/redis",))
    assert app["metadata"]["namespace"] == platform.ARGOCD_NAMESPACE
    src = app["spec"]["source"]
    assert (src["repoURL"], src["targetRevision"], src["path"]) == (
        "git@github.com:me/relay.git", "v3", platform.APP_PATH)
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert app["spec"]["destination"]["namespace"] == platform.RELAY_NAMESPACE
    patches = [kustomize.Patch(patch=p["patch"], target=p["target"])
               for p in src["kustomize"]["patches"]]
    (spec,) = src["kustomize"]["images"]
    name, _, ref = spec.partition("=")
    new_name, tag, _ = kustomize.split_image(ref)
    images = [kustomize.Image(name=name, new_name=new_name, new_tag=tag)]
    via_argo = kustomize.render(platform.app_dir(), patches=patches, images=images,
                                components=src["kustomize"]["components"])
    assert via_argo == platform.app_objects(domain="example.org", relay_subdomain="r",
                                            image=image, components=("components/redis",))
    assert any(o["metadata"]["name"] == "redis" for o in via_argo)
    with pytest.raises(ValueError, match="component"):
        platform.argocd_application(repo_url="https://example.com/r.git", domain=DOMAIN,
                                    components=("components/nope",))


@pytest.mark.parametrize("url", ["", "github.com/me/r", "file:///etc", "https://x y",
                                 "http://insecure.example/r.git"])
def test_argocd_application_rejects_bad_repo(url: str) -> None:
    with pytest.raises(ValueError):
        platform.argocd_application(repo_url=url, domain=DOMAIN)


def test_argocd_application_rejects_bad_revision() -> None:
    for revision in ("", "main branch", "a\nb"):
        with pytest.raises(ValueError):
            platform.argocd_application(repo_url="https://example.com/r.git",
                                        revision=revision, domain=DOMAIN)


def test_relay_secret() -> None:
    secret = platform.relay_secret({"TURN_SECRET": "t", "TMDB_API_KEY": "k"})
    assert secret["metadata"] | {"labels": None} == {
        "name": "metadata-relay-secrets", "namespace": "metadata-relay", "labels": None}
    assert secret["stringData"] == {"TMDB_API_KEY": "k", "TURN_SECRET": "t"}
    assert "data" not in secret
    with pytest.raises(ValueError, match="PORT"):
        platform.relay_secret({"PORT": "1"})
    with pytest.raises(ValueError):
        platform.relay_secret({"TURN_SECRET": 5})  # type: ignore[dict-item]


@pytest.mark.parametrize("token", ["", "   ", "a b", "tok\n"])
def test_cloudflare_secret_rejects_bad_token(token: str) -> None:
    with pytest.raises(ValueError):
        platform.cloudflare_secret(token)


def test_relay_namespace_is_the_rendered_one() -> None:
    ns = platform.relay_namespace()
    assert ns == next(o for o in platform.app_objects(domain=DOMAIN) if o["kind"] == "Namespace")
    assert ns["metadata"]["name"] == platform.relay_secret({})["metadata"]["namespace"]


def test_platform_workloads() -> None:
    workloads = platform.platform_workloads()
    assert ("Deployment", "cert-manager", "cert-manager-webhook") in workloads
    assert ("Deployment", "external-dns", "external-dns") in workloads
    assert ("StatefulSet", "argocd", "argocd-application-controller") in workloads


# --- broken pin/values files give one clear error ------------------------------------------------


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    root = tmp_path / "kubernetes"
    shutil.copytree(K8S_DIR, root)
    return root


def test_unknown_placeholder_is_an_error(k8s_copy: Path) -> None:
    path = k8s_copy / "external-dns" / "values.yaml"
    path.write_text(path.read_text() + "txtPrefix: ${TYPO}\n")
    with pytest.raises(platform.PlatformError, match="TYPO"):
        platform.platform_objects(domain=DOMAIN, acme_email=EMAIL, root=k8s_copy)


@pytest.mark.parametrize("text", [
    "", "charts: []\n", "charts:\n  x: {chart: c}\n", "charts:\n  x: 1\n", "charts: [\n",
    "charts:\n  x: {chart: c, version: 1, namespace: n, target_namespace: t}\n",
    "charts:\n  x: {repo: r, chart: c, version: 1, namespace: n, target_namespace: t,"
    " workloads: [nope]}\n",
])
def test_broken_pin_file_is_an_error(k8s_copy: Path, text: str) -> None:
    (k8s_copy / "charts.yaml").write_text(text)
    with pytest.raises(platform.PlatformError, match=r"charts\.yaml"):
        platform.load_chart_pins(k8s_copy)


def test_missing_values_file_is_an_error(k8s_copy: Path) -> None:
    (k8s_copy / "argocd" / "values.yaml").unlink()
    with pytest.raises(platform.PlatformError, match=r"values\.yaml"):
        platform.platform_objects(domain=DOMAIN, acme_email=EMAIL, root=k8s_copy)


def test_values_that_are_not_a_mapping_are_an_error(k8s_copy: Path) -> None:
    (k8s_copy / "argocd" / "values.yaml").write_text("- a\n- b\n")
    with pytest.raises(platform.PlatformError, match="mapping"):
        platform.platform_objects(domain=DOMAIN, acme_email=EMAIL, root=k8s_copy)


def test_missing_k3s_pin_is_an_error(k8s_copy: Path) -> None:
    pins = yaml.safe_load((k8s_copy / "charts.yaml").read_text())
    del pins["k3s"]
    (k8s_copy / "charts.yaml").write_text(yaml.safe_dump(pins))
    with pytest.raises(platform.PlatformError, match="k3s"):
        platform.load_k3s_pin(k8s_copy)


# --- no input can inject YAML into what is applied -----------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.from_regex(
    r"[a-z0-9.\-]{1,30}\.[a-z]{2,6}", fullmatch=True)


_PINS = platform.load_chart_pins()
_INGRESS = next(o for o in platform.app_objects(domain=DOMAIN) if o["kind"] == "Ingress")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domain=_TEXT)
def test_any_domain_is_rejected_or_rendered_verbatim(domain: str) -> None:
    try:
        platform.validate_domain(domain)
    except ValueError:
        with pytest.raises(ValueError):
            platform.site_patches(domain=domain)
        return
    subs = {"DOMAIN": domain, "RELAY_HOST": f"relay.{domain}",
            "ARGOCD_HOST": f"argocd.{domain}", "ACME_EMAIL": EMAIL}
    assert platform.render_values(_PINS["external-dns"], subs)["domainFilters"] == [domain]
    assert platform.render_values(_PINS["argocd"], subs)["global"]["domain"] == (
        f"argocd.{domain}")
    ingress = _INGRESS
    for patch in platform.site_patches(domain=domain):
        if patch.target["kind"] == "Ingress":
            ingress = kustomize.apply_json6902(ingress, yaml.safe_load(patch.patch))
    assert ingress["spec"]["rules"][0]["host"] == f"relay.{domain}"


@settings(max_examples=150, deadline=None)
@given(email=_TEXT | st.from_regex(r"[a-z.+]{1,10}@[a-z]{1,8}\.[a-z]{2,4}", fullmatch=True))
def test_any_email_is_rejected_or_rendered_verbatim(email: str) -> None:
    try:
        issuers = platform.cluster_issuers(acme_email=email)
    except ValueError:
        return
    assert {i["spec"]["acme"]["email"] for i in issuers} == {email}
