"""A small, strict kustomize renderer: enough of ``kubectl kustomize`` for our own manifests.

The deploy tool must not need a ``kubectl``/``kustomize`` binary, so this renders
``infra/kubernetes/apps/metadata-relay`` in Python. It implements the subset of the
kustomization format the repository uses and *rejects* everything else (an unknown field, a
remote resource, an unsupported patch operation) instead of silently ignoring it, so the
output is either what ``kubectl kustomize`` prints or an error. A test compares the two
whenever ``kubectl`` is installed.

Supported: ``resources`` (files and directories), ``components`` (``kind: Component``),
``namespace``, ``labels`` (``pairs``, ``includeSelectors``, ``includeTemplates``), ``images``
(``name``, ``newName``, ``newTag``, ``digest``) and ``patches`` (inline ``patch`` or ``path``;
JSON 6902 operation lists or strategic-merge documents; ``target`` by group, version, kind,
name, namespace, labelSelector). Output order is kustomize's default ("legacy") order.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

_ALLOWED_FIELDS = {
    "Kustomization": {
        "apiVersion", "kind", "namespace", "labels", "resources", "components", "images",
        "patches",
    },
    "Component": {"apiVersion", "kind", "labels", "resources", "images", "patches"},
}

# kustomize's legacy sort order (api/resource/resource.go, "orderFirst"/"orderLast").
_ORDER_FIRST = (
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding",
    "ConfigMap", "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass",
    "PersistentVolume", "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob",
    "PodDisruptionBudget",
)
_ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")

# Kinds without a namespace (the ones a manifest of ours could plausibly contain).
CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass", "RuntimeClass",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "APIService",
    "ClusterIssuer", "CSIDriver", "Node",
})


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not support, or is invalid."""


@dataclass(frozen=True)
class Image:
    """One ``images:`` entry: containers whose image is ``name`` (any tag) are rewritten."""

    name: str
    new_name: str | None = None
    new_tag: str | None = None
    digest: str | None = None

    @classmethod
    def from_entry(cls, entry: object) -> Image:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise KustomizeError(f"images: entry needs a string name: {entry!r}")
        unknown = set(entry) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise KustomizeError(f"images: unsupported field(s) {sorted(unknown)}")
        return cls(
            name=entry["name"],
            new_name=_opt_str(entry.get("newName")),
            new_tag=_opt_str(entry.get("newTag")),
            digest=_opt_str(entry.get("digest")),
        )

    def apply(self, image: str) -> str | None:
        """The rewritten image reference, or None when ``image`` is not this entry's."""
        name, tag, digest = split_image(image)
        if name != self.name:
            return None
        new = self.new_name or name
        if self.digest:  # kustomize keeps a newTag given with the digest: name:tag@digest
            return f"{new}:{self.new_tag}@{self.digest}" if self.new_tag else \
                f"{new}@{self.digest}"
        if self.new_tag:
            return f"{new}:{self.new_tag}"
        if digest:
            return f"{new}@{digest}"
        return f"{new}:{tag}" if tag else new


@dataclass(frozen=True)
class Patch:
    """One ``patches:`` entry: a JSON 6902 op list or a strategic-merge document."""

    patch: str
    target: dict[str, str] = field(default_factory=dict)

    def as_entry(self) -> Obj:
        entry: Obj = {"patch": self.patch}
        if self.target:
            entry["target"] = dict(self.target)
        return entry


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise KustomizeError(f"expected a string, got {value!r}")
    return str(value)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry:5000/a/b:tag@sha256:x`` -> (``registry:5000/a/b``, ``tag``, ``sha256:x``)."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        image, tag = image[:colon], image[colon + 1:]
    return image, tag, digest


def load_yaml_documents(path: Path) -> list[Obj]:
    """Every non-empty document in a YAML file; each must be a mapping."""
    try:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise KustomizeError(f"{path}: invalid YAML: {exc}") from None
    out: list[Obj] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise KustomizeError(f"{path}: a document is not a mapping")
        out.append(doc)
    return out


