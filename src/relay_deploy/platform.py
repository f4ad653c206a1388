"""What the deploy tool applies to the cluster, rendered from ``infra/kubernetes/``.

Everything here is pure: files in, plain Kubernetes objects (dicts) out. No network, no
``helm``, no ``kubectl``. The deploy tool's phases apply these objects (server-side apply):

``kubernetes`` phase, in this order:
  1. :func:`platform_objects` - Namespaces, the k3s ``HelmChartConfig`` for the bundled Traefik,
     then one k3s ``HelmChart`` per pinned chart (cert-manager, external-dns, Argo CD). Apply
     :func:`cloudflare_secret` right after the Namespaces (external-dns reads it at start).
  2. wait for :func:`platform_workloads` (cert-manager's webhook must answer before issuers).
  3. :func:`cluster_issuers` - Let's Encrypt staging and production (needs cert-manager's CRDs).

``app`` phase:
  1. :func:`relay_namespace` (the Namespace exactly as the kustomization renders it), then
     :func:`relay_secret` (never written to disk or printed).
  2. either :func:`argocd_application` (GitOps) or :func:`app_objects` (direct apply).

Values files carry ``${DOMAIN}``, ``${RELAY_HOST}``, ``${ARGOCD_HOST}`` and ``${ACME_EMAIL}``
placeholders; inputs are validated before substitution so a value can never inject YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from relay_deploy import kustomize

Obj = dict[str, Any]

APP_PATH = "infra/kubernetes/apps/metadata-relay"
# Optional kustomize component of the relay: TURN over TLS on 443 through Traefik (SNI)
TURN_TLS_COMPONENT = "components/turn-tls"
DNS_TARGET = "external-dns.alpha.kubernetes.io/target"
RELAY_NAMESPACE = "metadata-relay"
RELAY_SECRET_NAME = "metadata-relay-secrets"  # noqa: S105 (a name, not a secret)
RELAY_DEPLOYMENT = "metadata-relay"
ARGOCD_NAMESPACE = "argocd"
ARGOCD_APP_NAME = "metadata-relay"
EXTERNAL_DNS_NAMESPACE = "external-dns"
CLOUDFLARE_SECRET_NAME = "cloudflare-api-token"  # noqa: S105
CLOUDFLARE_SECRET_KEY = "cloudflare_api_token"  # noqa: S105
HELM_NAMESPACE = "kube-system"
MANAGED_BY = {"app.kubernetes.io/managed-by": "relay-deploy"}

# Environment variables of metadata_relay.config.Settings that are secrets (a test checks
# each is a Settings field). Only these may go into the Secret metadata-relay-secrets.
RELAY_SECRET_KEYS = frozenset({
    "RELAY_TOKEN_SECRET", "TURN_SECRET", "TURN_SECRETS", "TMDB_API_KEY", "TVDB_API_KEY",
    "TVDB_PIN",
})

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}\.)+[a-z][a-z0-9-]{{0,61}}[a-z0-9]")
_LABEL_RE = re.compile(_LABEL)
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}")
_PLACEHOLDER_RE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class PlatformError(Exception):
    """A manifest file is missing or malformed (one line, names the file)."""


@dataclass(frozen=True)
class ChartPin:
    """One chart from ``infra/kubernetes/charts.yaml``.

    ``namespace`` is where the k3s HelmChart/HelmChartConfig object lives (kube-system);
    ``target_namespace`` is where the release is installed.
    """

    name: str
    repo: str
    chart: str
    version: str
    namespace: str
    target_namespace: str
    values: str = ""
    values_schema: str = ""
    bundled: bool = False
    workloads: tuple[str, ...] = ()


@dataclass(frozen=True)
class K3sPin:
    version: str  # e.g. v1.36.4+k3s1 (INSTALL_K3S_VERSION)
    kubernetes: str  # e.g. "1.36"


# ---------------------------------------------------------------------------------------------
# files


def repo_root() -> Path:
    """The checkout this package runs from (src/relay_deploy/platform.py -> ../../)."""
    return Path(__file__).resolve().parents[2]


def kubernetes_dir() -> Path:
    """``infra/kubernetes`` of this checkout."""
    path = repo_root() / "infra" / "kubernetes"
    if not path.is_dir():
        raise PlatformError(f"{path} not found: run the deploy tool from a repository checkout")
    return path


def _root(root: Path | None) -> Path:
    return root if root is not None else kubernetes_dir()


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlatformError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise PlatformError(f"{path}: invalid YAML ({exc})") from None


def _pin_file(root: Path | None) -> Any:
    path = _root(root) / "charts.yaml"
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("charts"), dict):
        raise PlatformError(f"{path}: expected a mapping with 'charts'")
    return data


def load_chart_pins(root: Path | None = None) -> dict[str, ChartPin]:
    """Every pinned chart, by name, in file order."""
    path = _root(root) / "charts.yaml"
    pins: dict[str, ChartPin] = {}
    for name, entry in _pin_file(root)["charts"].items():
        if not isinstance(entry, dict):
            raise PlatformError(f"{path}: charts.{name} is not a mapping")
        missing = [k for k in ("chart", "version", "namespace", "target_namespace")
                   if not entry.get(k)]
        bundled = bool(entry.get("bundled", False))
        if not bundled and not entry.get("repo"):
            missing.append("repo")
        if missing:
            raise PlatformError(f"{path}: charts.{name} lacks {', '.join(missing)}")
        workloads = entry.get("workloads") or []
        if not isinstance(workloads, list) or not all(
            isinstance(w, str) and w.count("/") == 1 for w in workloads
        ):
            raise PlatformError(f"{path}: charts.{name}.workloads must be Kind/name strings")
        pins[str(name)] = ChartPin(
            name=str(name),
            repo=str(entry.get("repo") or ""),
            chart=str(entry["chart"]),
            version=str(entry["version"]),
            namespace=str(entry["namespace"]),
            target_namespace=str(entry["target_namespace"]),
            values=str(entry.get("values") or ""),
            values_schema=str(entry.get("values_schema") or ""),
            bundled=bundled,
            workloads=tuple(workloads),
        )
    return pins


def load_k3s_pin(root: Path | None = None) -> K3sPin:
    """The pinned k3s release (``INSTALL_K3S_VERSION``) and its Kubernetes minor."""
    data = _pin_file(root).get("k3s")
    if not isinstance(data, dict) or not data.get("version") or not data.get("kubernetes"):
        raise PlatformError(f"{_root(root) / 'charts.yaml'}: k3s.version/kubernetes missing")
    return K3sPin(version=str(data["version"]), kubernetes=str(data["kubernetes"]))


# ---------------------------------------------------------------------------------------------
# input validation and substitution


def validate_domain(domain: str) -> str:
    if not isinstance(domain, str) or len(domain) > 253 or not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(f"not a valid DNS domain (lower case, e.g. example.com): {domain!r}")
    return domain


def validate_subdomain(label: str) -> str:
    if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
        raise ValueError(f"not a valid DNS label (a-z, 0-9, -): {label!r}")
    return label


def validate_email(email: str) -> str:
    if not isinstance(email, str) or not _EMAIL_RE.fullmatch(email):
        raise ValueError(f"not a valid e-mail address: {email!r}")
    return email


def substitute(text: str, values: dict[str, str], *, source: str = "") -> str:
    """Replace ``${NAME}`` placeholders; an unknown placeholder is an error."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise PlatformError(f"{source or 'template'}: unknown placeholder ${{{name}}}")
        return values[name]

    return _PLACEHOLDER_RE.sub(repl, text)


