"""The change check behind idempotency, and the kubeconfig merge."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from relay_deploy import kubeconfig as kcfg
from relay_deploy.kube import is_subset, normalize

K3S = """apiVersion: v1
clusters:
- cluster: {certificate-authority-data: Q0E=, server: 'https://127.0.0.1:6443'}
  name: default
contexts:
- context: {cluster: default, user: default}
  name: default
current-context: default
kind: Config
users:
- name: default
  user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}
"""


def test_subset_check() -> None:
    live = {"a": 1, "b": {"c": [1, {"d": "x", "e": 2}]}, "status": {"ok": True}}
    assert is_subset({"a": 1, "b": {"c": [1, {"d": "x"}]}}, live)
    assert not is_subset({"a": 2}, live)
    assert not is_subset({"b": {"c": [1]}}, live)  # a list item removed is a change
    assert not is_subset({"z": None}, live)
    assert not is_subset({"b": "scalar"}, live)


def test_secret_string_data_becomes_data() -> None:
    obj = {"kind": "Secret", "stringData": {"K": "v"}, "data": {"O": "eA=="}}
    out = normalize(obj)
    assert "stringData" not in out and out["data"]["K"] == base64.b64encode(b"v").decode()
    assert obj["stringData"] == {"K": "v"}  # input untouched
    assert normalize({"kind": "ConfigMap", "data": {"a": "b"}}) == {"kind": "ConfigMap",
                                                                   "data": {"a": "b"}}


def test_rewrite_points_at_the_vps_and_renames() -> None:
    ours = kcfg.rewrite_k3s(K3S, "203.0.113.5")
    assert ours["clusters"][0]["cluster"]["server"] == "https://203.0.113.5:6443"
    assert ours["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="
    assert {e["name"] for k in ("clusters", "users", "contexts") for e in ours[k]} == {
        "metadata-relay"}
    v6 = kcfg.rewrite_k3s(K3S, "2001:db8::5")
    assert v6["clusters"][0]["cluster"]["server"] == "https://[2001:db8::5]:6443"


def test_merge_keeps_other_contexts(tmp_path: Path) -> None:
    existing = {"apiVersion": "v1", "kind": "Config", "current-context": "work",
                "clusters": [{"name": "work", "cluster": {"server": "https://w"}},
                             {"name": "metadata-relay", "cluster": {"server": "https://old"}}],
                "users": [{"name": "work", "user": {"token": "t"}}],
                "contexts": [{"name": "work", "context": {"cluster": "work", "user": "work"}}]}
    merged = kcfg.merged(existing, kcfg.rewrite_k3s(K3S, "203.0.113.5"))
    assert merged["current-context"] == "work"
    assert [c["name"] for c in merged["clusters"]] == ["work", "metadata-relay"]
    assert merged["clusters"][1]["cluster"]["server"] == "https://203.0.113.5:6443"
    assert [c["name"] for c in merged["contexts"]] == ["work", "metadata-relay"]
    path = tmp_path / "kube" / "config"
    kcfg.write(path, merged)
    assert yaml.safe_load(path.read_text()) == merged
    assert (path.stat().st_mode & 0o777) == 0o600
    assert kcfg.has_context(path)
    assert kcfg.merged(merged, kcfg.rewrite_k3s(K3S, "203.0.113.5")) == merged
    fresh = kcfg.merged(None, kcfg.rewrite_k3s(K3S, "203.0.113.5"))
    assert fresh["current-context"] == "metadata-relay"


def test_stale_world_readable_temp_file_never_leaves_the_kubeconfig_readable(
        tmp_path: Path) -> None:
    path = tmp_path / "kube" / "config"
    path.parent.mkdir()
    stale = path.with_name("config.relay-deploy.tmp")  # the old fixed temp name
    stale.write_text("stale")
    stale.chmod(0o666)
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (path.parent / ".config.tmp").symlink_to(victim)
    kcfg.write(path, kcfg.merged(None, kcfg.rewrite_k3s(K3S, "203.0.113.5")))
    assert (path.stat().st_mode & 0o777) == 0o600
    assert victim.read_text() == "untouched" and stale.read_text() == "stale"
