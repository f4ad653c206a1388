"""CRD kinds and chart values against the upstream schemas kept in tests/data/schemas.

CRD schemas are the API server's openAPIV3Schema; they allow unknown fields, so they are
made strict here (``additionalProperties: false`` wherever an object lists its properties
and does not preserve unknown fields), like kubeconform's strict mode: a misspelled field
fails. Values schemas are the charts' own values.schema.json, used as published.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from relay_deploy import platform

from .conftest import APP_DIR, DOMAIN, EMAIL, SCHEMAS_DIR

Obj = dict[str, Any]

CRD_SCHEMAS = {
    ("helm.cattle.io/v1", "HelmChart"): "crds/helm.cattle.io/helmchart_v1.json",
    ("helm.cattle.io/v1", "HelmChartConfig"): "crds/helm.cattle.io/helmchartconfig_v1.json",
    ("cert-manager.io/v1", "ClusterIssuer"): "crds/cert-manager.io/clusterissuer_v1.json",
    ("argoproj.io/v1alpha1", "Application"): "crds/argoproj.io/application_v1alpha1.json",
    ("cert-manager.io/v1", "Certificate"): "crds/cert-manager.io/certificate_v1.json",
    ("traefik.io/v1alpha1", "IngressRouteTCP"): "crds/traefik.io/ingressroutetcp_v1alpha1.json",
    ("traefik.io/v1alpha1", "ServersTransportTCP"):
        "crds/traefik.io/serverstransporttcp_v1alpha1.json",
    ("traefik.io/v1alpha1", "TLSOption"): "crds/traefik.io/tlsoption_v1alpha1.json",
}


def strict(schema: Any, *, top: bool = True) -> Any:
    """A copy of a CRD schema that rejects unknown fields (metadata excepted)."""
    if isinstance(schema, list):
        return [strict(s, top=False) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (v if k in ("enum", "default", "example") else strict(v, top=False))
           for k, v in schema.items()}
    props = out.get("properties")
    if isinstance(props, dict):
        if "metadata" in props and top:
            props["metadata"] = {"type": "object"}
        if (not schema.get("x-kubernetes-preserve-unknown-fields")
                and "additionalProperties" not in schema):
            out["additionalProperties"] = False
    return out


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    raw = json.loads((SCHEMAS_DIR / CRD_SCHEMAS[(api_version, kind)]).read_text())
    schema = strict(copy.deepcopy(raw))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate_crd(obj: Obj) -> None:
    errors = sorted(crd_validator(obj["apiVersion"], obj["kind"]).iter_errors(obj),
                    key=lambda e: list(e.path))
    if errors:
        raise AssertionError("; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5]))


def crd_objects() -> list[Obj]:
    objs = [o for o in platform.platform_objects(domain=DOMAIN, acme_email=EMAIL)
            if (o["apiVersion"], o["kind"]) in CRD_SCHEMAS]
    objs += platform.cluster_issuers(acme_email=EMAIL)
    objs.append(platform.argocd_application(repo_url="https://github.com/getmydia/metadata-relay.git",
                                            domain=DOMAIN,
                                            image="ghcr.io/getmydia/metadata-relay:0.2.0",
                                            components=("components/redis",)))
    objs.append(yaml.safe_load((APP_DIR / "application.yaml").read_text()))
    # TURN over TLS (a component of the relay) and the iroh relay (an app of its own)
    objs += [o for o in platform.app_objects(domain=DOMAIN, turn_subdomain="turn")
             if (o["apiVersion"], o["kind"]) in CRD_SCHEMAS]
    objs += [o for o in platform.iroh_relay_objects(domain=DOMAIN)
             if (o["apiVersion"], o["kind"]) in CRD_SCHEMAS]
    objs.append(platform.iroh_relay_application(
        repo_url="https://github.com/getmydia/metadata-relay.git", domain=DOMAIN))
    objs.append(yaml.safe_load((platform.iroh_dir() / "application.yaml").read_text()))
    objs.append(platform.argocd_application(
        repo_url="https://github.com/getmydia/metadata-relay.git", domain=DOMAIN,
        turn_subdomain="turn"))
    return objs


def _id(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"


@pytest.mark.parametrize("obj", crd_objects(), ids=_id)
def test_crd_kind_validates(schemas_dir: Path, obj: Obj) -> None:
    validate_crd(obj)


def test_every_crd_kind_is_covered() -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in crd_objects()}
    assert kinds == set(CRD_SCHEMAS)


def _helmchart() -> Obj:
    return next(o for o in platform.platform_objects(domain=DOMAIN, acme_email=EMAIL)
                if o["kind"] == "HelmChart")


@pytest.mark.parametrize(("path", "value"), [
    (("spec", "failurePolicy"), "explode"),
    (("spec", "createNamespace"), "yes"),
    (("spec", "valuesContnet"), "x: 1"),
    (("spec", "timeout"), 600),
])
def test_crd_schema_rejects_broken_helmchart(schemas_dir: Path, path: tuple[str, ...],
                                             value: object) -> None:
    obj = _helmchart()
    obj[path[0]][path[1]] = value
    with pytest.raises(AssertionError):
        validate_crd(obj)


def test_crd_schema_rejects_broken_issuer_and_application(schemas_dir: Path) -> None:
    issuer = platform.cluster_issuers(acme_email=EMAIL)[0]
    issuer["spec"]["acme"]["solvers"][0]["http01"]["ingress"]["ingressClasName"] = "traefik"
    with pytest.raises(AssertionError):
        validate_crd(issuer)
    app = platform.argocd_application(repo_url="https://example.com/r.git", domain=DOMAIN)
    del app["spec"]["destination"]
    app["spec"]["source"].pop("repoURL")
    with pytest.raises(AssertionError):
        validate_crd(app)


def _turn_route(kind: str) -> Obj:
    return next(o for o in platform.app_objects(domain=DOMAIN, turn_subdomain="turn")
                if o["kind"] == kind)


@pytest.mark.parametrize(("kind", "path", "value"), [
    ("IngressRouteTCP", ("spec", "routes", 0, "services", 0, "port"), [3478]),
    ("IngressRouteTCP", ("spec", "tls", "passthru"), True),
    ("IngressRouteTCP", ("spec", "routes", 0, "math"), "HostSNI(`x`)"),
    ("ServersTransportTCP", ("spec", "proxyProtocol", "version"), "2"),
    ("TLSOption", ("spec", "alpnProtocols"), "stun.turn"),
    ("Certificate", ("spec", "dnsNames"), "turn.example.com"),
])
def test_crd_schema_rejects_broken_tls_routes(schemas_dir: Path, kind: str,
                                              path: tuple[str | int, ...], value: object
                                              ) -> None:
    obj = _turn_route(kind)
    validate_crd(obj)
    node: Any = obj
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(AssertionError):
        validate_crd(obj)


# --- chart values ------------------------------------------------------------------------------


def rendered_values() -> dict[str, Obj]:
    pins = platform.load_chart_pins()
    subs = {"DOMAIN": DOMAIN, "RELAY_HOST": f"relay.{DOMAIN}",
            "ARGOCD_HOST": f"argocd.{DOMAIN}", "ACME_EMAIL": EMAIL}
    return {name: platform.render_values(pin, subs) for name, pin in pins.items()}


def values_validator(schema_path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("name", [n for n, p in platform.load_chart_pins().items()
                                  if p.values_schema])
def test_chart_values_validate(schemas_dir: Path, name: str) -> None:
    pin = platform.load_chart_pins()[name]
    validator = values_validator(schemas_dir / pin.values_schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(
        rendered_values()[name])]
    assert errors == []


@pytest.mark.parametrize(("name", "broken"), [
    ("external-dns", {"policy": "delete-everything"}),
    ("external-dns", {"sources": "ingress"}),
    ("cert-manager", {"crds": {"enabled": "yes"}}),
    ("traefik", {"ports": {"web": {"http": {"redirections": {"entryPoint": "websecure"}}}}}),
    ("traefik", {"ports": {"web": {"redirectTo": {"port": "websecure"}}}}),
])
def test_values_schema_rejects_broken_values(schemas_dir: Path, name: str, broken: Obj) -> None:
    pin = platform.load_chart_pins()[name]
    values = rendered_values()[name] | broken
    assert list(values_validator(schemas_dir / pin.values_schema).iter_errors(values))


def test_every_schema_file_named_in_the_pins_exists(schemas_dir: Path) -> None:
    for pin in platform.load_chart_pins().values():
        if pin.values_schema:
            assert (schemas_dir / pin.values_schema).is_file(), pin.values_schema


def test_pins_match_versions_md(schemas_dir: Path) -> None:
    """Every pinned version is one VERSIONS.md gives evidence for (and the schema's version)."""
    versions_md = (schemas_dir / "VERSIONS.md").read_text()
    pins = platform.load_chart_pins()
    for pin in pins.values():
        upstream = pin.version.split("+up")[-1] if pin.bundled else pin.version
        assert upstream.lstrip("v") in versions_md, pin.name
        if pin.values_schema:
            assert upstream.lstrip("v") in pin.values_schema, (pin.name, pin.values_schema)
    assert platform.load_k3s_pin().version in versions_md


def test_schema_copy_matches_sources(schemas_dir: Path) -> None:
    """Every schema SOURCES.md lists is in the repository copy, with the size it records."""
    sources = (schemas_dir / "SOURCES.md").read_text()
    rows = re.findall(r"^\| `([^`]+\.json)` \| (\d+) \|", sources, flags=re.M)
    assert len(rows) >= 10
    for name, size in rows:
        assert (schemas_dir / name).stat().st_size == int(size), name