def _substitutions(*, domain: str, acme_email: str | None, relay_subdomain: str,
                   argocd_subdomain: str) -> dict[str, str]:
    validate_domain(domain)
    subs = {
        "DOMAIN": domain,
        "RELAY_HOST": f"{validate_subdomain(relay_subdomain)}.{domain}",
        "ARGOCD_HOST": f"{validate_subdomain(argocd_subdomain)}.{domain}",
    }
    if acme_email is not None:
        subs["ACME_EMAIL"] = validate_email(acme_email)
    return subs


def render_values(pin: ChartPin, substitutions: dict[str, str],
                  root: Path | None = None) -> Obj:
    """A chart's values file with placeholders substituted, parsed."""
    if not pin.values:
        return {}
    path = _root(root) / pin.values
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlatformError(f"{path}: file not found") from None
    rendered = substitute(text, substitutions, source=str(path))
    try:
        values = yaml.safe_load(rendered)
    except yaml.YAMLError as exc:
        raise PlatformError(f"{path}: invalid YAML after substitution ({exc})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise PlatformError(f"{path}: values must be a mapping")
    return values


def _dump(values: Obj) -> str:
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------------------------------------
# platform (kubernetes phase)


def namespace_object(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
    }


def helm_chart(pin: ChartPin, values: Obj) -> Obj:
    """A k3s ``HelmChart`` (helm.cattle.io/v1) installing ``pin`` with ``values``."""
    if pin.bundled:
        raise ValueError(f"{pin.name} is bundled with k3s: use helm_chart_config()")
    return {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {"name": pin.name, "namespace": pin.namespace, "labels": dict(MANAGED_BY)},
        "spec": {
            "repo": pin.repo,
            "chart": pin.chart,
            "version": pin.version,
            "targetNamespace": pin.target_namespace,
            "createNamespace": True,
            "failurePolicy": "reinstall",
            "timeout": "10m0s",
            "valuesContent": _dump(values),
        },
    }


def helm_chart_config(pin: ChartPin, values: Obj) -> Obj:
    """A k3s ``HelmChartConfig`` overriding values of a chart k3s itself installs."""
    return {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChartConfig",
        "metadata": {"name": pin.name, "namespace": pin.namespace, "labels": dict(MANAGED_BY)},
        "spec": {"valuesContent": _dump(values)},
    }


def platform_objects(*, domain: str, acme_email: str, relay_subdomain: str = "relay",
                     argocd_subdomain: str = "argocd", root: Path | None = None) -> list[Obj]:
    """Everything the ``kubernetes`` phase applies, in apply order (see module docstring).

    The ClusterIssuers are not included: they need cert-manager's CRDs, so apply
    :func:`cluster_issuers` once cert-manager is available.
    """
    subs = _substitutions(domain=domain, acme_email=acme_email,
                          relay_subdomain=relay_subdomain, argocd_subdomain=argocd_subdomain)
    pins = load_chart_pins(root)
    namespaces: list[str] = []
    for pin in pins.values():
        if not pin.bundled and pin.target_namespace not in namespaces:
            namespaces.append(pin.target_namespace)
    objs: list[Obj] = [namespace_object(n) for n in namespaces]
    objs += [helm_chart_config(p, render_values(p, subs, root)) for p in pins.values()
             if p.bundled]
    objs += [helm_chart(p, render_values(p, subs, root)) for p in pins.values()
             if not p.bundled]
    return objs


def cluster_issuers(*, acme_email: str, root: Path | None = None) -> list[Obj]:
    """The Let's Encrypt ClusterIssuers (staging, production) with ``acme_email``."""
    path = _root(root) / "cert-manager" / "cluster-issuer.yaml"
    subs = {"ACME_EMAIL": validate_email(acme_email)}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlatformError(f"{path}: file not found") from None
    docs = [d for d in yaml.safe_load_all(substitute(text, subs, source=str(path))) if d]
    if not docs or not all(isinstance(d, dict) and d.get("kind") == "ClusterIssuer"
                           for d in docs):
        raise PlatformError(f"{path}: expected ClusterIssuer documents")
    for doc in docs:
        doc.setdefault("metadata", {}).setdefault("labels", {}).update(MANAGED_BY)
    return docs


def platform_workloads(root: Path | None = None) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of each workload to wait for after :func:`platform_objects`."""
    out: list[tuple[str, str, str]] = []
    for pin in load_chart_pins(root).values():
        for workload in pin.workloads:
            kind, name = workload.split("/")
            out.append((kind, pin.target_namespace, name))
    return out


def cloudflare_secret(api_token: str) -> Obj:
    """The Secret external-dns reads its Cloudflare API token from (env CF_API_TOKEN)."""
    if not isinstance(api_token, str) or not api_token.strip() or any(
        c.isspace() for c in api_token
    ):
        raise ValueError("cloudflare api token must be a non-empty string without spaces")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": CLOUDFLARE_SECRET_NAME,
            "namespace": EXTERNAL_DNS_NAMESPACE,
            "labels": dict(MANAGED_BY),
        },
        "stringData": {CLOUDFLARE_SECRET_KEY: api_token},
    }


# ---------------------------------------------------------------------------------------------
# the relay (app phase)


def app_dir(root: Path | None = None) -> Path:
    return _root(root) / "apps" / "metadata-relay"


def site_patches(*, domain: str, relay_subdomain: str = "relay",
                 turn_subdomain: str | None = None) -> list[kustomize.Patch]:
    """Kustomize patches that set the relay's host names (Ingress host and TLS, TURN realm;
    with ``turn_subdomain``, the TURN-over-TLS route of :data:`TURN_TLS_COMPONENT`).

    The same patches go into the Argo CD Application (spec.source.kustomize.patches) and into
    :func:`app_objects`, so GitOps and the direct apply render identical objects.
    """
    host = f"{validate_subdomain(relay_subdomain)}.{validate_domain(domain)}"
    ingress = [
        {"op": "replace", "path": "/spec/rules/0/host", "value": host},
        {"op": "replace", "path": "/spec/tls/0/hosts/0", "value": host},
    ]
    config = [{"op": "replace", "path": "/data/TURN_REALM", "value": host}]
    patches = [
        kustomize.Patch(patch=_dump_ops(ingress),
                        target={"kind": "Ingress", "name": "metadata-relay"}),
    ]
    if turn_subdomain is not None:
        turn = f"{validate_subdomain(turn_subdomain)}.{domain}"
        config.append({"op": "replace", "path": "/data/TURN_TLS_HOST", "value": turn})
        patches += _tls_route_patches(turn, host, certificate="metadata-relay-turn-tls",
                                      route="metadata-relay-turn")
    return [*patches, kustomize.Patch(patch=_dump_ops(config), target={
        "kind": "ConfigMap", "name": "metadata-relay-config"})]


def _tls_route_patches(host: str, relay_host: str, *, certificate: str, route: str
                       ) -> list[kustomize.Patch]:
    """Host name patches of a TLS route by SNI: its Certificate, its IngressRouteTCP's
    ``HostSNI`` and the external-dns target (a CNAME of the relay's host)."""
    cert = [{"op": "replace", "path": "/spec/dnsNames/0", "value": host}]
    router = [
        {"op": "replace", "path": "/spec/routes/0/match", "value": f"HostSNI(`{host}`)"},
        {"op": "replace", "path": f"/metadata/annotations/{DNS_TARGET.replace('/', '~1')}",
         "value": relay_host},
    ]
    return [
        kustomize.Patch(patch=_dump_ops(cert), target={"kind": "Certificate",
                                                       "name": certificate}),
        kustomize.Patch(patch=_dump_ops(router), target={"kind": "IngressRouteTCP",
                                                         "name": route}),
    ]


def _dump_ops(ops: list[Obj]) -> str:
    return yaml.safe_dump(ops, sort_keys=False, default_flow_style=False).rstrip("\n")


def default_image(root: Path | None = None) -> kustomize.Image:
    """The relay image entry of the kustomization (name and pinned tag)."""
    path = app_dir(root) / "kustomization.yaml"
    data = _read_yaml(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or len(images) != 1:
        raise PlatformError(f"{path}: expected exactly one images: entry (the relay)")
    return kustomize.Image.from_entry(images[0])


def image_override(image: str, root: Path | None = None) -> kustomize.Image:
    """Replace the relay image with ``image`` (``repo:tag`` or ``repo@sha256:...``).

    ``latest`` and untagged references are refused: the deployment must name what it runs.
    """
    name, tag, digest = kustomize.split_image(image)
    if not name or any(c.isspace() for c in image):
        raise ValueError(f"not an image reference: {image!r}")
    if digest is not None and not _DIGEST_RE.fullmatch(digest):
        raise ValueError(f"bad image digest in {image!r}")
    if tag is not None and not _TAG_RE.fullmatch(tag):
        raise ValueError(f"bad image tag in {image!r}")
    if digest is None and (tag is None or tag == "latest"):
        raise ValueError(f"image must be pinned by a tag other than 'latest': {image!r}")
    return kustomize.Image(name=default_image(root).name, new_name=name, new_tag=tag,
                           digest=digest)


def _relay_components(components: tuple[str, ...], turn_subdomain: str | None
                      ) -> tuple[str, ...]:
    if turn_subdomain is not None and TURN_TLS_COMPONENT not in components:
        return (*components, TURN_TLS_COMPONENT)
    return components


def app_objects(*, domain: str, image: str | None = None, relay_subdomain: str = "relay",
                turn_subdomain: str | None = None, root: Path | None = None,
                components: tuple[str, ...] = ()) -> list[Obj]:
    """The rendered ``apps/metadata-relay`` kustomization for ``domain`` (apply order).

    ``image`` (``repo:tag`` or ``repo@sha256:...``) replaces the pinned relay image; None or
    "" keeps the tag pinned in kustomization.yaml. ``turn_subdomain`` adds TURN over TLS on
    443 for ``<turn_subdomain>.<domain>`` (:data:`TURN_TLS_COMPONENT`). ``components`` may
    name other optional kustomize components, e.g. ``("components/redis",)``.
    """
    patches = site_patches(domain=domain, relay_subdomain=relay_subdomain,
                           turn_subdomain=turn_subdomain)
    images = [image_override(image, root)] if image else []
    try:
        return kustomize.render(app_dir(root), patches=patches, images=images,
                                components=_relay_components(components, turn_subdomain))
    except kustomize.KustomizeError as exc:
        raise PlatformError(str(exc)) from None


@dataclass(frozen=True)
class RelayPorts:
    """The ports the relay binds on the host (hostNetwork), from its ConfigMap."""

    http: int  # PORT: plain HTTP behind Traefik; never to be reachable from outside
    turn: int  # TURN_PORT, UDP and TCP
    relay_min: int  # TURN_MIN_PORT..TURN_MAX_PORT: UDP relay allocations
    relay_max: int


def relay_ports(root: Path | None = None) -> RelayPorts:
    objs = app_objects(domain="example.com", root=root)
    maps = [o for o in objs if o["kind"] == "ConfigMap" and
            o["metadata"]["name"] == "metadata-relay-config"]
    if len(maps) != 1:
        raise PlatformError(f"{app_dir(root)}: expected the ConfigMap metadata-relay-config")
    data = maps[0].get("data") or {}
    try:
        ports = RelayPorts(int(data["PORT"]), int(data["TURN_PORT"]),
                           int(data["TURN_MIN_PORT"]), int(data["TURN_MAX_PORT"]))
    except (KeyError, ValueError) as exc:
        raise PlatformError(f"{app_dir(root)}/configmap.yaml: PORT, TURN_PORT, TURN_MIN_PORT "
                            f"and TURN_MAX_PORT must be port numbers ({exc})") from None
    if not all(0 < p < 65536 for p in (ports.http, ports.turn, ports.relay_min,
                                       ports.relay_max)) or ports.relay_min > ports.relay_max:
        raise PlatformError(f"{app_dir(root)}/configmap.yaml: bad relay ports {ports}")
    return ports


def relay_namespace(root: Path | None = None) -> Obj:
    """The relay's Namespace as the kustomization renders it (apply it before the Secret)."""
    objs = app_objects(domain="example.com", root=root)
    ns = [o for o in objs if o["kind"] == "Namespace"]
    if len(ns) != 1 or ns[0]["metadata"]["name"] != RELAY_NAMESPACE:
        raise PlatformError(f"{app_dir(root)}: expected the Namespace {RELAY_NAMESPACE}")
    return ns[0]


def _argocd_image(override: kustomize.Image) -> str:
    new = override.new_name or override.name
    ref = f"{new}@{override.digest}" if override.digest else f"{new}:{override.new_tag}"
    return f"{override.name}={ref}"


def argocd_application(*, repo_url: str, revision: str = "main", domain: str,
                       relay_subdomain: str = "relay", turn_subdomain: str | None = None,
                       image: str | None = None, root: Path | None = None,
                       components: tuple[str, ...] = ()) -> Obj:
    """The Argo CD ``Application`` syncing ``apps/metadata-relay`` from ``repo_url``.

    Automated sync with prune and self-heal; host names patched for ``domain``; ``image``,
    ``turn_subdomain`` and ``components`` as for :func:`app_objects` (Argo CD renders the
    same objects).
    """
    components = _relay_components(components, turn_subdomain)
    kust: Obj = {"patches": [p.as_entry() for p in site_patches(
        domain=domain, relay_subdomain=relay_subdomain, turn_subdomain=turn_subdomain)]}
    if image:
        kust["images"] = [_argocd_image(image_override(image, root))]
    if components:
        for component in components:
            if not (app_dir(root) / component / "kustomization.yaml").is_file():
                raise ValueError(f"no kustomize component {component!r} in {app_dir(root)}")
        kust["components"] = list(components)
    return _application(app_dir(root), APP_PATH, repo_url=repo_url, revision=revision,
                        kustomization=kust)


def _application(directory: Path, path: str, *, repo_url: str, revision: str,
                 kustomization: Obj) -> Obj:
    """``directory``/application.yaml pointed at ``repo_url`` and ``revision`` with the site's
    kustomize settings."""
    if not isinstance(repo_url, str) or not re.fullmatch(
        r"(https://|ssh://|git@)[^\s]+", repo_url
    ):
        raise ValueError(f"not a Git repository URL (https://, ssh:// or git@): {repo_url!r}")
    if not isinstance(revision, str) or not revision or any(c.isspace() for c in revision):
        raise ValueError(f"not a Git revision: {revision!r}")
    file = directory / "application.yaml"
    app = _read_yaml(file)
    if not isinstance(app, dict) or app.get("kind") != "Application":
        raise PlatformError(f"{file}: expected an Argo CD Application")
    app.setdefault("metadata", {}).setdefault("labels", {}).update(MANAGED_BY)
    source = app["spec"]["source"]
    source["repoURL"] = repo_url
    source["targetRevision"] = revision
    source["path"] = path
    source["kustomize"] = kustomization
    return app


PULL_SECRET_NAME = "metadata-relay-ghcr"  # noqa: S105 (a name, not a secret)


def image_registry(root: Path | None = None) -> str:
    """The registry host of the relay image (``ghcr.io``)."""
    image = default_image(root)
    return (image.new_name or image.name).split("/", 1)[0]


def pull_secret(*, registry: str, username: str, token: str) -> Obj:
    """The image pull secret for a private package (``kubernetes.io/dockerconfigjson``)."""
    import base64
    import json

    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    config = {"auths": {registry: {"username": username, "password": token, "auth": auth}}}
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": PULL_SECRET_NAME, "namespace": RELAY_NAMESPACE,
                     "labels": {"app.kubernetes.io/name": "metadata-relay", **MANAGED_BY}},
        "stringData": {".dockerconfigjson": json.dumps(config, sort_keys=True)},
    }