def _find_kustomization(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _load_kustomization(directory: Path, expected_kind: str) -> Obj:
    path = _find_kustomization(directory)
    docs = load_yaml_documents(path)
    if len(docs) != 1:
        raise KustomizeError(f"{path}: expected exactly one document")
    k = docs[0]
    kind = k.get("kind", "Kustomization")
    if kind != expected_kind:
        raise KustomizeError(f"{path}: kind {kind!r}, expected {expected_kind!r}")
    unknown = set(k) - _ALLOWED_FIELDS[expected_kind]
    if unknown:
        raise KustomizeError(f"{path}: unsupported field(s) {sorted(unknown)}")
    return k


def _local_path(base: Path, entry: object, what: str) -> Path:
    if not isinstance(entry, str) or not entry:
        raise KustomizeError(f"{what}: entry must be a relative path, got {entry!r}")
    if "://" in entry or entry.startswith(("github.com/", "git@")):
        raise KustomizeError(f"{what}: remote {entry!r} is not supported")
    path = (base / entry).resolve()
    if not path.exists():
        raise KustomizeError(f"{what}: {entry!r} does not exist in {base}")
    return path


# ---------------------------------------------------------------------------------------------
# JSON 6902 and strategic merge


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, dict):
            if part not in cur:
                raise KustomizeError(f"path {path!r}: {part!r} does not exist")
            cur = cur[part]
        elif isinstance(cur, list):
            cur = cur[_index(cur, part, path, allow_end=False)]
        else:
            raise KustomizeError(f"path {path!r}: cannot descend into a scalar")
    return cur


def _index(seq: list[Any], part: str, path: str, *, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(seq)
    if not part.isdigit():
        raise KustomizeError(f"path {path!r}: {part!r} is not a list index")
    i = int(part)
    if i > len(seq) or (i == len(seq) and not allow_end):
        raise KustomizeError(f"path {path!r}: index {i} out of range")
    return i


def apply_json6902(doc: Obj, ops: Sequence[object]) -> Obj:
    """Apply RFC 6902 operations (add, remove, replace, test, copy, move) to a copy of doc."""
    out = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise KustomizeError(f"JSON patch operation must be a mapping with 'op': {op!r}")
        kind = op["op"]
        path = op.get("path")
        if not isinstance(path, str):
            raise KustomizeError(f"JSON patch {kind}: missing 'path'")
        parts = _pointer(path)
        if kind == "test":
            if _walk(out, parts, path) != op.get("value"):
                raise KustomizeError(f"JSON patch test failed at {path!r}")
            continue
        if kind in ("copy", "move"):
            src = op.get("from")
            if not isinstance(src, str):
                raise KustomizeError(f"JSON patch {kind}: missing 'from'")
            value = copy.deepcopy(_walk(out, _pointer(src), src))
            if kind == "move":
                out = apply_json6902(out, [{"op": "remove", "path": src}])
            out = apply_json6902(out, [{"op": "add", "path": path, "value": value}])
            continue
        if kind not in ("add", "remove", "replace"):
            raise KustomizeError(f"JSON patch operation {kind!r} is not supported")
        if not parts:
            if kind == "remove":
                raise KustomizeError("JSON patch cannot remove the whole document")
            new = op.get("value")
            if not isinstance(new, dict):
                raise KustomizeError("JSON patch replacing the document needs a mapping")
            out = copy.deepcopy(new)
            continue
        parent = _walk(out, parts[:-1], path)
        last = parts[-1]
        if kind != "remove" and "value" not in op:
            raise KustomizeError(f"JSON patch {kind} at {path!r}: missing 'value'")
        value = copy.deepcopy(op.get("value"))
        if isinstance(parent, dict):
            if kind in ("remove", "replace") and last not in parent:
                raise KustomizeError(f"JSON patch {kind} at {path!r}: no such key")
            if kind == "remove":
                del parent[last]
            else:
                parent[last] = value
        elif isinstance(parent, list):
            i = _index(parent, last, path, allow_end=kind == "add")
            if kind == "add":
                parent.insert(i, value)
            elif kind == "replace":
                parent[i] = value
            else:
                del parent[i]
        else:
            raise KustomizeError(f"JSON patch at {path!r}: parent is a scalar")
    return out


def strategic_merge(base: Any, patch: Any) -> Any:
    """A strategic merge of the kind our patches need: maps merge recursively (``null``
    deletes a key), lists of named maps (containers, env, volumes, ports) merge by ``name`` (new
    items first, as kustomize orders them),
    other lists are replaced. ``$patch`` directives are rejected."""
    if isinstance(patch, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in patch):
            raise KustomizeError("strategic-merge directives ($patch, ...) are not supported")
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(patch, list) and isinstance(base, list) and _named(patch) and _named(base):
        # kustomize (kyaml) puts items only the patch has first, then the merged base items.
        by_name = {item["name"]: item for item in patch}
        base_names = {item["name"] for item in base}
        added = [copy.deepcopy(item) for item in patch if item["name"] not in base_names]
        return added + [strategic_merge(item, by_name[item["name"]]) if item["name"] in by_name
                        else copy.deepcopy(item) for item in base]
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("name"), str)
                               for i in items)


