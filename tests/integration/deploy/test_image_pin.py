"""The iroh relay pinned by digest: the real CLI reads the tag's digest from a fake Docker
Hub on loopback (401 challenge, token, HEAD), records it in config.yaml on first use and
deploys name:tag@digest; a moved tag stops the run until the operator confirms it."""

from __future__ import annotations

from tests.integration.deploy.conftest import IROH_IMAGE, IROH_TAG, World
from tests.tools import free_port

IMAGE = f"{IROH_IMAGE}:{IROH_TAG}"
MINE = "sha256:" + "5e" * 32


def flat(text: str) -> str:
    """Output with the terminal's line wrapping undone."""
    return " ".join(text.split())


def _deployed(world: World) -> str | None:
    dep = world.kube.get("apps/v1", "deployments", "iroh-relay", "iroh-relay")
    return None if dep is None else str(dep["spec"]["template"]["spec"]["containers"][0][
        "image"])


def _mutations(world: World, since: int) -> list[str]:
    return [f"{c.method} {c.path}" for c in world.kube.calls[since:] if c.method != "GET"]


async def test_first_run_pins_the_digest_and_later_runs_keep_it(world: World) -> None:
    world.write_config(iroh_relay_enabled=True)
    digest = world.registry.repos[IROH_IMAGE][IROH_TAG].digest
    first = await world.deploy("--yes")
    assert first.rc == 0, first.text
    assert _deployed(world) == f"{IMAGE}@{digest}"
    assert world.saved()["iroh_relay_pinned_image"] == f"{IMAGE}@{digest}"
    assert f"+ pin iroh relay image {IMAGE} — first use: Docker Hub serves {digest} " \
           f"(multi-platform index); recorded as iroh_relay_pinned_image in config.yaml" \
        in flat(first.out)
    # as Docker Hub wants it: challenge, anonymous token, HEADs (which count no pull)
    assert [c.method for c in world.registry.manifest_requests()] == ["HEAD", "HEAD"]
    assert any(c.path.startswith("/token?") for c in world.registry.calls)

    text, n_kube = world.config_path.read_bytes(), len(world.kube.calls)
    second = await world.deploy()
    assert second.rc == 0, second.text
    assert "Done: 0 changes" in second.out
    assert f"= iroh relay image {IMAGE} — {digest}, pinned on first use; Docker Hub still " \
           f"serves it" in flat(second.out)
    assert world.config_path.read_bytes() == text and _mutations(world, n_kube) == []
    assert world.registry.writes() == []

    world.registry.down = True  # Docker Hub in trouble: the pin is what runs, still deployed
    third = await world.deploy("--phase", "app")
    assert third.rc == 0, third.text
    assert f"{digest}, pinned on first use; NOT re-checked: 127.0.0.1:" in flat(third.out)
    assert "is unavailable (503), 4 times in a row" in flat(third.out)
    assert "Done: 0 changes" in third.out
    assert world.config_path.read_bytes() == text


async def test_a_moved_tag_stops_the_run_until_the_new_digest_is_confirmed(world: World
                                                                          ) -> None:
    world.write_config(iroh_relay_enabled=True)
    old = world.registry.repos[IROH_IMAGE][IROH_TAG].digest
    assert (await world.deploy("--yes")).rc == 0
    new = world.registry.tag(IROH_IMAGE, IROH_TAG, seed="rebuilt").digest
    text, n_kube = world.config_path.read_bytes(), len(world.kube.calls)

    for args in (("--phase", "app"), ("--dry-run",)):
        stopped = await world.deploy(*args)
        assert stopped.rc == 1, stopped.text
        assert f"{IMAGE} has moved: Docker Hub now serves {new}" in flat(stopped.err)
        assert f"pinned {old} on first use" in flat(stopped.err)
        assert f"./infra/deploy --accept-iroh-relay-digest {new}" in flat(stopped.err)
    assert _deployed(world) == f"{IMAGE}@{old}" and _mutations(world, n_kube) == []
    assert world.config_path.read_bytes() == text

    wrong = await world.deploy("--phase", "app", "--accept-iroh-relay-digest", MINE)
    assert wrong.rc == 1 and f"serves {new} for {IMAGE}, not that" in flat(wrong.err), wrong.text
    dry = await world.deploy("--dry-run", "--accept-iroh-relay-digest", new)
    assert dry.rc == 0, dry.text
    assert f"would update iroh relay image {IMAGE} — confirmed with --accept-iroh-relay-digest: " \
           f"Docker Hub serves {new} (was {old})" in flat(dry.out)
    assert world.config_path.read_bytes() == text and _deployed(world) == f"{IMAGE}@{old}"

    confirmed = await world.deploy("--phase", "app", "--accept-iroh-relay-digest", new)
    assert confirmed.rc == 0, confirmed.text
    assert world.saved()["iroh_relay_pinned_image"] == f"{IMAGE}@{new}"
    assert _deployed(world) == f"{IMAGE}@{new}"
    assert (await world.deploy("--phase", "app")).out.count("Done: 0 changes") == 1


