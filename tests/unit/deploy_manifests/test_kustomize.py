"""The Python kustomize renderer against ``kubectl kustomize``.

``fixtures/kustomize/expected.yaml`` was produced by ``kubectl kustomize`` (kustomize v5.5.0)
from ``fixtures/kustomize/overlay`` (every feature the renderer supports); the renderer must
reproduce it exactly, with or without kubectl on the machine. The tests also re-run kubectl
on the fixture and on the real relay kustomization (plain, with the Redis component, and with
the deploy tool's host/image patches added the way Argo CD adds them); they skip without
kubectl locally and fail under CI=true, where `.ci/kubectl` installs it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay_deploy import kustomize, platform
from tests.tools import require_tool

from .conftest import APP_DIR, DOMAIN

Obj = dict[str, Any]
FIXTURE = Path(__file__).parent / "fixtures" / "kustomize"


def kubectl_kustomize(directory: Path) -> list[Obj]:
    kubectl = require_tool("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_renderer_reproduces_recorded_kubectl_output() -> None:
    expected = [d for d in yaml.safe_load_all((FIXTURE / "expected.yaml").read_text()) if d]
    assert kustomize.render(FIXTURE / "overlay") == expected


def test_recorded_output_is_what_kubectl_prints_now() -> None:
    expected = [d for d in yaml.safe_load_all((FIXTURE / "expected.yaml").read_text()) if d]
    assert kubectl_kustomize(FIXTURE / "overlay") == expected


def test_relay_kustomization_matches_kubectl() -> None:
    assert kustomize.render(APP_DIR) == kubectl_kustomize(APP_DIR)


def _copy_app(tmp_path: Path) -> Path:
    target = tmp_path / "metadata-relay"
    shutil.copytree(APP_DIR, target)
    return target


def test_relay_with_redis_component_matches_kubectl(tmp_path: Path) -> None:
    app = _copy_app(tmp_path)
    k = yaml.safe_load((app / "kustomization.yaml").read_text())
    k["components"] = ["components/redis"]
    (app / "kustomization.yaml").write_text(yaml.safe_dump(k))
    expected = kubectl_kustomize(app)
    assert platform.app_objects(domain="example.com", relay_subdomain="relay",
                                components=("components/redis",)) == expected


def test_site_patches_and_image_match_kubectl(tmp_path: Path) -> None:
    """app_objects(domain, image) == kubectl kustomize with the same patches/images added to
    kustomization.yaml, which is what Argo CD does with spec.source.kustomize."""
    image = "ghcr.io/someone/metadata-relay:1.2.3"
    app = _copy_app(tmp_path)
    k = yaml.safe_load((app / "kustomization.yaml").read_text())
    k["patches"] = [p.as_entry() for p in platform.site_patches(domain=DOMAIN,
                                                                relay_subdomain="r")]
    k["images"] = [{"name": "ghcr.io/getmydia/metadata-relay",
                    "newName": "ghcr.io/someone/metadata-relay", "newTag": "1.2.3"}]
    (app / "kustomization.yaml").write_text(yaml.safe_dump(k))
    expected = kubectl_kustomize(app)
    assert platform.app_objects(domain=DOMAIN, relay_subdomain="r", image=image) == expected


def test_turn_tls_component_and_site_patches_match_kubectl(tmp_path: Path) -> None:
    app = _copy_app(tmp_path)
    k = yaml.safe_load((app / "kustomization.yaml").read_text())
    k["components"] = [platform.TURN_TLS_COMPONENT]
    k["patches"] = [p.as_entry() for p in platform.site_patches(
        domain=DOMAIN, relay_subdomain="r", turn_subdomain="t")]
    (app / "kustomization.yaml").write_text(yaml.safe_dump(k))
    expected = kubectl_kustomize(app)
    assert platform.app_objects(domain=DOMAIN, relay_subdomain="r", turn_subdomain="t") == \
        expected


def test_iroh_relay_with_site_patches_and_a_digest_matches_kubectl(tmp_path: Path) -> None:
    """The iroh relay app as the tool renders it, and with a digest added to its pinned tag
    (kustomize keeps both: name:tag@digest)."""
    digest = "sha256:" + "ab" * 32
    target = tmp_path / "iroh-relay"
    shutil.copytree(platform.iroh_dir(), target)
    k = yaml.safe_load((target / "kustomization.yaml").read_text())
    k["patches"] = [p.as_entry() for p in platform.iroh_site_patches(
        domain=DOMAIN, iroh_subdomain="p2p", relay_subdomain="r")]
    k["images"][0]["digest"] = digest
    (target / "kustomization.yaml").write_text(yaml.safe_dump(k))
    expected = kubectl_kustomize(target)
    rendered = kustomize.render(target)
    assert rendered == expected
    assert f"n0computer/iroh-relay:v0.96.1@{digest}" in yaml.safe_dump(rendered)


# --- renderer behaviour without kubectl ----------------------------------------------------------


def test_json6902_operations() -> None:
    doc = {"a": {"b/c": 1, "list": [1, 2]}, "x": "y"}
    out = kustomize.apply_json6902(doc, [
        {"op": "test", "path": "/a/b~1c", "value": 1},
        {"op": "add", "path": "/a/list/-", "value": 3},
        {"op": "add", "path": "/a/list/0", "value": 0},
        {"op": "replace", "path": "/x", "value": "z"},
        {"op": "copy", "from": "/x", "path": "/copied"},
        {"op": "move", "from": "/copied", "path": "/moved"},
        {"op": "remove", "path": "/a/b~1c"},
    ])
    assert out == {"a": {"list": [0, 1, 2, 3]}, "x": "z", "moved": "z"}
    assert doc == {"a": {"b/c": 1, "list": [1, 2]}, "x": "y"}  # input untouched


@pytest.mark.parametrize("ops", [
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "remove", "path": "/a/9"}],
    [{"op": "add", "path": "a", "value": 1}],
    [{"op": "add", "path": "/a/x/y", "value": 1}],
    [{"op": "test", "path": "/a", "value": "other"}],
    [{"op": "frobnicate", "path": "/a"}],
    [{"op": "add", "path": "/b"}],
    ["not a mapping"],
])
def test_json6902_rejects_bad_operations(ops: list[Any]) -> None:
    with pytest.raises(kustomize.KustomizeError):
        kustomize.apply_json6902({"a": [1]}, ops)


def test_strategic_merge_deletes_with_null_and_rejects_directives() -> None:
    assert kustomize.strategic_merge({"a": 1, "b": 2}, {"b": None}) == {"a": 1}
    with pytest.raises(kustomize.KustomizeError):
        kustomize.strategic_merge({"a": [1]}, {"$patch": "delete"})


def _write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: v\n"


@pytest.mark.parametrize("kustomization", [
    "resources: [cm.yaml]\ncommonLabels: {a: b}\n",  # unsupported field: refused, not ignored
    "resources: [https://github.com/org/repo//dir]\n",
    "resources: [missing.yaml]\n",
    "resources: [cm.yaml, cm.yaml]\n",  # duplicate resource
    "resources: [cm.yaml]\npatches:\n- target: {kind: Secret}\n  patch: '[]'\n",
    "resources: [cm.yaml]\npatches:\n- patch: '[{op: add, path: /x, value: 1}]'\n",
    "resources: [cm.yaml]\nnamespace: ''\n",
    "resources: [cm.yaml]\nimages:\n- name: x\n  newTagg: y\n",
    "resources: [cm.yaml]\ncomponents: [cm.yaml]\n",
    "kind: Component\nresources: [cm.yaml]\n",
])
def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path,
                                                     kustomization: str) -> None:
    _write(tmp_path, {"kustomization.yaml": kustomization, "cm.yaml": CM})
    with pytest.raises(kustomize.KustomizeError):
        kustomize.render(tmp_path)


def test_renderer_refuses_invalid_yaml(tmp_path: Path) -> None:
    _write(tmp_path, {"kustomization.yaml": "resources: [cm.yaml]\n", "cm.yaml": "a: [\n"})
    with pytest.raises(kustomize.KustomizeError):
        kustomize.render(tmp_path)
    _write(tmp_path, {"cm.yaml": "- just\n- a list\n"})
    with pytest.raises(kustomize.KustomizeError):
        kustomize.render(tmp_path)


def test_missing_kustomization(tmp_path: Path) -> None:
    with pytest.raises(kustomize.KustomizeError):
        kustomize.render(tmp_path)


@pytest.mark.parametrize(("image", "parts"), [
    ("redis", ("redis", None, None)),
    ("redis:7", ("redis", "7", None)),
    ("host:5000/a/b", ("host:5000/a/b", None, None)),
    ("host:5000/a/b:1.0@sha256:ab", ("host:5000/a/b", "1.0", "sha256:ab")),
])
def test_split_image(image: str, parts: tuple[str, str | None, str | None]) -> None:
    assert kustomize.split_image(image) == parts
