"""Kubernetes API access through lightkube: server-side apply with a change check, reads.

``plan_apply`` GETs the live object and compares: when everything we set is already there the
object is "found" and nothing is sent. Otherwise a real run server-side-applies it and a dry
run sends the same apply with ``dryRun=All`` (validated by the server, stored nowhere).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ApiError, Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.resource import Resource
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Node, Pod

from relay_deploy.kubeconfig import CONTEXT

FIELD_MANAGER = "relay-deploy"

# Custom kinds the platform uses: (group, version, kind, plural, namespaced)
_CUSTOM = [
    ("helm.cattle.io", "v1", "HelmChart", "helmcharts", True),
    ("helm.cattle.io", "v1", "HelmChartConfig", "helmchartconfigs", True),
    ("cert-manager.io", "v1", "ClusterIssuer", "clusterissuers", False),
    ("cert-manager.io", "v1", "Issuer", "issuers", True),
    ("cert-manager.io", "v1", "Certificate", "certificates", True),
    ("argoproj.io", "v1alpha1", "Application", "applications", True),
    ("argoproj.io", "v1alpha1", "AppProject", "appprojects", True),
    ("traefik.io", "v1alpha1", "IngressRouteTCP", "ingressroutetcps", True),
    ("traefik.io", "v1alpha1", "ServersTransportTCP", "serverstransporttcps", True),
    ("traefik.io", "v1alpha1", "TLSOption", "tlsoptions", True),
]
_custom_types: dict[tuple[str, str], type[Resource]] = {}


def _plural(kind: str) -> str:
    low = kind.lower()
    if low.endswith("s"):
        return low + "es"
    if low.endswith("y"):
        return low[:-1] + "ies"
    return low + "s"


def resource_type(api_version: str, kind: str, namespaced: bool) -> Any:
    """The lightkube class for ``apiVersion``/``kind`` (built-in, known custom, or generic)."""
    from lightkube.core.resource_registry import resource_registry

    found = resource_registry.get(api_version, kind)
    if found is not None:
        return found
    key = (api_version, kind)
    if key not in _custom_types:
        group, _, version = api_version.rpartition("/")
        known = {(g, v, k): (p, ns) for g, v, k, p, ns in _CUSTOM}
        plural, ns = known.get((group, version, kind), (_plural(kind), namespaced))
        factory = create_namespaced_resource if ns else create_global_resource
        _custom_types[key] = factory(group, version, kind, plural)
    return _custom_types[key]


def normalize(obj: dict[str, Any]) -> dict[str, Any]:
    """Secrets are applied with base64 ``data`` (what the API stores, so comparable)."""
    if obj.get("kind") == "Secret" and obj.get("stringData"):
        obj = dict(obj)
        data = dict(obj.get("data") or {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
    return obj


def is_subset(want: Any, have: Any) -> bool:
    """Everything in ``want`` is present with the same value in ``have``."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(have, list) and len(want) == len(have)
                and all(is_subset(w, h) for w, h in zip(want, have, strict=True)))
    if isinstance(want, int | float) and isinstance(have, int | float):
        return bool(want == have)
    return bool(want == have)


def describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"


@dataclass(frozen=True)
class ApplyPlan:
    obj: dict[str, Any]
    action: str  # found | create | update
    why: str


