"""The operator's kubeconfig: rewrite k3s's file to the ``metadata-relay`` context and merge
it into ``$KUBECONFIG`` (else ``~/.kube/config``) without touching other contexts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from relay_deploy.files import write_private

CONTEXT = "metadata-relay"


def kubeconfig_path() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    first = env.split(os.pathsep)[0] if env else ""
    return Path(first).expanduser() if first else Path("~/.kube/config").expanduser()


def rewrite_k3s(text: str, vps_ip: str) -> dict[str, Any]:
    """k3s's kubeconfig with the server pointing at the VPS and every name ``metadata-relay``."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not doc.get("clusters") or not doc.get("users"):
        raise ValueError("the VPS's /etc/rancher/k3s/k3s.yaml is not a kubeconfig")
    cluster = dict(doc["clusters"][0]["cluster"])
    server = str(cluster.get("server", ""))
    host = f"[{vps_ip}]" if ":" in vps_ip else vps_ip
    cluster["server"] = re.sub(r"^(https?://)(\[[^\]]*\]|[^:/]+)", rf"\g<1>{host}", server)
    user = doc["users"][0]["user"]
    return {
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": CONTEXT, "user": user}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
    }


def merged(existing: dict[str, Any] | None, ours: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = dict(existing or {})
    doc.setdefault("apiVersion", "v1")
    doc.setdefault("kind", "Config")
    doc.setdefault("preferences", {})
    for key in ("clusters", "users", "contexts"):
        entries = [e for e in (doc.get(key) or []) if e.get("name") != CONTEXT]
        doc[key] = [*entries, *ours[key]]
    if not doc.get("current-context"):
        doc["current-context"] = CONTEXT
    return doc


def read_existing(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    doc = yaml.safe_load(path.read_text())
    if doc is not None and not isinstance(doc, dict):
        raise ValueError(f"{path} is not a kubeconfig")
    return doc


def has_context(path: Path) -> bool:
    try:
        doc = read_existing(path)
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return doc is not None and any(c.get("name") == CONTEXT for c in doc.get("contexts") or [])


def write(path: Path, doc: dict[str, Any]) -> None:
    """Replace the kubeconfig (0600, through a fresh O_EXCL temporary file)."""
    write_private(path, yaml.safe_dump(doc, sort_keys=False))
