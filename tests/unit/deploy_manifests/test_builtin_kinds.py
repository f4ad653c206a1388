"""Every built-in kind we produce validates with kubernetes-validate --strict at the k3s pin.

k3s v1.36.4+k3s1 is Kubernetes 1.36; kubernetes-validate ships 1.36.0 schemas, the closest
(same minor) to the pinned patch release. Strict mode rejects unknown fields.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from relay_deploy import platform

from .conftest import APP_DIR, DOMAIN, EMAIL

Obj = dict[str, Any]
BUILTIN_GROUPS = {"v1", "apps/v1", "networking.k8s.io/v1", "batch/v1", "policy/v1"}


def validation_version() -> str:
    """The kubernetes-validate schema version for the pinned k3s minor (closest available)."""
    minor = platform.load_k3s_pin().kubernetes
    available = sorted(set(kv_utils.all_versions()),
                       key=lambda v: tuple(int(p) for p in v.split(".")))
    same = [v for v in available if kv_utils.major_minor(v) == minor]
    if same:
        return same[-1]
    lower = [v for v in available
             if tuple(map(int, v.split(".")[:2])) < tuple(map(int, minor.split(".")))]
    assert lower, f"kubernetes-validate ships no schema at or below Kubernetes {minor}"
    return lower[-1]


def test_validation_version_matches_the_k3s_pin() -> None:
    pin = platform.load_k3s_pin()
    assert pin.version.startswith(f"v{pin.kubernetes}.")
    assert kv_utils.major_minor(validation_version()) == pin.kubernetes


def builtin_objects() -> list[Obj]:
    objs: list[Obj] = []
    objs += platform.app_objects(domain=DOMAIN, components=("components/redis",),
                                 turn_subdomain="turn")
    objs += platform.iroh_relay_objects(domain=DOMAIN)
    objs += [o for o in platform.platform_objects(domain=DOMAIN, acme_email=EMAIL)
             if o["apiVersion"] in BUILTIN_GROUPS]
    objs.append(platform.relay_secret({k: "x" for k in platform.RELAY_SECRET_KEYS}))
    objs.append(platform.cloudflare_secret("token-value"))
    objs.append(yaml.safe_load((APP_DIR / "secret.yaml.example").read_text()))
    return objs


def _id(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


@pytest.mark.parametrize("obj", [o for o in builtin_objects()
                                 if o["apiVersion"] in BUILTIN_GROUPS], ids=_id)
def test_builtin_kind_validates_strictly(obj: Obj) -> None:
    kubernetes_validate.validate(obj, validation_version(), strict=True)


def test_strict_validation_rejects_unknown_fields() -> None:
    dep = next(o for o in platform.app_objects(domain=DOMAIN) if o["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, validation_version(), strict=True)


def test_validation_rejects_wrong_types() -> None:
    dep = next(o for o in platform.app_objects(domain=DOMAIN) if o["kind"] == "Deployment")
    dep["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, validation_version(), strict=True)


def test_cli_validates_rendered_files(tmp_path: Path) -> None:
    """The same check through the kubernetes-validate command, as an operator would run it."""
    rendered = tmp_path / "relay.yaml"
    rendered.write_text(yaml.safe_dump_all([o for o in builtin_objects()
                                            if o["apiVersion"] in BUILTIN_GROUPS],
                                           sort_keys=False))
    cli = Path(sys.executable).with_name("kubernetes-validate")
    ok = subprocess.run([str(cli), "--strict", "--quiet", "-k", validation_version(),
                         str(rendered)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service",
                                   "metadata": {"name": "x"}, "spec": {"portz": []}}))
    fail = subprocess.run([str(cli), "--strict", "--quiet", "-k", validation_version(),
                           str(bad)], capture_output=True, text=True, timeout=120)
    assert fail.returncode != 0