def pulling_service_account() -> Obj:
    """The namespace's default ServiceAccount naming the pull secret, so every pod there
    (the Deployment as Argo CD or the tool applies it) pulls with it."""
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": RELAY_NAMESPACE},
            "imagePullSecrets": [{"name": PULL_SECRET_NAME}]}


def relay_secret(data: dict[str, str]) -> Obj:
    """The Secret ``metadata-relay-secrets`` (stringData keyed by the service's env names)."""
    unknown = sorted(set(data) - RELAY_SECRET_KEYS)
    if unknown:
        raise ValueError(f"not a relay secret setting: {', '.join(unknown)} "
                         f"(allowed: {', '.join(sorted(RELAY_SECRET_KEYS))})")
    for key, value in data.items():
        if not isinstance(value, str):
            raise ValueError(f"{key}: value must be a string")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": RELAY_SECRET_NAME,
            "namespace": RELAY_NAMESPACE,
            "labels": {"app.kubernetes.io/name": "metadata-relay", **MANAGED_BY},
        },
        "stringData": {k: data[k] for k in sorted(data)},
    }


# ---------------------------------------------------------------------------------------------
# the iroh relay (optional, app phase): n0's iroh-relay for today's mydia

IROH_APP_PATH = "infra/kubernetes/apps/iroh-relay"
IROH_NAMESPACE = "iroh-relay"
IROH_DEPLOYMENT = "iroh-relay"
IROH_APP_NAME = "iroh-relay"


