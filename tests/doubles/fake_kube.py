"""A fake Kubernetes API on loopback: enough of the real one for lightkube.

Server-side apply (PATCH application/apply-patch+yaml with fieldManager, honouring
dryRun=All), GET, list with labelSelector; a bearer token is required; objects in a missing
namespace or of a kind whose CRD is not installed are refused (404) as the real API does.
A few "controllers" emulate k3s: helm-controller turns a HelmChart into the chart's
workloads (and CRDs), Deployments become available, ClusterIssuers Ready, and cert-manager
issues a Certificate for an Ingress with TLS and every Certificate applied. Traefik's CRDs
are there from the start (k3s bundles them). Every call is recorded.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

TOKEN = "fake-k3s-token"

# (group/version, plural) -> (kind, namespaced, crd group or None when built in)
RESOURCES: dict[tuple[str, str], tuple[str, bool, str | None]] = {
    ("v1", "namespaces"): ("Namespace", False, None),
    ("v1", "nodes"): ("Node", False, None),
    ("v1", "secrets"): ("Secret", True, None),
    ("v1", "configmaps"): ("ConfigMap", True, None),
    ("v1", "services"): ("Service", True, None),
    ("v1", "persistentvolumeclaims"): ("PersistentVolumeClaim", True, None),
    ("v1", "serviceaccounts"): ("ServiceAccount", True, None),
    ("v1", "pods"): ("Pod", True, None),
    ("apps/v1", "deployments"): ("Deployment", True, None),
    ("apps/v1", "statefulsets"): ("StatefulSet", True, None),
    ("networking.k8s.io/v1", "ingresses"): ("Ingress", True, None),
    ("helm.cattle.io/v1", "helmcharts"): ("HelmChart", True, "helm.cattle.io"),
    ("helm.cattle.io/v1", "helmchartconfigs"): ("HelmChartConfig", True, "helm.cattle.io"),
    ("cert-manager.io/v1", "clusterissuers"): ("ClusterIssuer", False, "cert-manager.io"),
    ("cert-manager.io/v1", "certificates"): ("Certificate", True, "cert-manager.io"),
    ("argoproj.io/v1alpha1", "applications"): ("Application", True, "argoproj.io"),
    # k3s installs Traefik's CRDs with its bundled Traefik (traefik-crd chart)
    ("traefik.io/v1alpha1", "ingressroutetcps"): ("IngressRouteTCP", True, "traefik.io"),
    ("traefik.io/v1alpha1", "serverstransporttcps"): ("ServersTransportTCP", True,
                                                      "traefik.io"),
    ("traefik.io/v1alpha1", "tlsoptions"): ("TLSOption", True, "traefik.io"),
}
# What each real chart brings (workloads as the chart names them, CRD groups).
CHARTS: dict[str, tuple[list[tuple[str, str]], str | None]] = {
    "cert-manager": ([("deployments", "{r}"), ("deployments", "{r}-webhook"),
                      ("deployments", "{r}-cainjector")], "cert-manager.io"),
    "external-dns": ([("deployments", "{r}")], None),
    "argo-cd": ([("deployments", "{r}-server"), ("deployments", "{r}-repo-server"),
                 ("deployments", "{r}-redis"),
                 ("statefulsets", "{r}-application-controller")], "argoproj.io"),
}


@dataclass
class KubeCall:
    method: str
    path: str
    query: dict[str, str]

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"


@dataclass
class FakeKube:
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[KubeCall] = field(default_factory=list)
    crds: set[str] = field(default_factory=lambda: {"helm.cattle.io", "traefik.io"})
    unauthorized: int = 0
    workloads_become_ready: bool = True
    # images (by name, without tag) that only pull with a dockerconfigjson secret holding
    # this registry token, referenced by the namespace's default ServiceAccount: a private
    # GHCR package
    private_images: set[str] = field(default_factory=set)
    registry_token: str = "ghcr-read-token"
    secrets_refused_verbosely: bool = False  # echo a Secret's value in the refusal, as some
    # admission webhooks do
    _rv: Any = field(default_factory=lambda: itertools.count(100))

    def __post_init__(self) -> None:
        # what a fresh k3s node has
        self._store("v1", "namespaces", "", _obj("v1", "Namespace", "kube-system"))
        self._store("v1", "namespaces", "", _obj("v1", "Namespace", "default"))
        node = _obj("v1", "Node", "vps-node")
        node["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
        self._store("v1", "nodes", "", node)
        traefik = _obj("apps/v1", "Deployment", "traefik", "kube-system")
        traefik["spec"] = _workload_spec("traefik")
        self._store("apps/v1", "deployments", "kube-system", traefik)
        self._ready("deployments", traefik)

    # ---- test helpers -------------------------------------------------------------------
    def mutating(self) -> list[KubeCall]:
        return [c for c in self.calls if c.method not in ("GET",)]

    def applied(self, *, dry_run: bool = False) -> list[KubeCall]:
        return [c for c in self.calls if c.method == "PATCH" and c.dry_run == dry_run]

    def get(self, gv: str, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((gv, plural, ns, name))

    def kinds(self) -> list[str]:
        return sorted({o["kind"] for o in self.objects.values()})

    # ---- server -------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.calls.append(KubeCall(request.method, request.path, query))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.unauthorized += 1
            return _status(401, "Unauthorized", "Unauthorized")
        route = self._route(request.path)
        if route is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        gv, plural, ns, name = route
        kind, namespaced, _crd = RESOURCES[(gv, plural)]
        if request.method == "GET":
            if name:
                obj = self.objects.get((gv, plural, ns, name))
                if obj is None:
                    return _status(404, "NotFound", f'{plural} "{name}" not found')
                return _json(obj)
            return _json(self._list(gv, plural, kind, ns,
                                                query.get("labelSelector", "")))
        if request.method == "PATCH":
            return await self._apply(request, gv, plural, kind, namespaced, ns, name, query)
        return _status(405, "MethodNotAllowed", f"{request.method} not supported by the fake")

    def _route(self, path: str) -> tuple[str, str, str, str] | None:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            gv, rest = "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, plural, name = rest[1], rest[2], rest[3] if len(rest) > 3 else ""
        elif rest:
            ns, plural, name = "", rest[0], rest[1] if len(rest) > 1 else ""
        else:
            return None
        spec = RESOURCES.get((gv, plural))
        if spec is None or (spec[2] is not None and spec[2] not in self.crds):
            return None
        if bool(ns) != spec[1] and name:
            return None
        return gv, plural, ns, name

    def _list(self, gv: str, plural: str, kind: str, ns: str, selector: str) -> dict[str, Any]:
        want = dict(p.split("=", 1) for p in selector.split(",") if "=" in p)
        items = [o for (g, p, n, _), o in sorted(self.objects.items())
                 if g == gv and p == plural and (not ns or n == ns)
                 and all(((o["metadata"].get("labels") or {}).get(k) == v)
                         for k, v in want.items())]
        return {"apiVersion": gv, "kind": f"{kind}List", "metadata": {"resourceVersion": "1"},
                "items": items}

    async def _apply(self, request: web.Request, gv: str, plural: str, kind: str,
                     namespaced: bool, ns: str, name: str, query: dict[str, str]
                     ) -> web.Response:
        if request.content_type != "application/apply-patch+yaml":
            return _status(415, "UnsupportedMediaType", f"{request.content_type} unsupported")
        if not query.get("fieldManager"):
            return _status(422, "Invalid", "fieldManager is required for apply patch")
        if query.get("dryRun") not in (None, "All"):
            return _status(400, "BadRequest", "dryRun must be All")
        try:
            body = yaml.safe_load(await request.text())
        except yaml.YAMLError:
            return _status(400, "BadRequest", "body is not YAML")
        if not isinstance(body, dict):
            return _status(400, "BadRequest", "body is not an object")
        meta = body.get("metadata") or {}
        if body.get("apiVersion") != gv or body.get("kind") != kind:
            return _status(400, "BadRequest", f"apiVersion/kind {body.get('apiVersion')}/"
                                              f"{body.get('kind')} do not match {gv}/{plural}")
        if meta.get("name") != name or (namespaced and meta.get("namespace", ns) != ns):
            return _status(400, "BadRequest", "name/namespace do not match the URL")
        if namespaced and ("v1", "namespaces", "", ns) not in self.objects:
            return _status(404, "NotFound", f'namespaces "{ns}" not found')
        if kind == "Secret" and self.secrets_refused_verbosely:
            values = list((body.get("data") or body.get("stringData") or {}).values())
            return _status(422, "Invalid", f'Secret "{name}" is invalid: data: Invalid value: '
                                           f'"{values[0] if values else ""}": refused by policy')
        if kind == "Secret":
            body = _secret_data(body)
            if body is None:
                return _status(422, "Invalid", "Secret data must be base64")
        key = (gv, plural, ns, name)
        old = self.objects.get(key)
        new = copy.deepcopy(body)
        new["metadata"] = {**meta, "uid": (old or {}).get("metadata", {}).get("uid", f"uid-{name}"),
                           "resourceVersion": str(next(self._rv)),
                           "generation": 1 if old is None else
                           old["metadata"].get("generation", 1) + (
                               old.get("spec") != body.get("spec"))}
        if namespaced:
            new["metadata"]["namespace"] = ns
        if old is not None and "status" in old:
            new["status"] = old["status"]
        if query.get("dryRun") == "All":
            return _json(new, status=200 if old else 201)
        self.objects[key] = new
        self._controllers(plural, new)
        return _json(new, status=200 if old else 201)

    # ---- emulated controllers -----------------------------------------------------------
    def _controllers(self, plural: str, obj: dict[str, Any]) -> None:
        if plural == "helmcharts":
            spec = obj["spec"]
            target = spec.get("targetNamespace") or obj["metadata"]["namespace"]
            if spec.get("createNamespace") and ("v1", "namespaces", "", target) not in \
                    self.objects:
                self._store("v1", "namespaces", "", _obj("v1", "Namespace", target))
            workloads, crd = CHARTS.get(spec.get("chart", ""), ([], None))
            if crd:
                self.crds.add(crd)
            release = obj["metadata"]["name"]
            for wplural, pattern in workloads:
                wname = pattern.format(r=release)
                w = _obj("apps/v1", "Deployment" if wplural == "deployments" else "StatefulSet",
                         wname, target)
                w["metadata"]["labels"] = {"app.kubernetes.io/instance": release}
                w["spec"] = _workload_spec(wname)
                self._store("apps/v1", wplural, target, w)
                if self.workloads_become_ready:
                    self._ready(wplural, w)
        elif plural == "deployments" and self.workloads_become_ready:
            self._roll_out(obj)
        elif plural in ("serviceaccounts", "secrets"):
            ns = obj["metadata"]["namespace"]
            for (gv, p, n, _), dep in list(self.objects.items()):
                if (gv, p, n) == ("apps/v1", "deployments", ns) and self.workloads_become_ready:
                    self._roll_out(dep)
        elif plural == "certificates":  # cert-manager issues it
            obj["status"] = {"conditions": [{"type": "Ready", "status": "True"}],
                             "notAfter": "2099-01-01T00:00:00Z"}
        elif plural == "clusterissuers":
            obj["status"] = {"conditions": [{"type": "Ready", "status": "True",
                                             "reason": "ACMEAccountRegistered"}]}
        elif plural == "ingresses" and "cert-manager.io" in self.crds:
            ns = obj["metadata"]["namespace"]
            for tls in obj.get("spec", {}).get("tls") or []:
                cert = _obj("cert-manager.io/v1", "Certificate", tls["secretName"], ns)
                cert["spec"] = {"secretName": tls["secretName"], "dnsNames": tls["hosts"]}
                cert["status"] = {"conditions": [{"type": "Ready", "status": "True"}],
                                  "notAfter": "2099-01-01T00:00:00Z"}
                self._store("cert-manager.io/v1", "certificates", ns, cert)

    def _roll_out(self, dep: dict[str, Any]) -> None:
        """The Deployment's pod runs, or waits in ImagePullBackOff on a private image."""
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        containers = dep["spec"]["template"]["spec"].get("containers") or []
        stuck = [c for c in containers if c["image"].rsplit(":", 1)[0].split("@")[0]
                 in self.private_images and not self._can_pull(ns, c["image"])]
        pod = _obj("v1", "Pod", f"{name}-7d9f8c6b5-x2x9q", ns)
        pod["metadata"]["labels"] = dict(dep["spec"]["template"]["metadata"].get("labels") or {})
        statuses = []
        for c in containers:
            if c in stuck:
                state = {"waiting": {"reason": "ImagePullBackOff", "message":
                         f'Back-off pulling image "{c["image"]}"'}}
            else:
                state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
            statuses.append({"name": c["name"], "image": c["image"], "imageID": "",
                             "ready": c not in stuck,
                             "restartCount": 0, "state": state})
        pod["status"] = {"phase": "Pending" if stuck else "Running",
                         "containerStatuses": statuses}
        self._store("v1", "pods", ns, pod)
        if stuck:
            n = dep["spec"].get("replicas", 1)
            dep["status"] = {"observedGeneration": dep["metadata"].get("generation", 1),
                             "replicas": n, "updatedReplicas": n, "unavailableReplicas": n}
        else:
            self._ready("deployments", dep)

    def _can_pull(self, ns: str, image: str) -> bool:
        registry = image.split("/", 1)[0]
        account = self.objects.get(("v1", "serviceaccounts", ns, "default")) or {}
        for ref in account.get("imagePullSecrets") or []:
            secret = self.objects.get(("v1", "secrets", ns, ref.get("name", "")))
            if not secret or secret.get("type") != "kubernetes.io/dockerconfigjson":
                continue
            config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
            auth = (config.get("auths") or {}).get(registry) or {}
            user_token = base64.b64decode(auth.get("auth", "")).decode()
            if user_token.split(":", 1)[-1] == self.registry_token:
                return True
        return False

    def _store(self, gv: str, plural: str, ns: str, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[(gv, plural, ns, obj["metadata"]["name"])] = obj

    @staticmethod
    def _ready(plural: str, obj: dict[str, Any]) -> None:
        n = (obj.get("spec") or {}).get("replicas", 1)
        gen = obj["metadata"].get("generation", 1)
        if plural == "deployments":
            obj["status"] = {"observedGeneration": gen, "replicas": n, "updatedReplicas": n,
                             "readyReplicas": n, "availableReplicas": n,
                             "conditions": [{"type": "Available", "status": "True"}]}
        else:
            obj["status"] = {"replicas": n, "readyReplicas": n, "currentReplicas": n}


def _workload_spec(name: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": name, "image": f"{name}:1"}]}}}


def _obj(gv: str, kind: str, name: str, ns: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": gv, "kind": kind, "metadata": meta}


def _secret_data(body: dict[str, Any]) -> dict[str, Any] | None:
    body = copy.deepcopy(body)
    data = dict(body.get("data") or {})
    for value in data.values():
        try:
            base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            return None
    for k, v in (body.pop("stringData", None) or {}).items():
        data[k] = base64.b64encode(str(v).encode()).decode()
    body["data"] = data
    return body


def _status(code: int, reason: str, message: str) -> web.Response:
    return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}, status=code)


def _json(data: Any, status: int = 200) -> web.Response:
    """Exactly ``application/json`` as the real API sends (lightkube relies on it)."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json"})
