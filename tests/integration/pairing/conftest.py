from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pairing.helpers import Relay
from tests.tools import ServiceProcess, start_service

TURN_SECRET = "test-turn-secret-not-for-production"


@pytest.fixture
def relay_proc(tmp_path: Path) -> Iterator[ServiceProcess]:
    svc = start_service(tmp_path, {"TURN_SECRET": TURN_SECRET,
                                   "RELAY_TOKEN_SECRET": "test-token-secret"})
    yield svc
    svc.stop()


@pytest.fixture
def relay(relay_proc: ServiceProcess) -> Relay:
    return Relay(relay_proc.url)
