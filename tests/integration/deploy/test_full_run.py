"""A full run from an empty OVH account, against every double; then a second run."""

from __future__ import annotations

from tests.integration.deploy.conftest import World


async def test_full_run_then_nothing_to_change(world: World) -> None:
    first = await world.deploy("--yes")
    assert first.rc == 0, first.text
    print(first.text)
