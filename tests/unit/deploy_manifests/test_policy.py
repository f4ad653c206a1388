"""Policy checks on the rendered relay kustomization (hostNetwork, Recreate, security, ...)."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from metadata_relay.config import Settings, load_settings
from relay_deploy import platform
from relay_deploy.kustomize import split_image

from .conftest import APP_DIR, DOMAIN, REPO_ROOT, find
from .policy import violations

Obj = dict[str, Any]


def test_rendered_app_is_compliant(app: list[Obj]) -> None:
    assert violations(app) == []


def test_rendered_app_with_redis_component_is_compliant(app_with_redis: list[Obj]) -> None:
    assert violations(app_with_redis) == []
    redis = find(app_with_redis, "Deployment", "redis")
    assert redis["metadata"]["namespace"] == "metadata-relay"
    cm = find(app_with_redis, "ConfigMap", "metadata-relay-config")
    url = cm["data"]["REDIS_URL"]
    assert url.startswith("redis://redis.metadata-relay.svc.cluster.local:6379")
    # the service parses it (a wrong scheme or port would fail here)
    assert load_settings({"REDIS_URL": url}).REDIS_URL == url
    svc = find(app_with_redis, "Service", "redis")
    assert svc["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]


def test_redis_component_is_not_applied_by_default(app: list[Obj]) -> None:
    assert not [o for o in app if o["metadata"]["name"] == "redis"]
    cm = find(app, "ConfigMap", "metadata-relay-config")
    assert "REDIS_URL" not in cm["data"]


def _dep(objs: list[Obj]) -> Obj:
    return find(objs, "Deployment", "metadata-relay")


def _pod(objs: list[Obj]) -> Obj:
    return _dep(objs)["spec"]["template"]["spec"]


def _relay(objs: list[Obj]) -> Obj:
    return _pod(objs)["containers"][0]


def _cm(objs: list[Obj]) -> dict[str, str]:
    return find(objs, "ConfigMap", "metadata-relay-config")["data"]


MUTATIONS: dict[str, Callable[[list[Obj]], None]] = {
    "no hostNetwork": lambda o: _pod(o).update(hostNetwork=False),
    "dnsPolicy ClusterFirst": lambda o: _pod(o).update(dnsPolicy="ClusterFirst"),
    "RollingUpdate": lambda o: _dep(o)["spec"].update(strategy={"type": "RollingUpdate"}),
    "two replicas": lambda o: _dep(o)["spec"].update(replicas=2),
    "root": lambda o: _pod(o)["securityContext"].update(runAsUser=0),
    "runAsNonRoot off": lambda o: _pod(o)["securityContext"].pop("runAsNonRoot"),
    "writable root": lambda o: _relay(o)["securityContext"].update(readOnlyRootFilesystem=False),
    "escalation": lambda o: _relay(o)["securityContext"].update(allowPrivilegeEscalation=True),
    "caps kept": lambda o: _relay(o)["securityContext"].update(capabilities={}),
    "caps added": lambda o: _relay(o)["securityContext"]["capabilities"].update(
        add=["NET_ADMIN"]),
    "privileged": lambda o: _relay(o)["securityContext"].update(privileged=True),
    "no limits": lambda o: _relay(o)["resources"].pop("limits"),
    "no memory request": lambda o: _relay(o)["resources"]["requests"].pop("memory"),
    "latest image": lambda o: _relay(o).update(image="ghcr.io/getmydia/metadata-relay:latest"),
    "untagged image": lambda o: _relay(o).update(image="ghcr.io/getmydia/metadata-relay"),
    "liveness elsewhere": lambda o: _relay(o)["livenessProbe"]["httpGet"].update(path="/"),
    "no readiness": lambda o: _relay(o).pop("readinessProbe"),
    "public ip literal": lambda o: _relay(o).update(
        env=[{"name": "TURN_PUBLIC_IP", "value": "203.0.113.1"}]),
    "secret literal": lambda o: _relay(o)["env"].append(
        {"name": "TURN_SECRET", "value": "hunter2"}),
    "foreign secret": lambda o: _relay(o)["envFrom"].append({"secretRef": {"name": "other"}}),
    "secret from configmap": lambda o: _relay(o)["env"].append(
        {"name": "TMDB_API_KEY",
         "valueFrom": {"configMapKeyRef": {"name": "metadata-relay-config", "key": "x"}}}),
    "unknown env": lambda o: _relay(o)["env"].append({"name": "MIX_ENV", "value": "prod"}),
    "unknown configmap key": lambda o: _cm(o).update(PHX_HOST="relay.mydia.dev"),
    "secret in configmap": lambda o: _cm(o).update(TURN_SECRET="x"),
    "db off the volume": lambda o: _cm(o).update(SQLITE_DB_PATH="/app/relay.db"),
    "port mismatch": lambda o: _cm(o).update(PORT="4000"),
    "turn port mismatch": lambda o: _cm(o).update(TURN_PORT="3479"),
    "no udp port": lambda o: _relay(o).update(ports=[p for p in _relay(o)["ports"]
                                                     if p["protocol"] != "UDP"]),
    "tmp not emptyDir": lambda o: _pod(o).update(
        volumes=[v for v in _pod(o)["volumes"] if v["name"] != "tmp"]),
    "data not the pvc": lambda o: _pod(o)["volumes"][0].update(
        persistentVolumeClaim={"claimName": "other"}),
    "secret object": lambda o: o.append(platform.relay_secret({"TURN_SECRET": "x"})),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_policy_catches_violation(app: list[Obj], mutation: str) -> None:
    broken = copy.deepcopy(app)
    MUTATIONS[mutation](broken)
    assert violations(broken), f"policy missed: {mutation}"


def test_configmap_settings_load_in_the_service(app: list[Obj]) -> None:
    """The ConfigMap plus the Secret's keys is a configuration the service accepts."""
    env = dict(_cm(app))
    env["TURN_PUBLIC_IP"] = "203.0.113.7"  # what status.hostIP provides
    env |= {k: "x" * 32 for k in platform.RELAY_SECRET_KEYS}
    settings = load_settings(env)
    assert settings.PORT == 4001
    assert settings.TURN_PORT == 3478
    assert (settings.TURN_MIN_PORT, settings.TURN_MAX_PORT) == (49152, 49252)
    assert str(settings.SQLITE_DB_PATH) == "/data/metadata_relay.db"
    assert settings.TURN_REALM == f"relay.{DOMAIN}"