# ---------------------------------------------------------------------------------------------
# selection and transformers


def _group_version(obj: Obj) -> tuple[str, str]:
    api = str(obj.get("apiVersion", ""))
    if "/" in api:
        group, version = api.split("/", 1)
        return group, version
    return "", api


def _matches(obj: Obj, target: dict[str, Any]) -> bool:
    unknown = set(target) - {"group", "version", "kind", "name", "namespace", "labelSelector"}
    if unknown:
        raise KustomizeError(f"patch target: unsupported field(s) {sorted(unknown)}")
    group, version = _group_version(obj)
    meta = obj.get("metadata") or {}
    actual = {
        "group": group,
        "version": version,
        "kind": str(obj.get("kind", "")),
        "name": str(meta.get("name", "")),
        "namespace": str(meta.get("namespace", "")),
    }
    for key in ("group", "version", "kind", "name", "namespace"):
        if key in target and not re.fullmatch(str(target[key]), actual[key]):
            return False
    selector = target.get("labelSelector")
    if selector:
        labels = meta.get("labels") or {}
        for term in str(selector).split(","):
            k, sep, v = term.partition("=")
            if not sep or "!" in k:
                raise KustomizeError(f"labelSelector {selector!r}: only k=v terms are supported")
            if labels.get(k.strip()) != v.strip().lstrip("="):
                return False
    return True


def _load_patch(base: Path, entry: object) -> tuple[object, dict[str, Any]]:
    if not isinstance(entry, dict):
        raise KustomizeError(f"patches: entry must be a mapping: {entry!r}")
    unknown = set(entry) - {"patch", "path", "target"}
    if unknown:
        raise KustomizeError(f"patches: unsupported field(s) {sorted(unknown)}")
    if ("patch" in entry) == ("path" in entry):
        raise KustomizeError("patches: an entry needs exactly one of 'patch' or 'path'")
    if "path" in entry:
        text = _local_path(base, entry["path"], "patches").read_text(encoding="utf-8")
    else:
        text = str(entry["patch"])
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KustomizeError(f"patches: invalid YAML: {exc}") from None
    target = entry.get("target") or {}
    if not isinstance(target, dict):
        raise KustomizeError("patches: target must be a mapping")
    return body, target


def _apply_patch(objs: list[Obj], body: object, target: dict[str, Any]) -> list[Obj]:
    if isinstance(body, list):
        if not target:
            raise KustomizeError("patches: a JSON 6902 patch needs a target")
        selected = [o for o in objs if _matches(o, target)]
        if not selected:
            raise KustomizeError(f"patches: target {target!r} matches no resource")
        return [apply_json6902(o, body) if _matches(o, target) else o for o in objs]
    if isinstance(body, dict):
        if not target:
            meta = body.get("metadata") or {}
            target = {"kind": str(body.get("kind", "")), "name": str(meta.get("name", ""))}
            if not target["kind"] or not target["name"]:
                raise KustomizeError("patches: a strategic-merge patch needs kind and name")
            target = {k: re.escape(v) for k, v in target.items()}
        if not any(_matches(o, target) for o in objs):
            raise KustomizeError(f"patches: target {target!r} matches no resource")
        out = []
        for o in objs:
            if _matches(o, target):
                merged = strategic_merge(o, {k: v for k, v in body.items()
                                             if k not in ("apiVersion", "kind")})
                # identity of the target is kept (a patch may not rename it)
                merged["metadata"]["name"] = o["metadata"]["name"]
                out.append(merged)
            else:
                out.append(o)
        return out
    raise KustomizeError("patches: body must be a JSON 6902 list or a mapping")


def _pod_specs(obj: Obj) -> list[Obj]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    if obj.get("kind") == "Pod":
        return [spec]
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        return [template["spec"]]
    return []


def _apply_images(objs: list[Obj], images: Sequence[Image]) -> None:
    for obj in objs:
        for pod in _pod_specs(obj):
            for key in ("initContainers", "containers", "ephemeralContainers"):
                for container in pod.get(key) or []:
                    for image in images:
                        new = image.apply(str(container.get("image", "")))
                        if new is not None:
                            container["image"] = new
                            break


