"""Which digest the iroh relay is deployed with: trust on first use, as the SSH host key.

The first source that applies wins:

1. ``iroh_relay_digest`` in config.yaml: the operator's own pin. The registry is not asked.
2. ``digest:`` of the image in the iroh relay's kustomization: a pin reviewed in Git. Not
   asked either.
3. ``iroh_relay_pinned_image`` in config.yaml (``name:tag@digest``): what the registry said
   on first use. Every run asks again. The same answer: nothing to do. Another one: the tag
   moved, and the run stops until the operator confirms the new digest
   (``--accept-iroh-relay-digest``) or pins one by hand; the recorded pin is never replaced
   silently. No answer: the recorded pin is deployed unchecked (it is what runs already).
4. Nothing yet: ask the registry and record its answer (a dry run only shows it). No answer
   stops the run, naming the fix (the digest by hand): never a deployment by tag alone.

Pure: the registry lookup comes in as a function; :mod:`relay_deploy.phases` reports the
result and saves the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relay_deploy.kustomize import split_image
from relay_deploy.registry import RegistryError, Resolved

RECORD_KEY = "iroh_relay_pinned_image"
OPERATOR_KEY = "iroh_relay_digest"
ACCEPT_FLAG = "--accept-iroh-relay-digest"
RELEASES = "https://github.com/n0-computer/iroh/releases"


class PinStop(Exception):
    """The iroh relay cannot be deployed pinned; the message says why and what to do."""


@dataclass(frozen=True)
class Pin:
    digest: str
    reference: str  # name:tag@digest, as the Deployment runs it
    action: str  # "found" (nothing to record), "pin" (first use), "update" (confirmed)
    why: str  # the report's reason
    record: str | None = None  # the new iroh_relay_pinned_image, when one is to be saved


@dataclass(frozen=True)
class Sources:
    """What decides the pin (see the module docstring)."""

    name: str  # n0computer/iroh-relay
    tag: str  # v0.96.1
    operator: str  # iroh_relay_digest ("" when unset)
    kustomization: str | None  # the kustomization's digest, or None
    kustomization_file: str  # where that digest would be, for messages
    recorded: str  # iroh_relay_pinned_image ("" when unset)
    accept: str  # --accept-iroh-relay-digest ("" when not given)
    config_file: str  # config.yaml's name, for messages
    registry: str  # the registry as the operator knows it: "Docker Hub"


def decide(src: Sources, lookup: Callable[[], Resolved]) -> Pin:
    """The pin to deploy (see the module docstring); raises PinStop."""
    image = f"{src.name}:{src.tag}"

    def pinned(digest: str) -> str:
        return f"{image}@{digest}"

    fixed = ((src.operator, f"{OPERATOR_KEY} in {src.config_file}"),
             (src.kustomization, src.kustomization_file))
    for digest, where in fixed:
        if not digest:
            continue
        if src.accept:
            raise PinStop(f"{ACCEPT_FLAG} has no effect: {where} pins the iroh relay to "
                          f"{digest}; change that instead")
        return Pin(digest, pinned(digest), "found",
                   f"{digest} from {where}; {src.registry} not asked")
    old, stale = _recorded(src.recorded, image)
    try:
        now = lookup()
    except RegistryError as exc:
        if src.accept:
            raise PinStop(f"cannot confirm {src.accept} for {image}: {exc}; nothing "
                          f"recorded") from None
        if old:
            return Pin(old, pinned(old), "found",
                       f"{old}, pinned on first use; NOT re-checked: {exc}")
        raise PinStop(_no_answer(src, image, exc)) from None
    kind = "multi-platform index" if now.multi_platform else f"single manifest, {now.media_type}"
    if src.accept:
        if src.accept != now.digest:
            raise PinStop(f"{ACCEPT_FLAG} {src.accept}: {src.registry} serves {now.digest} "
                          f"for {image}, not that; nothing recorded")
        if old == now.digest:
            return Pin(old, pinned(old), "found",
                       f"{old}, already pinned; {src.registry} serves it")
        was = f" (was {old})" if old else ""
        return Pin(now.digest, pinned(now.digest), "update",
                   f"confirmed with {ACCEPT_FLAG}: {src.registry} serves {now.digest}{was} "
                   f"({kind}); recorded as {RECORD_KEY} in {src.config_file}",
                   record=pinned(now.digest))
    if old is None:
        moved_on = f"; the kustomization now pins {image}, the old pin was {stale}" \
            if stale else ""
        return Pin(now.digest, pinned(now.digest), "pin",
                   f"first use: {src.registry} serves {now.digest} ({kind}); recorded as "
                   f"{RECORD_KEY} in {src.config_file}{moved_on}",
                   record=pinned(now.digest))
    if old == now.digest:
        return Pin(old, pinned(old), "found",
                   f"{old}, pinned on first use; {src.registry} still serves it")
    raise PinStop(
        f"{image} has moved: {src.registry} now serves {now.digest}, but this deployment "
        f"pinned {old} on first use ({RECORD_KEY} in {src.config_file}). The iroh relay was "
        f"left as it is. A release tag should not move: check it against n0's release "
        f"({RELEASES}) before trusting it, then confirm the new digest with "
        f"`./infra/deploy {ACCEPT_FLAG} {now.digest}`, or set the digest you want as "
        f"{OPERATOR_KEY} in {src.config_file}")


def _recorded(value: str, image: str) -> tuple[str | None, str]:
    """(the recorded digest of ``image``, or None; the record when it names another image)."""
    if not value:
        return None, ""
    name, tag, digest = split_image(value)
    if f"{name}:{tag}" != image or digest is None:
        return None, value
    return digest, ""


def _no_answer(src: Sources, image: str, exc: RegistryError) -> str:
    why = {
        "not-found": f"; check the tag in {src.kustomization_file}",
        "rate-limited": f"; {src.registry} limits anonymous requests per address: wait, then "
                        f"run again",
        "unreachable": "; run again when it answers (a proxy is taken from HTTPS_PROXY)",
    }.get(exc.kind, "")
    return (f"could not read the digest of {image} from {src.registry}: {exc}{why}. The iroh "
            f"relay is only deployed pinned by digest. Or look the digest up elsewhere "
            f"(`docker buildx imagetools inspect {image}`: the Digest: of the index) and set "
            f"it by hand: {OPERATOR_KEY}: \"sha256:...\" in {src.config_file}")