def test_secret_example_keys_are_settings() -> None:
    example = yaml.safe_load((APP_DIR / "secret.yaml.example").read_text())
    assert example["metadata"]["name"] == platform.RELAY_SECRET_NAME
    keys = set(example["stringData"])
    assert keys <= platform.RELAY_SECRET_KEYS
    assert {"RELAY_TOKEN_SECRET", "TURN_SECRET", "TMDB_API_KEY", "TVDB_API_KEY"} <= keys
    assert platform.RELAY_SECRET_KEYS <= set(Settings.model_fields)


def test_image_pinned_to_project_version(app: list[Obj]) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    name, tag, digest = split_image(_relay(app)["image"])
    assert name.startswith("ghcr.io/") and name.endswith("/metadata-relay")
    assert (tag, digest) == (version, None)


def test_service_ingress_and_pvc_wiring(app: list[Obj]) -> None:
    dep = _dep(app)
    svc = find(app, "Service", "metadata-relay")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    port_names = {p["name"] for p in _relay(app)["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    ing = find(app, "Ingress", "metadata-relay")
    assert ing["apiVersion"] == "networking.k8s.io/v1"
    assert ing["spec"]["ingressClassName"] == "traefik"
    host = f"relay.{DOMAIN}"
    assert [r["host"] for r in ing["spec"]["rules"]] == [host]
    assert ing["spec"]["tls"][0]["hosts"] == [host]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "metadata-relay"
    assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}
    issuer = ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    issuers = {i["metadata"]["name"] for i in platform.cluster_issuers(acme_email="a@b.cd")}
    assert issuer in issuers
    pvc = find(app, "PersistentVolumeClaim", "metadata-relay-data")
    assert pvc["spec"]["storageClassName"] == "local-path"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_everything_in_the_relay_namespace(app_with_redis: list[Obj]) -> None:
    for obj in app_with_redis:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == "metadata-relay"
        else:
            assert obj["metadata"]["namespace"] == "metadata-relay", obj["kind"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mydia"