async def test_unreachable_registry_stops_the_first_run_and_names_the_fix(world: World
                                                                         ) -> None:
    world.write_config(iroh_relay_enabled=True)
    world.advanced(image_registry_url=f"http://127.0.0.1:{free_port()}")  # nothing there
    result = await world.deploy("--yes")
    assert result.rc == 1, result.text
    assert f"could not read the digest of {IMAGE} from Docker Hub: 127.0.0.1:" in flat(result.err)
    assert "unreachable ([Errno 111] Connection refused)" in flat(result.err)
    assert "only deployed pinned by digest" in flat(result.err)
    assert 'iroh_relay_digest: "sha256:..." in config.yaml' in flat(result.err)
    assert _deployed(world) is None  # never a deployment by tag alone
    assert "iroh_relay_pinned_image" not in world.saved()

    world.write_config(**(world.saved() | {"iroh_relay_digest": MINE}))  # the fix
    fixed = await world.deploy("--phase", "app")
    assert fixed.rc == 0, fixed.text
    assert _deployed(world) == f"{IMAGE}@{MINE}"
    assert f"= iroh relay image {IMAGE} — {MINE} from iroh_relay_digest in config.yaml; " \
           f"Docker Hub not asked" in flat(fixed.out)
    assert "iroh_relay_pinned_image" not in world.saved()


async def test_dry_run_reads_the_registry_and_records_nothing(world: World) -> None:
    world.write_config(iroh_relay_enabled=True)
    digest = world.registry.repos[IROH_IMAGE][IROH_TAG].digest
    text = world.config_path.read_bytes()
    dry = await world.deploy("--dry-run", "--phase", "app")
    assert dry.rc == 0, dry.text
    assert f"would pin iroh relay image {IMAGE} — first use: Docker Hub serves {digest}" \
        in flat(dry.out)
    assert world.config_path.read_bytes() == text and world.kube.calls == []
    assert world.registry.writes() == []


async def test_rate_limits_and_unknown_tags_on_first_use(world: World) -> None:
    world.write_config(iroh_relay_enabled=True)
    world.registry.rate_limited, world.registry.retry_after = 2, "0"
    waited = await world.deploy("--dry-run", "--phase", "app")
    assert waited.rc == 0 and "would pin iroh relay image" in waited.out, waited.text
    world.registry.rate_limited, world.registry.retry_after = 1, "21600"
    limited = await world.deploy("--dry-run", "--phase", "app")
    assert limited.rc == 1, limited.text
    assert "rate-limits this machine (429) and asks to wait 21600s" in flat(limited.err)
    assert "limits anonymous requests per address: wait, then run again" in flat(limited.err)
    world.registry.rate_limited = 0
    del world.registry.repos[IROH_IMAGE][IROH_TAG]
    unknown = await world.deploy("--dry-run", "--phase", "app")
    assert unknown.rc == 1 and "no such tag (404)" in flat(unknown.err), unknown.text
    assert "check the tag in infra/kubernetes/apps/iroh-relay/kustomization.yaml" \
        in flat(unknown.err)


async def test_bad_digests_are_refused_before_any_remote_call(world: World) -> None:
    world.write_config(iroh_relay_enabled=True, iroh_relay_digest="sha256:abc")
    bad = await world.deploy("--dry-run")
    assert bad.rc == 2 and "iroh_relay_digest: 'sha256:abc' is not an image digest" in bad.err
    world.write_config(iroh_relay_digest="")
    flag = await world.deploy("--accept-iroh-relay-digest", "latest")
    assert flag.rc == 2 and "--accept-iroh-relay-digest: not a sha256 digest" in flag.err
    world.write_config(iroh_relay_enabled=False)
    off = await world.deploy("--accept-iroh-relay-digest", MINE)
    assert off.rc == 2 and "iroh_relay_enabled is false" in off.err
    assert world.registry.calls == [] and world.kube.calls == [] and world.ovh.calls == []