class Cluster:
    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Cluster:
        config = KubeConfig.from_file(path).get(context_name=CONTEXT)
        if config is None:
            raise FileNotFoundError(f"context {CONTEXT} not in {path}")
        return cls(Client(config=config, field_manager=FIELD_MANAGER,
                          timeout=httpx2.Timeout(20.0), trust_env=False))

    def _type(self, obj: dict[str, Any]) -> Any:
        ns = bool((obj.get("metadata") or {}).get("namespace"))
        return resource_type(str(obj["apiVersion"]), str(obj["kind"]), ns)

    def get_dict(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj.get("metadata") or {}
        try:
            live = self.client.get(self._type(obj), meta["name"],
                                   namespace=meta.get("namespace"))
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return _to_dict(live)

    def plan_apply(self, obj: dict[str, Any]) -> ApplyPlan:
        obj = normalize(obj)
        live = self.get_dict(obj)
        if live is None:
            return ApplyPlan(obj, "create", "not in the cluster")
        if is_subset(obj, live):
            return ApplyPlan(obj, "found", "up to date")
        return ApplyPlan(obj, "update", "differs from the manifest")

    def apply(self, obj: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
        from lightkube import codecs

        self._type(obj)  # registers custom kinds so codecs can load them
        res = codecs.from_dict(normalize(obj))
        out = self.client.apply(res, field_manager=FIELD_MANAGER, force=True, dry_run=dry_run)
        return _to_dict(out)

    # ---- reads used by waits, verify and status -------------------------------------------
    def nodes_ready(self) -> list[str]:
        ready = []
        for node in self.client.list(Node):
            conds = (node.status.conditions or []) if node.status else []
            if any(c.type == "Ready" and c.status == "True" for c in conds):
                ready.append(str(node.metadata.name if node.metadata else "?"))
        return ready

    def deployments(self, namespace: str, labels: dict[str, str] | None = None
                    ) -> list[tuple[str, bool]]:
        """(name, available) of each Deployment in ``namespace`` matching ``labels``."""
        out = []
        selector: dict[str, Any] | None = dict(labels) if labels else None
        for dep in self.client.list(Deployment, namespace=namespace, labels=selector):
            out.append((str(dep.metadata.name if dep.metadata else "?"), deployment_ready(dep)))
        return out

    def workload_ready(self, kind: str, namespace: str, name: str) -> bool:
        from lightkube.resources.apps_v1 import DaemonSet, StatefulSet

        res: Any = {"Deployment": Deployment, "StatefulSet": StatefulSet,
                    "DaemonSet": DaemonSet}[kind]
        try:
            obj = self.client.get(res, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        if kind == "Deployment":
            return deployment_ready(obj)
        st, spec = obj.status, obj.spec
        if st is None:
            return False
        if kind == "StatefulSet":
            want = spec.replicas if spec and spec.replicas is not None else 1
            return bool((st.readyReplicas or 0) >= want)
        return bool(st.desiredNumberScheduled and st.numberReady >= st.desiredNumberScheduled)

    def waiting_containers(self, namespace: str) -> list[tuple[str, str, str]]:
        """(pod, reason, message) of every container waiting in ``namespace``."""
        out = []
        for pod in self.client.list(Pod, namespace=namespace):
            statuses = (pod.status.containerStatuses or []) if pod.status else []
            for status in statuses:
                waiting = status.state.waiting if status.state else None
                if waiting is not None and waiting.reason:
                    name = str(pod.metadata.name if pod.metadata else "?")
                    out.append((name, str(waiting.reason), str(waiting.message or "")))
        return out

    def deployment(self, namespace: str, name: str) -> Deployment | None:
        try:
            return self.client.get(Deployment, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise

    def list_dicts(self, api_version: str, kind: str, namespace: str | None
                   ) -> list[dict[str, Any]]:
        res = resource_type(api_version, kind, namespace is not None)
        try:
            if namespace is None:
                items = list(self.client.list(res))
            else:
                items = list(self.client.list(res, namespace=namespace))
        except ApiError as exc:
            if exc.status.code == 404:
                return []
            raise
        return [_to_dict(i) for i in items]


def condition_true(obj: dict[str, Any], cond_type: str) -> bool:
    conds = ((obj.get("status") or {}).get("conditions")) or []
    return any(c.get("type") == cond_type and c.get("status") == "True" for c in conds)


def deployment_ready(dep: Deployment) -> bool:
    if dep.status is None or dep.spec is None:
        return False
    want = dep.spec.replicas if dep.spec.replicas is not None else 1
    st = dep.status
    gen_ok = (dep.metadata is None or dep.metadata.generation is None
              or (st.observedGeneration or 0) >= dep.metadata.generation)
    return bool(gen_ok and (st.updatedReplicas or 0) >= want
                and (st.availableReplicas or 0) >= want)


def _to_dict(res: Any) -> dict[str, Any]:
    if isinstance(res, dict):
        return res
    to_dict = getattr(res, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"cannot convert {type(res).__name__}")
    out: dict[str, Any] = to_dict()
    return out