def _apply_labels(objs: list[Obj], entries: Iterable[object]) -> None:
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("pairs"), dict):
            raise KustomizeError(f"labels: entry needs 'pairs': {entry!r}")
        unknown = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
        if unknown:
            raise KustomizeError(f"labels: unsupported field(s) {sorted(unknown)}")
        pairs = {str(k): str(v) for k, v in entry["pairs"].items()}
        selectors = bool(entry.get("includeSelectors", False))
        templates = selectors or bool(entry.get("includeTemplates", False))
        for obj in objs:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            spec = obj.get("spec")
            if not isinstance(spec, dict):
                continue
            if templates and isinstance(spec.get("template"), dict):
                spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if selectors:
                if obj.get("kind") == "Service":
                    spec.setdefault("selector", {}).update(pairs)
                elif isinstance(spec.get("selector"), dict):
                    spec["selector"].setdefault("matchLabels", {}).update(pairs)


def _apply_namespace(objs: list[Obj], namespace: str) -> None:
    for obj in objs:
        kind = obj.get("kind")
        if kind in CLUSTER_SCOPED_KINDS:
            continue
        obj.setdefault("metadata", {})["namespace"] = namespace


def sort_key(obj: Obj) -> tuple[int, str, str, str]:
    """kustomize's legacy order: known kinds first in a fixed order, webhooks last."""
    kind = str(obj.get("kind", ""))
    meta = obj.get("metadata") or {}
    if kind in _ORDER_FIRST:
        rank, gvk = _ORDER_FIRST.index(kind), ""
    elif kind in _ORDER_LAST:
        rank, gvk = len(_ORDER_FIRST) + 1 + _ORDER_LAST.index(kind), ""
    else:
        group, version = _group_version(obj)
        rank, gvk = len(_ORDER_FIRST), f"{group}_{version}_{kind}"
    return rank, gvk, str(meta.get("namespace", "")), str(meta.get("name", ""))


# ---------------------------------------------------------------------------------------------
# build


def _build(directory: Path, kind: str, *, extra_components: Sequence[str] = (),
           extra_patches: Sequence[Patch] = (), extra_images: Sequence[Image] = (),
           into: list[Obj] | None = None) -> list[Obj]:
    k = _load_kustomization(directory, kind)
    objs: list[Obj] = list(into or [])
    for entry in k.get("resources") or []:
        path = _local_path(directory, entry, "resources")
        if path.is_dir():
            objs.extend(_build(path, "Kustomization"))
        else:
            objs.extend(load_yaml_documents(path))
    _check_unique(objs, directory)
    components = list(k.get("components") or []) + list(extra_components)
    for entry in components:
        path = _local_path(directory, entry, "components")
        if not path.is_dir():
            raise KustomizeError(f"components: {entry!r} is not a directory")
        objs = _build(path, "Component", into=objs)
    patches: list[tuple[object, dict[str, Any]]] = [
        _load_patch(directory, e) for e in (k.get("patches") or [])
    ]
    patches += [_load_patch(directory, p.as_entry()) for p in extra_patches]
    for body, target in patches:
        objs = _apply_patch(objs, body, target)
    namespace = k.get("namespace")
    if namespace is not None:
        if not isinstance(namespace, str) or not namespace:
            raise KustomizeError("namespace must be a non-empty string")
        _apply_namespace(objs, namespace)
    _apply_labels(objs, k.get("labels") or [])
    images = [Image.from_entry(e) for e in (k.get("images") or [])]
    # Later settings win, as `kustomize edit set image` replaces an entry of the same name.
    by_name = {i.name: i for i in images}
    for image in extra_images:
        by_name[image.name] = image
    _apply_images(objs, list(by_name.values()))
    _check_unique(objs, directory)
    return objs


def _check_unique(objs: list[Obj], directory: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objs:
        meta = obj.get("metadata") or {}
        key = (str(obj.get("apiVersion")), str(obj.get("kind")),
               str(meta.get("namespace", "")), str(meta.get("name", "")))
        if key in seen:
            raise KustomizeError(f"{directory}: duplicate resource {key}")
        seen.add(key)


def render(directory: Path, *, components: Sequence[str] = (), patches: Sequence[Patch] = (),
           images: Sequence[Image] = ()) -> list[Obj]:
    """Render the kustomization in ``directory`` as ``kubectl kustomize`` would.

    ``components``, ``patches`` and ``images`` are added to the root kustomization's own,
    exactly as Argo CD's ``spec.source.kustomize`` (components/patches/images) does.
    """
    objs = _build(directory.resolve(), "Kustomization", extra_components=components,
                  extra_patches=patches, extra_images=images)
    return sorted(objs, key=sort_key)