def iroh_dir(root: Path | None = None) -> Path:
    return _root(root) / "apps" / "iroh-relay"


def iroh_site_patches(*, domain: str, iroh_subdomain: str = "iroh",
                      relay_subdomain: str = "relay") -> list[kustomize.Patch]:
    """The iroh relay's host name (its Certificate and passthrough route), and the relay's
    host name its DNS record is a CNAME of."""
    validate_domain(domain)
    host = f"{validate_subdomain(iroh_subdomain)}.{domain}"
    return _tls_route_patches(host, f"{validate_subdomain(relay_subdomain)}.{domain}",
                              certificate="iroh-relay-tls", route="iroh-relay")


def iroh_image(root: Path | None = None) -> kustomize.Image:
    """The iroh relay's ``images:`` entry in its kustomization (name, pinned tag, and the
    digest when one is written there)."""
    path = iroh_dir(root) / "kustomization.yaml"
    data = _read_yaml(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or len(images) != 1:
        raise PlatformError(f"{path}: expected exactly one images: entry (the iroh relay)")
    try:
        return kustomize.Image.from_entry(images[0])
    except kustomize.KustomizeError as exc:
        raise PlatformError(f"{path}: {exc}") from None


def _iroh_pin(digest: str | None, root: Path | None) -> kustomize.Image | None:
    """The images: entry that adds ``digest`` to the pinned tag (name:tag@digest)."""
    if digest is None:
        return None
    if not _DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 image digest: {digest!r}")
    entry = iroh_image(root)
    if not entry.new_tag:
        raise PlatformError(f"{iroh_dir(root)}/kustomization.yaml: the iroh relay image needs "
                            f"its newTag (the release the digest belongs to)")
    return kustomize.Image(name=entry.name, new_name=entry.new_name, new_tag=entry.new_tag,
                           digest=digest)


def iroh_relay_objects(*, domain: str, iroh_subdomain: str = "iroh",
                       relay_subdomain: str = "relay", digest: str | None = None,
                       root: Path | None = None) -> list[Obj]:
    """The rendered ``apps/iroh-relay`` kustomization for ``domain`` (apply order);
    ``digest`` pins the image's tag to it (``name:tag@digest``)."""
    patches = iroh_site_patches(domain=domain, iroh_subdomain=iroh_subdomain,
                                relay_subdomain=relay_subdomain)
    pin = _iroh_pin(digest, root)
    try:
        return kustomize.render(iroh_dir(root), patches=patches, images=[pin] if pin else [])
    except kustomize.KustomizeError as exc:
        raise PlatformError(str(exc)) from None


def iroh_relay_application(*, repo_url: str, revision: str = "main", domain: str,
                           iroh_subdomain: str = "iroh", relay_subdomain: str = "relay",
                           digest: str | None = None, root: Path | None = None) -> Obj:
    """The Argo CD ``Application`` syncing ``apps/iroh-relay`` (renders like
    :func:`iroh_relay_objects`; the digest goes in as ``name=newName:tag@digest``, which
    ``kustomize edit set image`` turns into the same images: entry)."""
    patches = iroh_site_patches(domain=domain, iroh_subdomain=iroh_subdomain,
                                relay_subdomain=relay_subdomain)
    kust: Obj = {"patches": [p.as_entry() for p in patches]}
    pin = _iroh_pin(digest, root)
    if pin is not None:
        kust["images"] = [f"{pin.name}={pin.new_name or pin.name}:{pin.new_tag}@{pin.digest}"]
    return _application(iroh_dir(root), IROH_APP_PATH, repo_url=repo_url, revision=revision,
                        kustomization=kust)


@dataclass(frozen=True)
class IrohRelay:
    """What the deploy tool needs to know of the pinned iroh relay."""

    image: str  # as the kustomization renders it: name:tag, and @digest when it pins one
    name: str  # n0computer/iroh-relay
    tag: str  # v0.96.1
    version: str  # the release, as its /healthz reports it (0.96.1)
    digest: str | None  # the kustomization's own digest, if any (see relay_deploy.image_pin)
    quic_port: int  # the host port of QUIC address discovery (UDP)


def iroh_relay(root: Path | None = None) -> IrohRelay:
    objs = iroh_relay_objects(domain="example.com", root=root)
    deps = [o for o in objs if o["kind"] == "Deployment"
            and o["metadata"]["name"] == IROH_DEPLOYMENT]
    if len(deps) != 1:
        raise PlatformError(f"{iroh_dir(root)}: expected the Deployment {IROH_DEPLOYMENT}")
    (container,) = deps[0]["spec"]["template"]["spec"]["containers"]
    image = str(container["image"])
    name, tag, digest = kustomize.split_image(image)
    if not tag or not re.fullmatch(r"v\d+\.\d+\.\d+", tag):
        raise PlatformError(f"{iroh_dir(root)}: the iroh relay image must be pinned to a "
                            f"release tag (vX.Y.Z), not {image!r}")
    if digest is not None and not _DIGEST_RE.fullmatch(digest):
        raise PlatformError(f"{iroh_dir(root)}: bad image digest in {image!r}")
    quic = [p for p in container.get("ports") or [] if p.get("name") == "quic"]
    if len(quic) != 1 or quic[0].get("protocol") != "UDP" or not quic[0].get("hostPort"):
        raise PlatformError(f"{iroh_dir(root)}: the iroh relay needs its UDP port named quic "
                            f"as a host port")
    return IrohRelay(image=image, name=name, tag=tag, version=tag[1:], digest=digest,
                     quic_port=int(quic[0]["hostPort"]))
