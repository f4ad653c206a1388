"""Fixtures of the listener's tests: a fake upstream and the service as users run it, with
two proxy paths already in its cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.doubles.fake_upstream import FakeUpstream
from tests.integration.http.rawhttp import WARM, WARM2, Conn, req
from tests.tools import ServiceProcess, start_service


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    fake.body_padding = 30 * 1024  # bodies large enough to be gzipped, like P1's
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def svc(upstream: FakeUpstream,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(tmp_path_factory.mktemp("listener"),
                        {**upstream.env(), "TURN_ENABLED": "false"})
    for path in (WARM, WARM2):
        with Conn(svc.port) as c:
            c.send(req(path))
            assert c.response().get("x-cache") == "MISS"
    yield svc
    svc.stop()
    assert "Traceback" not in svc.log() and "Exception in ASGI" not in svc.log(), svc.log()
