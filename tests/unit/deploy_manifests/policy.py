"""Deployment policy for the rendered metadata-relay kustomization, as code.

``violations(objs)`` returns one line per broken rule (empty when compliant); the tests assert
it is empty for the real manifests and non-empty for each deliberately broken variant.
"""

from __future__ import annotations

from typing import Any

from metadata_relay.config import Settings
from relay_deploy.kustomize import split_image
from relay_deploy.platform import RELAY_SECRET_KEYS, RELAY_SECRET_NAME

Obj = dict[str, Any]

CONFIGMAP = "metadata-relay-config"
DATA_MOUNT = "/data"


def _one(objs: list[Obj], kind: str, name: str) -> Obj | None:
    found = [o for o in objs if o.get("kind") == kind and o["metadata"].get("name") == name]
    return found[0] if len(found) == 1 else None


def _containers(pod: Obj) -> list[Obj]:
    return list(pod.get("initContainers") or []) + list(pod.get("containers") or [])


def violations(objs: list[Obj]) -> list[str]:
    out: list[str] = []
    dep = _one(objs, "Deployment", "metadata-relay")
    cm = _one(objs, "ConfigMap", CONFIGMAP)
    if dep is None or cm is None:
        return ["the Deployment metadata-relay and ConfigMap metadata-relay-config must exist"]
    data: dict[str, str] = cm.get("data") or {}
    spec = dep["spec"]
    pod = spec["template"]["spec"]

    # single node, host network for TURN
    if spec.get("replicas") != 1:
        out.append("replicas must be 1 (RWO volume, host ports)")
    if (spec.get("strategy") or {}).get("type") != "Recreate":
        out.append("strategy must be Recreate (RWO volume, host ports)")
    if pod.get("hostNetwork") is not True:
        out.append("hostNetwork must be true (TURN relay ports)")
    if pod.get("dnsPolicy") != "ClusterFirstWithHostNet":
        out.append("dnsPolicy must be ClusterFirstWithHostNet with hostNetwork")

    # pod-level security
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        out.append("pod securityContext.runAsNonRoot must be true")
    if psc.get("runAsUser") != 1000 or psc.get("runAsGroup") != 1000:
        out.append("pod must run as uid/gid 1000 (the image's user)")
    if psc.get("fsGroup") != 1000:
        out.append("fsGroup must be 1000 so the volume is writable")

    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    relay = next((c for c in pod.get("containers") or [] if c["name"] == "metadata-relay"), None)
    if relay is None:
        return [*out, "container metadata-relay missing"]

    for c in _containers(pod):
        out += _container_violations(c, volumes)

    # ports: named, and consistent with the settings in the ConfigMap
    ports = {(p.get("name"), p.get("containerPort"), p.get("protocol", "TCP"))
             for p in relay.get("ports") or []}
    http_port = int(data.get("PORT", "0") or 0)
    turn_port = int(data.get("TURN_PORT", "0") or 0)
    for expected in (("http", http_port, "TCP"), ("turn-udp", turn_port, "UDP"),
                     ("turn-tcp", turn_port, "TCP")):
        if expected not in ports:
            out.append(f"container port {expected} missing (must match the ConfigMap)")

    # probes on /health via the http port
    for probe in ("livenessProbe", "readinessProbe"):
        get = (relay.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != "/health" or get.get("port") not in ("http", http_port):
            out.append(f"{probe} must GET /health on the http port")

    # environment: settings from the ConfigMap, secrets only from the Secret
    env = relay.get("env") or []
    by_name = {e["name"]: e for e in env}
    field = ((by_name.get("TURN_PUBLIC_IP") or {}).get("valueFrom") or {}).get("fieldRef") or {}
    if field.get("fieldPath") != "status.hostIP":
        out.append("TURN_PUBLIC_IP must come from fieldRef status.hostIP")
    for e in env:
        name = e["name"]
        if name not in Settings.model_fields:
            out.append(f"env {name} is not a setting of metadata_relay.config.Settings")
        if "value" in e and name in RELAY_SECRET_KEYS:
            out.append(f"env {name} is a secret and must not be a literal value")
        ref = (e.get("valueFrom") or {})
        secret_ref = ref.get("secretKeyRef")
        if secret_ref is not None and secret_ref.get("name") != RELAY_SECRET_NAME:
            out.append(f"env {name} reads a Secret other than {RELAY_SECRET_NAME}")
        if secret_ref is None and name in RELAY_SECRET_KEYS:
            out.append(f"env {name} must come from the Secret {RELAY_SECRET_NAME}")
    for source in relay.get("envFrom") or []:
        if "secretRef" in source and source["secretRef"].get("name") != RELAY_SECRET_NAME:
            out.append(f"envFrom reads a Secret other than {RELAY_SECRET_NAME}")
        if "configMapRef" in source and source["configMapRef"].get("name") != CONFIGMAP:
            out.append(f"envFrom reads a ConfigMap other than {CONFIGMAP}")
    if {"configMapRef": {"name": CONFIGMAP}} not in (relay.get("envFrom") or []):
        out.append(f"envFrom must include the ConfigMap {CONFIGMAP}")
    if {"secretRef": {"name": RELAY_SECRET_NAME}} not in (relay.get("envFrom") or []):
        out.append(f"envFrom must include the Secret {RELAY_SECRET_NAME}")

    # the ConfigMap holds only known, non-secret settings
    for key in data:
        if key not in Settings.model_fields:
            out.append(f"ConfigMap key {key} is not a setting of metadata_relay.config.Settings")
        if key in RELAY_SECRET_KEYS:
            out.append(f"ConfigMap key {key} is a secret")
    db = data.get("SQLITE_DB_PATH", "")
    if not db.startswith(DATA_MOUNT + "/"):
        out.append("SQLITE_DB_PATH must be on the /data volume")

    # no Secret objects in what Git holds
    out += [f"Secret {o['metadata']['name']} must not be in the kustomization"
            for o in objs if o.get("kind") == "Secret"]

    # the data volume is the PVC
    data_vol = next((m["name"] for m in relay.get("volumeMounts") or []
                     if m.get("mountPath") == DATA_MOUNT), None)
    claim = ((volumes.get(data_vol or "") or {}).get("persistentVolumeClaim") or {})
    if not claim or _one(objs, "PersistentVolumeClaim", claim.get("claimName", "")) is None:
        out.append("/data must be mounted from the PersistentVolumeClaim of the kustomization")
    return out


def container_violations(pod: Obj) -> list[str]:
    """The per-container rules (pinned image, resources, read-only root, no privilege, no
    capabilities, not root) for every container of ``pod`` (a pod spec)."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    return [v for c in _containers(pod) for v in _container_violations(c, volumes)]


def _container_violations(c: Obj, volumes: dict[str, Obj]) -> list[str]:
    out: list[str] = []
    name = c["name"]
    image = str(c.get("image", ""))
    _, tag, digest = split_image(image)
    if digest is None and (tag is None or tag == "latest"):
        out.append(f"{name}: image {image!r} must be pinned by a tag other than latest")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                out.append(f"{name}: resources.{part}.{r} must be set")
    sc = c.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append(f"{name}: readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{name}: allowPrivilegeEscalation must be false")
    if sc.get("privileged"):
        out.append(f"{name}: must not be privileged")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{name}: capabilities must drop ALL")
    if caps.get("add"):
        out.append(f"{name}: must not add capabilities")
    if sc.get("runAsUser") == 0:
        out.append(f"{name}: must not run as root")
    # with a read-only root, the writable places are volumes: /tmp must be one (emptyDir)
    mounts = {m.get("mountPath"): m["name"] for m in c.get("volumeMounts") or []}
    if name == "metadata-relay" and "emptyDir" not in (volumes.get(mounts.get("/tmp", "")) or {}):
        out.append(f"{name}: /tmp must be an emptyDir (read-only root filesystem)")
    return out
