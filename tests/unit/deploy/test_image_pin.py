"""Which digest the iroh relay is deployed with: the operator's, the kustomization's, the one
recorded on first use, or the registry's answer recorded now; a moved tag stops the run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from relay_deploy import image_pin
from relay_deploy.image_pin import PinStop, Sources
from relay_deploy.registry import DOCKER_LIST, RegistryError, Resolved

IMAGE = "n0computer/iroh-relay:v0.96.1"
OLD, NEW, MINE = ("sha256:" + c * 64 for c in "abc")
BASE = Sources(name="n0computer/iroh-relay", tag="v0.96.1", operator="", kustomization=None,
               kustomization_file="infra/kubernetes/apps/iroh-relay/kustomization.yaml",
               recorded="", accept="", config_file="config.yaml", registry="Docker Hub")


def lookup(digest: str, asked: list[int] | None = None) -> Callable[[], Resolved]:
    """A registry serving ``digest``; each question appends to ``asked``."""
    def ask() -> Resolved:
        if asked is not None:
            asked.append(1)
        return Resolved(digest, DOCKER_LIST)

    return ask


def failing(kind: str, message: str = "registry-1.docker.io unreachable (refused)"
            ) -> Callable[[], Resolved]:
    def ask() -> Resolved:
        raise RegistryError(kind, message)

    return ask


def src(**changes: object) -> Sources:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


def test_first_use_records_what_the_registry_serves() -> None:
    pin = image_pin.decide(BASE, lookup(NEW))
    assert (pin.digest, pin.action, pin.record) == (NEW, "pin", f"{IMAGE}@{NEW}")
    assert pin.reference == f"{IMAGE}@{NEW}"
    assert "first use: Docker Hub serves" in pin.why and "multi-platform index" in pin.why
    assert "iroh_relay_pinned_image in config.yaml" in pin.why


def test_later_runs_keep_the_recorded_pin_while_the_tag_stays() -> None:
    pin = image_pin.decide(src(recorded=f"{IMAGE}@{OLD}"), lookup(OLD))
    assert (pin.digest, pin.action, pin.record) == (OLD, "found", None)
    assert "still serves it" in pin.why


def test_a_moved_tag_stops_with_both_digests_and_the_way_on() -> None:
    with pytest.raises(PinStop) as info:
        image_pin.decide(src(recorded=f"{IMAGE}@{OLD}"), lookup(NEW))
    text = str(info.value)
    assert f"{IMAGE} has moved: Docker Hub now serves {NEW}" in text
    assert f"pinned {OLD} on first use" in text
    assert f"./infra/deploy --accept-iroh-relay-digest {NEW}" in text
    assert "iroh_relay_digest in config.yaml" in text and "left as it is" in text


def test_the_new_digest_is_recorded_only_when_confirmed_exactly() -> None:
    moved = src(recorded=f"{IMAGE}@{OLD}", accept=NEW)
    pin = image_pin.decide(moved, lookup(NEW))
    assert (pin.digest, pin.action, pin.record) == (NEW, "update", f"{IMAGE}@{NEW}")
    assert f"(was {OLD})" in pin.why
    with pytest.raises(PinStop, match=f"serves {NEW} for {IMAGE}, not that"):
        image_pin.decide(src(recorded=f"{IMAGE}@{OLD}", accept=MINE), lookup(NEW))
    with pytest.raises(PinStop, match="cannot confirm"):
        image_pin.decide(moved, failing("unreachable"))
    same = image_pin.decide(src(recorded=f"{IMAGE}@{NEW}", accept=NEW), lookup(NEW))
    assert (same.action, same.record) == ("found", None)


def test_the_operators_digest_wins_and_the_registry_is_not_asked() -> None:
    asked: list[int] = []
    pin = image_pin.decide(src(operator=MINE, recorded=f"{IMAGE}@{OLD}"), lookup(NEW, asked))
    assert (pin.digest, pin.action, pin.record, asked) == (MINE, "found", None, [])
    assert "from iroh_relay_digest in config.yaml; Docker Hub not asked" in pin.why
    kust = image_pin.decide(src(kustomization=MINE), lookup(NEW, asked))
    assert (kust.digest, asked) == (MINE, []) and "from infra/kubernetes" in kust.why
    both = image_pin.decide(src(operator=OLD, kustomization=MINE), lookup(NEW, asked))
    assert both.digest == OLD  # config.yaml over the repository's
    for pinned in (src(operator=MINE, accept=NEW), src(kustomization=MINE, accept=NEW)):
        with pytest.raises(PinStop, match="has no effect"):
            image_pin.decide(pinned, lookup(NEW))


@pytest.mark.parametrize(("kind", "hint"), [
    ("unreachable", "run again when it answers"),
    ("rate-limited", "limits anonymous requests per address"),
    ("not-found", "check the tag in infra/kubernetes/apps/iroh-relay/kustomization.yaml"),
    ("refused", "could not read the digest"),
    ("bad-answer", "could not read the digest"),
])
def test_no_answer_on_first_use_stops_and_names_the_fix(kind: str, hint: str) -> None:
    with pytest.raises(PinStop) as info:
        image_pin.decide(BASE, failing(kind))
    text = str(info.value)
    assert hint in text and "only deployed pinned by digest" in text
    assert 'iroh_relay_digest: "sha256:..." in config.yaml' in text
    assert f"docker buildx imagetools inspect {IMAGE}" in text


def test_no_answer_later_deploys_the_recorded_pin_unchecked() -> None:
    pin = image_pin.decide(src(recorded=f"{IMAGE}@{OLD}"), failing("unreachable"))
    assert (pin.digest, pin.action, pin.record) == (OLD, "found", None)
    assert "NOT re-checked: registry-1.docker.io unreachable" in pin.why


def test_a_record_for_another_release_is_a_first_use_of_the_new_one() -> None:
    pin = image_pin.decide(src(recorded=f"n0computer/iroh-relay:v0.95.0@{OLD}"), lookup(NEW))
    assert (pin.digest, pin.action, pin.record) == (NEW, "pin", f"{IMAGE}@{NEW}")
    assert f"the old pin was n0computer/iroh-relay:v0.95.0@{OLD}" in pin.why
    with pytest.raises(PinStop, match="could not read"):  # and needs the registry for it
        image_pin.decide(src(recorded=f"n0computer/iroh-relay:v0.95.0@{OLD}"),
                         failing("unreachable"))
